/**
 * Signs access tokens with the key that is active now. The private key was imported once when the keyset
 * loaded; signing runs through WebCrypto (jose), off the event loop. The protected header of each key is
 * encoded once; the payload is encoded per token (it differs every time).
 */
import { CompactSign } from 'jose'
import type { LoadedKey } from '../keys/keyset.js'
import type { AccessTokenClaims } from './claims.js'

export const TOKEN_TYPE = 'at+jwt'

export type ProtectedHeader = {
  readonly alg: 'RS256'
  readonly typ: typeof TOKEN_TYPE
  readonly kid: string
  readonly [parameter: string]: unknown
}

const headers = new WeakMap<LoadedKey, ProtectedHeader>()

function headerOf(key: LoadedKey): ProtectedHeader {
  let header = headers.get(key)
  if (header === undefined) {
    header = Object.freeze({ alg: 'RS256', typ: TOKEN_TYPE, kid: key.kid })
    headers.set(key, header)
  }
  return header
}

const encoder = new TextEncoder()

export async function signAccessToken(claims: AccessTokenClaims, key: LoadedKey): Promise<string> {
  // CompactSign, not SignJWT: the claims are built and checked by buildClaims already, so the JWT
  // builder's per-call copying and re-validation is pure overhead on the hot path.
  return new CompactSign(encoder.encode(JSON.stringify(claims))).setProtectedHeader(headerOf(key)).sign(key.privateKey)
}
