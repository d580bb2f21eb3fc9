/**
 * Key material: generation, PKCS#8 PEM in and out (optionally passphrase-encrypted), RFC 7638 kids and the
 * public JWK projection. The JWK that leaves this module is built from an allowlist of public members.
 */
import { createPrivateKey, createPublicKey, generateKeyPair, type KeyObject } from 'node:crypto'
import { promisify } from 'node:util'
import { calculateJwkThumbprint, importJWK, type CryptoKey, type JWK } from 'jose'
import { AuthzError } from '../errors.js'

const generateKeyPairAsync = promisify(generateKeyPair)

export const MIN_RSA_BITS = 2048

/** The members a published key may have; nothing else is ever copied into the JWKS. */
export interface PublicJwk {
  readonly kty: 'RSA'
  readonly n: string
  readonly e: string
  readonly kid: string
  readonly alg: 'RS256'
  readonly use: 'sig'
}

/** A fresh RSA private key for RS256. */
export async function generateRsaKey(bits = MIN_RSA_BITS): Promise<KeyObject> {
  const { privateKey } = await generateKeyPairAsync('rsa', { modulusLength: bits, publicExponent: 0x10001 })
  return privateKey
}

/** RFC 7638 thumbprint (SHA-256, base64url) of the key's public part: the kid every replica agrees on. */
export async function kidOf(key: KeyObject): Promise<string> {
  const jwk = createPublicKey(key).export({ format: 'jwk' }) as JWK
  return calculateJwkThumbprint({ kty: 'RSA', n: jwk.n as string, e: jwk.e as string }, 'sha256')
}

/** The public JWK of a key, by allowlist. */
export function publicJwkOf(key: KeyObject, kid: string): PublicJwk {
  const jwk = createPublicKey(key).export({ format: 'jwk' }) as JWK
  return Object.freeze({ kty: 'RSA', n: jwk.n as string, e: jwk.e as string, kid, alg: 'RS256', use: 'sig' })
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

/** Reads a PKCS#8 PEM private key and checks it is RSA of at least 2048 bits. */
export function fromPkcs8Pem(pem: string, passphrase: string | undefined, where: string): KeyObject {
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
  if (key.asymmetricKeyType !== 'rsa') {
    throw new AuthzError('ERR_KEYSET_INVALID', `${where}: must be an RSA key of at least ${MIN_RSA_BITS} bits`, { reason: 'key_type' })
  }
  if ((key.asymmetricKeyDetails?.modulusLength ?? 0) < MIN_RSA_BITS) {
    throw new AuthzError('ERR_KEYSET_INVALID', `${where}: must be an RSA key of at least ${MIN_RSA_BITS} bits`, { reason: 'key_too_weak' })
  }
  return key
}

/** Imports a private key once, as a non-extractable WebCrypto key for RS256 signing. */
export async function toSigningKey(key: KeyObject): Promise<CryptoKey> {
  const jwk = key.export({ format: 'jwk' }) as JWK
  return (await importJWK({ ...jwk, alg: 'RS256' }, 'RS256', { extractable: false })) as CryptoKey
}
