/**
 * Signs access tokens (JWS compact serialization, RFC 7515 §7.1) with the key that is active now, in the
 * key's own algorithm (RS256 or ES256). The protected header of each key is encoded once; the payload is
 * encoded per token; the signature comes from the key's signer (node:crypto on the thread pool for a file
 * key, the token for a PKCS#11 key), never from the event loop.
 */
import type { LoadedKey } from '../keys/keyset.js'
import type { Alg } from '../keys/material.js'
import type { AccessTokenClaims } from './claims.js'

export const TOKEN_TYPE = 'at+jwt'

export type ProtectedHeader = {
  readonly alg: Alg
  readonly typ: typeof TOKEN_TYPE
  readonly kid: string
}

const encodedHeaders = new WeakMap<LoadedKey, string>()

const base64url = (bytes: Uint8Array | string): string => Buffer.from(bytes).toString('base64url')

function encodedHeaderOf(key: LoadedKey): string {
  let encoded = encodedHeaders.get(key)
  if (encoded === undefined) {
    const header: ProtectedHeader = { alg: key.alg, typ: TOKEN_TYPE, kid: key.kid }
    encoded = base64url(JSON.stringify(header))
    encodedHeaders.set(key, encoded)
  }
  return encoded
}

export async function signAccessToken(claims: AccessTokenClaims, key: LoadedKey): Promise<string> {
  // The claims are built and checked by buildClaims: no JWT builder's per-call copying and re-validation.
  const signingInput = `${encodedHeaderOf(key)}.${base64url(JSON.stringify(claims))}`
  const signature = await key.signer.sign(Buffer.from(signingInput, 'ascii'))
  return `${signingInput}.${base64url(signature)}`
}
