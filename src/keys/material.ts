/**
 * Key material: generation, PKCS#8 PEM in and out (optionally passphrase-encrypted), RFC 7638 kids and the
 * public JWK projection, for both algorithms: RS256 (RSA ≥ 2048) and ES256 (P-256). The JWK that leaves
 * this module is built from an allowlist of public members.
 */
import { createPrivateKey, createPublicKey, generateKeyPair, type KeyObject } from 'node:crypto'
import { promisify } from 'node:util'
import { calculateJwkThumbprint, type JWK } from 'jose'
import { AuthzError } from '../errors.js'

const generateKeyPairAsync = promisify(generateKeyPair)

export const MIN_RSA_BITS = 2048

/** The signing algorithms authz issues with: RS256 by default, ES256 by choice. Never HS*, never none. */
export const ALGORITHMS = ['RS256', 'ES256'] as const
export type Alg = (typeof ALGORITHMS)[number]
export const DEFAULT_ALG: Alg = 'RS256'

/** The members a published key may have; nothing else is ever copied into the JWKS. */
export type PublicJwk =
  | { readonly kty: 'RSA'; readonly n: string; readonly e: string; readonly kid: string; readonly alg: 'RS256'; readonly use: 'sig' }
  | { readonly kty: 'EC'; readonly crv: 'P-256'; readonly x: string; readonly y: string; readonly kid: string; readonly alg: 'ES256'; readonly use: 'sig' }

/** A fresh private key for `alg`: RSA (`bits`, default 2048) for RS256, P-256 for ES256. */
export async function generateKey(alg: Alg = DEFAULT_ALG, bits = MIN_RSA_BITS): Promise<KeyObject> {
  if (alg === 'ES256') return (await generateKeyPairAsync('ec', { namedCurve: 'P-256' })).privateKey
  return (await generateKeyPairAsync('rsa', { modulusLength: bits, publicExponent: 0x10001 })).privateKey
}

/** A fresh RSA private key for RS256. */
export async function generateRsaKey(bits = MIN_RSA_BITS): Promise<KeyObject> {
  return generateKey('RS256', bits)
}

/** The public members of a key (RSA: n, e; EC: crv, x, y), from a private or public key. */
function publicMembers(key: KeyObject): JWK {
  return createPublicKey(key).export({ format: 'jwk' }) as JWK
}

/** RFC 7638 thumbprint (SHA-256, base64url) of a public JWK: the kid every replica agrees on. */
export async function thumbprintOfJwk(jwk: JWK): Promise<string> {
  return calculateJwkThumbprint(jwk, 'sha256')
}

/** RFC 7638 thumbprint of the key's public part. */
export async function kidOf(key: KeyObject): Promise<string> {
  return thumbprintOfJwk(publicMembers(key))
}

/** The public JWK for `alg` from public members, by allowlist. */
export function publicJwkFrom(members: JWK, kid: string, alg: Alg): PublicJwk {
  if (alg === 'ES256') return Object.freeze({ kty: 'EC', crv: 'P-256', x: members.x as string, y: members.y as string, kid, alg, use: 'sig' })
  return Object.freeze({ kty: 'RSA', n: members.n as string, e: members.e as string, kid, alg, use: 'sig' })
}

/** The public JWK of a key, by allowlist. */
export function publicJwkOf(key: KeyObject, kid: string, alg: Alg = DEFAULT_ALG): PublicJwk {
  return publicJwkFrom(publicMembers(key), kid, alg)
}

/** Throws unless `key` is usable for `alg`: RSA ≥ 2048 bits for RS256, P-256 for ES256. */
export function checkKeyFor(key: KeyObject, alg: Alg, where: string): void {
  const ok = alg === 'ES256' ? key.asymmetricKeyType === 'ec' && key.asymmetricKeyDetails?.namedCurve === 'prime256v1' : key.asymmetricKeyType === 'rsa'
  const wanted = alg === 'ES256' ? 'a P-256 EC key (ES256)' : `an RSA key of at least ${MIN_RSA_BITS} bits (RS256)`
  if (!ok) throw new AuthzError('ERR_KEYSET_INVALID', `${where}: must be ${wanted}`, { reason: 'key_type' })
  if (alg === 'RS256' && (key.asymmetricKeyDetails?.modulusLength ?? 0) < MIN_RSA_BITS) {
    throw new AuthzError('ERR_KEYSET_INVALID', `${where}: must be ${wanted}`, { reason: 'key_too_weak' })
  }
}

/** PKCS#8 PEM, encrypted with AES-256-CBC when a passphrase is given. */
export function toPkcs8Pem(key: KeyObject, passphrase?: string): string {
  if (passphrase === undefined) return key.export({ type: 'pkcs8', format: 'pem' }) as string
  return key.export({ type: 'pkcs8', format: 'pem', cipher: 'aes-256-cbc', passphrase }) as string
}

/** The opening line of a PEM block with this label (RFC 7468), e.g. pemHeader('PRIVATE KEY'). */
export function pemHeader(label: string): string {
  return `-----BEGIN ${label}-----`
}

/** PEM labels of PKCS#8 private keys: plain and passphrase-encrypted. */
export const PKCS8_LABEL = 'PRIVATE KEY'
export const PKCS8_ENCRYPTED_LABEL = `ENCRYPTED ${PKCS8_LABEL}`

/** Reads a PKCS#8 PEM private key and checks it is usable for `alg`. */
export function fromPkcs8Pem(pem: string, passphrase: string | undefined, where: string, alg: Alg = DEFAULT_ALG): KeyObject {
  const encrypted = pem.includes(pemHeader(PKCS8_ENCRYPTED_LABEL))
  if (!encrypted && !pem.includes(pemHeader(PKCS8_LABEL))) {
    throw new AuthzError('ERR_KEYSET_INVALID', `${where}: not a PKCS#8 PEM private key`, { reason: 'not_a_key' })
  }
  if (encrypted && passphrase === undefined) {
    throw new AuthzError('ERR_KEYSET_INVALID', `${where}: key is encrypted and AUTHZ_KEY_PASSPHRASE is not set`, { reason: 'passphrase_missing' })
  }
  let key: KeyObject
  try {
    key = createPrivateKey({ key: pem, format: 'pem', ...(passphrase === undefined ? {} : { passphrase }) })
  } catch {
    // Never echo the underlying error: OpenSSL messages may quote key bytes.
    throw new AuthzError('ERR_KEYSET_INVALID', `${where}: unreadable private key (corrupt, or wrong passphrase)`, {
      reason: encrypted ? 'passphrase_wrong' : 'not_a_key',
    })
  }
  checkKeyFor(key, alg, where)
  return key
}
