/**
 * The TypeScript side of conformance/: reads the vectors, and mints the tokens they describe — mutations of
 * a good token, signed with keys made here, at test time (the Go kit's internal/conformance does the same
 * in Go). See conformance/README.md for the mutation language.
 */
import { createHmac, generateKeyPairSync, sign, constants, type KeyObject } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'

export const CONFORMANCE_DIR = join(import.meta.dirname, '..', '..', 'conformance')

export function readVectors<T>(name: string): T {
  return JSON.parse(readFileSync(join(CONFORMANCE_DIR, name), 'utf8')) as T
}

/** An expected refusal: the code, and `sub`/`aud` exactly when the refusal must report them. */
export interface ExpectedRefusal {
  readonly code: string
  readonly sub?: string
  readonly aud?: string
}

export interface TokenCase {
  readonly name: string
  readonly sign?: string
  readonly header?: Record<string, unknown>
  readonly claims?: Record<string, unknown>
  readonly rawHeader?: string
  readonly rawPayload?: string
  readonly tamper?: string
  readonly peer?: 'caller' | 'other' | 'none'
  readonly verifier?: { algorithms?: string[]; leeway?: number; maxLifetime?: number; allowNoPeer?: boolean }
  readonly expect: 'accepted' | ExpectedRefusal
}

export interface TokenVectors {
  readonly verifier: { issuer: string; audience: string; algorithms: string[]; leeway: number; allowNoPeer: boolean }
  readonly token: { header: Record<string, unknown>; claims: Record<string, unknown> }
  readonly cases: TokenCase[]
}

export interface DecisionCase {
  readonly http?: { method: string; route: string | null; path: string }
  readonly grpc?: string
  readonly caller: string
  readonly scopes: string[]
  readonly peer?: 'none'
  readonly token?: 'missing' | 'empty' | 'twice' | 'other-certificate' | 'expired' | 'forged'
  readonly note?: string
  readonly expect: 'allow' | { status: number; reason: string; sub?: string; aud?: string }
}

export interface PolicyVector {
  readonly name: string
  readonly document?: unknown
  readonly text?: string
  readonly expect: { valid: true } | { code: string; entry: string }
  readonly decisions?: DecisionCase[]
}

const b64u = (data: string | Buffer): string => Buffer.from(data).toString('base64url')

/** The keys of a run: the verifier trusts rsa-1 and ec-1; the foreign ones sign forgeries. */
export interface ConformanceKeys {
  readonly rsa: KeyObject
  readonly ec: KeyObject
  readonly foreignRsa: KeyObject
  readonly foreignEc: KeyObject
  /** rsa-1's public key as SPKI PEM: the HMAC secret of the classic algorithm-confusion forgery. */
  readonly rsaPublicPem: string
  /** The static key set a verifier is given: rsa-1 (RS256) and ec-1 (ES256). */
  readonly jwks: string
}

export function conformanceKeys(): ConformanceKeys {
  const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 })
  const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' })
  const jwk = (key: KeyObject, kid: string, alg: string) => ({ ...key.export({ format: 'jwk' }), kid, alg, use: 'sig' })
  return {
    rsa: rsa.privateKey,
    ec: ec.privateKey,
    foreignRsa: generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey,
    foreignEc: generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey,
    rsaPublicPem: rsa.publicKey.export({ type: 'spki', format: 'pem' }) as string,
    jwks: JSON.stringify({ keys: [jwk(rsa.publicKey, 'rsa-1', 'RS256'), jwk(ec.publicKey, 'ec-1', 'ES256')] }),
  }
}

type Signer = (input: string) => Buffer

/** How each `sign` of the vectors signs: the header's alg and kid, and the signature. */
function signerOf(keys: ConformanceKeys, kind: string): { alg: string; kid: string; sign: Signer } {
  const rs = (key: KeyObject, hash = 'sha256'): Signer => (input) => sign(hash, Buffer.from(input), key)
  const es = (key: KeyObject): Signer => (input) => sign('sha256', Buffer.from(input), { key, dsaEncoding: 'ieee-p1363' })
  const table: Record<string, { alg: string; kid: string; sign: Signer }> = {
    rs256: { alg: 'RS256', kid: 'rsa-1', sign: rs(keys.rsa) },
    es256: { alg: 'ES256', kid: 'ec-1', sign: es(keys.ec) },
    'rs256-unknown-kid': { alg: 'RS256', kid: 'unknown-1', sign: rs(keys.foreignRsa) },
    'rs256-foreign-key': { alg: 'RS256', kid: 'rsa-1', sign: rs(keys.foreignRsa) },
    'es256-foreign-key': { alg: 'ES256', kid: 'ec-1', sign: es(keys.foreignEc) },
    'es256-under-rsa-kid': { alg: 'ES256', kid: 'rsa-1', sign: es(keys.ec) },
    'rs256-under-ec-kid': { alg: 'RS256', kid: 'ec-1', sign: rs(keys.rsa) },
    none: { alg: 'none', kid: 'rsa-1', sign: () => Buffer.alloc(0) },
    'none-with-signature': { alg: 'none', kid: 'rsa-1', sign: rs(keys.rsa) },
    'hs256-public-key': { alg: 'HS256', kid: 'rsa-1', sign: (input) => createHmac('sha256', keys.rsaPublicPem).update(input).digest() },
    rs384: { alg: 'RS384', kid: 'rsa-1', sign: rs(keys.rsa, 'sha384') },
    rs512: { alg: 'RS512', kid: 'rsa-1', sign: rs(keys.rsa, 'sha512') },
    ps256: {
      alg: 'PS256',
      kid: 'rsa-1',
      sign: (input) => sign('sha256', Buffer.from(input), { key: keys.rsa, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 }),
    },
  }
  const signer = table[kind]
  if (signer === undefined) throw new Error(`conformance: unknown sign ${kind}`)
  return signer
}

/** A value of the vectors: `{now: n}` is now + n seconds, `{thumbprint: who}` a certificate thumbprint. */
function resolve(value: unknown, now: number, thumbprints: Record<string, string>): unknown {
  if (Array.isArray(value)) return value.map((v) => resolve(v, now, thumbprints))
  if (typeof value !== 'object' || value === null) return value
  const entries = Object.entries(value)
  if (entries.length === 1 && entries[0]?.[0] === 'now') return now + (entries[0][1] as number)
  if (entries.length === 1 && entries[0]?.[0] === 'thumbprint') return thumbprints[entries[0][1] as string]
  return Object.fromEntries(entries.map(([k, v]) => [k, resolve(v, now, thumbprints)]))
}

/** Applies set/delete mutations (null deletes) to a copy of `base`. */
function mutate(base: Record<string, unknown>, changes: Record<string, unknown> | undefined): Record<string, unknown> {
  const out = { ...base }
  for (const [k, v] of Object.entries(changes ?? {})) {
    if (v === null) delete out[k]
    else out[k] = v
  }
  return out
}

/** The token a case describes, at `now` (seconds), bound by default to the `caller` thumbprint. */
export function mintCase(vectors: TokenVectors, c: TokenCase, keys: ConformanceKeys, now: number, thumbprints: Record<string, string>): string {
  const signer = signerOf(keys, c.sign ?? 'rs256')
  const header = resolve(mutate({ ...vectors.token.header, alg: signer.alg, kid: signer.kid }, c.header), now, thumbprints)
  const claims = resolve(mutate(vectors.token.claims, c.claims), now, thumbprints)
  const input = `${b64u(c.rawHeader ?? JSON.stringify(header))}.${b64u(c.rawPayload ?? JSON.stringify(claims))}`
  const token = `${input}.${b64u(signer.sign(input))}`
  return tamper(token, c.tamper)
}

function tamper(token: string, how: string | undefined): string {
  const [h = '', p = '', s = ''] = token.split('.')
  switch (how) {
    case undefined:
      return token
    case 'empty':
      return ''
    case 'not-a-jwt':
      return 'not.a.jwt'
    case 'two-segments':
      return `${h}.${p}`
    case 'four-segments':
      return `${token}.x`
    case 'padded-header':
      return `${h}=.${p}.${s}`
    case 'newline-in-signature':
      return `${h}.${p}.${s.slice(0, 10)}\n${s.slice(10)}`
    case 'trailing-space':
      return `${token} `
    case 'plus-in-signature':
      return `${h}.${p}.${s.slice(0, -1)}+`
    case 'oversize':
      return token + 'A'.repeat(8193 - token.length)
    case 'payload-sub': {
      const claims = JSON.parse(Buffer.from(p, 'base64url').toString()) as Record<string, unknown>
      return `${h}.${b64u(JSON.stringify({ ...claims, sub: 'payment-service' }))}.${s}`
    }
    case 'signature-bit': {
      const sig = Buffer.from(s, 'base64url')
      sig[0] = (sig[0] ?? 0) ^ 1
      return `${h}.${p}.${b64u(sig)}`
    }
    case 'signature-empty':
      return `${h}.${p}.`
    case 'noncanonical-signature': {
      // The last character's lowest bit lies past the signature's last byte: same bytes, another spelling.
      const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_'
      return `${h}.${p}.${s.slice(0, -1)}${alphabet[alphabet.indexOf(s.at(-1) ?? 'A') ^ 1]}`
    }
    default:
      throw new Error(`conformance: unknown tamper ${how}`)
  }
}
