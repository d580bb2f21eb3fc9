/**
 * What signs a JWS: the private key's own operation, whatever holds the key. A file key signs with
 * node:crypto on libuv's thread pool (never on the event loop); a PKCS#11 key signs inside its token. The
 * result is the JWS signature (RS256: RSASSA-PKCS1-v1_5 with SHA-256; ES256: r || s, 64 bytes).
 */
import { sign, type KeyObject } from 'node:crypto'
import type { Alg } from './material.js'

export interface KeySigner {
  /** Signs the JWS signing input (`base64url(header).base64url(payload)`). */
  sign(input: Uint8Array): Promise<Uint8Array>
}

export function fileSigner(key: KeyObject, alg: Alg): KeySigner {
  // JWS ECDSA signatures are the raw r || s (RFC 7518 §3.4), not DER.
  const signingKey = alg === 'ES256' ? { key, dsaEncoding: 'ieee-p1363' as const } : key
  return {
    sign: (input) =>
      new Promise((resolve, reject) => {
        // With a callback, node:crypto signs on the thread pool.
        sign('sha256', input, signingKey, (err, signature) => (err === null ? resolve(signature) : reject(err)))
      }),
  }
}
