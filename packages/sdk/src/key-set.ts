/**
 * The public keys a verifier trusts, by kid, each with the one algorithm it verifies. The algorithm comes
 * from the key set (the JWK's `alg`, or derived from `kty`/`crv`), never from a token: a token whose header
 * names another algorithm than its key's is refused. Keys of algorithms the operator did not allow are
 * left out, never trusted.
 */
import { createPublicKey, X509Certificate } from 'node:crypto'
import { calculateJwkThumbprint, errors as joseErrors, importJWK, type JWK, type JWSHeaderParameters } from 'jose'
import { VerifyError } from './errors.js'

/** The signature algorithms a verifier can be told to accept. Nothing else (no HS*, no `none`). */
export type Algorithm = 'RS256' | 'ES256'
export const SUPPORTED_ALGORITHMS: readonly Algorithm[] = Object.freeze(['RS256', 'ES256'])

/** A JWKS document as fetched or given. */
export interface JsonWebKeySet {
  keys: JWK[]
}

/** An imported public key, ready for jose. */
export type VerificationKey = Awaited<ReturnType<typeof importJWK>>

interface TrustedKey {
  readonly alg: Algorithm
  readonly key: VerificationKey
}

/** An immutable set of trusted keys. */
export class KeySet {
  readonly #keys: ReadonlyMap<string, TrustedKey>
  /** `kid:alg` of every key, sorted: two sets with the same fingerprint trust the same keys. */
  readonly fingerprint: string

  private constructor(keys: Map<string, TrustedKey>) {
    this.#keys = keys
    this.fingerprint = [...keys].map(([kid, k]) => `${kid}:${k.alg}`).sort().join(' ')
  }

  get kids(): readonly string[] {
    return [...this.#keys.keys()]
  }

  /** The key for a token's protected header (for jose's jwtVerify). */
  keyFor(header: JWSHeaderParameters): VerificationKey {
    const entry = typeof header.kid === 'string' ? this.#keys.get(header.kid) : undefined
    if (entry === undefined) throw new joseErrors.JWKSNoMatchingKey()
    if (header.alg !== entry.alg) throw new VerifyError('ERR_TOKEN_ALG', `the token's alg is not its key's (${entry.alg})`)
    return entry.key
  }

  /** The usable keys of a JWKS (see `signingKeys`), imported once. */
  static async fromJwks(jwks: JsonWebKeySet, allowed: readonly Algorithm[]): Promise<KeySet> {
    const keys = new Map<string, TrustedKey>()
    for (const jwk of signingKeys(jwks.keys, allowed)) {
      try {
        keys.set(jwk.kid, { alg: jwk.alg, key: await importJWK(jwk, jwk.alg) })
      } catch {
        // a malformed key: left out
      }
    }
    return new KeySet(keys)
  }

  /**
   * A static key set: JWKS JSON text, a JWKS object, or one or more PEM public keys (SPKI). PEM keys get
   * their RFC 7638 thumbprint as kid, which is how authz names its keys. Throws ERR_JWKS_INVALID when
   * nothing usable is found, or when the text holds private key material.
   */
  static async fromStatic(source: string | JsonWebKeySet, allowed: readonly Algorithm[]): Promise<KeySet> {
    let jwks: JsonWebKeySet
    if (typeof source !== 'string') jwks = source
    else if (source.trimStart().startsWith('{')) {
      try {
        jwks = JSON.parse(source) as JsonWebKeySet
      } catch {
        throw new VerifyError('ERR_JWKS_INVALID', 'the static key set is neither a JWKS nor PEM')
      }
    } else jwks = { keys: await jwksFromPem(source) }
    if (!isJwks(jwks)) throw new VerifyError('ERR_JWKS_INVALID', 'the static key set is not a JWKS ({"keys": [...]})')
    if (jwks.keys.some(hasPrivateMember)) {
      throw new VerifyError('ERR_JWKS_INVALID', 'the static key set holds private key material: give the public keys only')
    }
    const set = await KeySet.fromJwks(jwks, allowed)
    if (set.kids.length === 0) throw new VerifyError('ERR_JWKS_INVALID', `the static key set holds no usable key for ${allowed.join(', ')}`)
    return set
  }
}

/** The JWK members of private or symmetric key material: a key that carries one is never trusted. */
const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'k']
const hasPrivateMember = (jwk: unknown): boolean => typeof jwk === 'object' && jwk !== null && PRIVATE_MEMBERS.some((m) => m in jwk)

/** RSA moduli a verifier trusts: 2048 to 8192 bits (the Go kit's bounds). */
const RSA_MIN_BYTES = 256
const RSA_MAX_BYTES = 1024

/**
 * The keys of a JWKS that may verify an authz token: with a kid, for signing (`use` sig or absent,
 * `key_ops` absent or holding `verify`), no private or symmetric material, of an allowed algorithm, RSA of
 * 2048 to 8192 bits. A kid that appears more than once is ambiguous: neither key is trusted (as the Go
 * kit). Each comes back as its public members, kid and algorithm only. Anything else is ignored, never
 * trusted.
 */
export function signingKeys(keys: readonly unknown[], allowed: readonly Algorithm[]): (JWK & { kid: string; alg: Algorithm })[] {
  const out = new Map<string, JWK & { kid: string; alg: Algorithm }>()
  const seen = new Map<string, number>()
  for (const jwk of keys as JWK[]) {
    if (typeof jwk !== 'object' || jwk === null || typeof jwk.kid !== 'string' || jwk.kid === '') continue
    seen.set(jwk.kid, (seen.get(jwk.kid) ?? 0) + 1)
    if ((jwk.use !== undefined && jwk.use !== 'sig') || (jwk.key_ops !== undefined && !(Array.isArray(jwk.key_ops) && jwk.key_ops.includes('verify')))) continue
    if (hasPrivateMember(jwk)) continue
    const alg = algorithmOf(jwk)
    if (alg === undefined || !allowed.includes(alg)) continue
    const modulus = alg === 'RS256' && typeof jwk.n === 'string' ? Buffer.from(jwk.n, 'base64url').length : 0
    if (alg === 'RS256' && !(modulus >= RSA_MIN_BYTES && modulus <= RSA_MAX_BYTES)) continue
    out.set(jwk.kid, { ...publicMembers(jwk), kid: jwk.kid, alg })
  }
  for (const [kid, n] of seen) if (n > 1) out.delete(kid) // two keys under one kid: trust neither
  return [...out.values()]
}

export function isJwks(value: unknown): value is JsonWebKeySet {
  return typeof value === 'object' && value !== null && Array.isArray((value as { keys?: unknown }).keys)
}

/** The algorithm a JWK verifies: its `alg`, or the one its type implies (RSA → RS256, EC P-256 → ES256). */
function algorithmOf(jwk: JWK): Algorithm | undefined {
  if (jwk.kty === 'RSA' && (jwk.alg === undefined || jwk.alg === 'RS256')) return 'RS256'
  if (jwk.kty === 'EC' && jwk.crv === 'P-256' && (jwk.alg === undefined || jwk.alg === 'ES256')) return 'ES256'
  return undefined
}

/** Copies the public members only (an allowlist, never a spread of the key object). */
function publicMembers(jwk: JWK): JWK {
  return jwk.kty === 'RSA' ? { kty: 'RSA', n: jwk.n, e: jwk.e } : { kty: 'EC', crv: jwk.crv, x: jwk.x, y: jwk.y }
}

// RFC 7468 labels; the markers are built from them so no PEM header literal sits in the sources. PEM
// blocks of public keys (SPKI, PKCS#1) and certificates are read, as the Go kit reads them.
const PEM_BLOCK = new RegExp(`-----BEGIN ((?:RSA )?PUBLIC KEY|CERTIFICATE)-----[\\s\\S]*?-----END \\1-----`, 'g')
const ANY_PRIVATE = /-----BEGIN [A-Z ]*PRIVATE KEY-----/

async function jwksFromPem(text: string): Promise<JWK[]> {
  if (ANY_PRIVATE.test(text)) throw new VerifyError('ERR_JWKS_INVALID', 'the static key set holds private key material: give the public keys only')
  const blocks = text.match(PEM_BLOCK) ?? []
  if (blocks.length === 0) throw new VerifyError('ERR_JWKS_INVALID', 'the static key set is neither a JWKS nor PEM public keys')
  const keys: JWK[] = []
  for (const block of blocks) {
    let jwk: JWK
    try {
      const key = block.includes('CERTIFICATE-----') ? new X509Certificate(block).publicKey : createPublicKey(block)
      jwk = key.export({ format: 'jwk' }) as JWK
    } catch {
      throw new VerifyError('ERR_JWKS_INVALID', 'a PEM public key in the static key set does not parse')
    }
    // A key given explicitly that cannot verify an authz token is a mistake to refuse, not to skip.
    const modulus = jwk.kty === 'RSA' && typeof jwk.n === 'string' ? Buffer.from(jwk.n, 'base64url').length : 0
    if (!(jwk.kty === 'EC' ? jwk.crv === 'P-256' : jwk.kty === 'RSA' && modulus >= RSA_MIN_BYTES && modulus <= RSA_MAX_BYTES)) {
      throw new VerifyError('ERR_JWKS_INVALID', 'a PEM key in the static key set is neither RSA of 2048 to 8192 bits nor EC P-256')
    }
    keys.push({ ...publicMembers(jwk), kid: await calculateJwkThumbprint(publicMembers(jwk), 'sha256') })
  }
  return keys
}
