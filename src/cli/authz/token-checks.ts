/**
 * The checks of `authz token inspect`, each with a sentence for the operator: the ones a verifier makes
 * (signature by the key its kid names, in that key's algorithm, iss, aud, exp, nbf, the cnf binding), plus what the keys
 * directory knows about a kid the keys do not hold (revoked, unpublished, pruned).
 */
import { readFile } from 'node:fs/promises'
import { compactVerify, importJWK, type JWK, type JWTPayload, type ProtectedHeaderParameters } from 'jose'
import { statusesOf, type KeysAdminOptions } from '../../keys/admin.js'
import { loadKeyset } from '../../keys/keyset.js'
import { keyStates, type KeyState } from '../../keys/lifecycle.js'
import { readManifest, type Manifest } from '../../keys/manifest.js'
import { signingKeys, thumbprintOf } from '@authz/sdk'
import { fetchJwks, type RemoteTls } from '../remote-jwks.js'
import { formatDuration, iso } from '../time.js'
import { ALGORITHMS } from '../../keys/material.js'

/** One check: passed, failed, or not applicable (null), and why. */
export interface Check {
  readonly ok: boolean | null
  readonly detail: string
}

export interface SignatureCheck extends Check {
  readonly status: 'valid' | 'invalid' | 'unverified'
  /** The jose error code of an invalid signature. */
  readonly code?: string
}

export interface KidCheck extends Check {
  readonly status: 'known' | 'unpublished' | 'revoked' | 'unknown'
  readonly kid?: string
  /** The key's lifecycle state in the keys directory, where it knows the key. */
  readonly state?: KeyState | undefined
  readonly revokedAt?: string
}

export interface TimeCheck extends Check {
  readonly at?: string
  readonly secondsLeft?: number
}

export interface BindingCheck extends Check {
  readonly binding: 'missing' | 'not_checked' | 'match' | 'mismatch'
  /** The token's cnf.x5t#S256. */
  readonly thumbprint?: string
  /** The --cert certificate's thumbprint, when it is another one. */
  readonly certificate?: string
}

/** The keys a token is checked against: the local keys directory, or a live JWKS. */
export interface KeySource {
  readonly label: string
  /** Public JWKs by kid. */
  readonly keys: ReadonlyMap<string, JWK>
  /** Lifecycle state of each key (local keys only). */
  readonly states?: ReadonlyMap<string, KeyState>
}

/** A PEM file the operator named; the error says which one and why, never its content. */
export async function readPem(path: string, what: string): Promise<string> {
  try {
    return await readFile(path, 'utf8')
  } catch (err) {
    throw new Error(`cannot read ${what} ${path}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`)
  }
}

/** The keys a server reading the keys directory holds, with their states now. */
export async function localKeys(options: KeysAdminOptions): Promise<KeySource> {
  const keyset = await loadKeyset(options.dir, { passphrase: options.passphrase, token: options.token })
  const states = new Map(keyStates(keyset.keys, options.clock.now(), options.timing).map((s) => [s.key.kid, s.state]))
  return { label: options.dir, keys: new Map(keyset.keys.map((k) => [k.kid, { ...k.publicJwk }])), states }
}

/** The keys of a live JWKS that a verifier would use. */
export async function jwksKeys(url: URL, tls: RemoteTls): Promise<KeySource> {
  const keys = new Map<string, JWK>()
  // The SDK verifier's rule (its key filter), for the algorithms authz signs with.
  for (const k of signingKeys(await fetchJwks(url, tls), [...ALGORITHMS])) keys.set(k.kid, k)
  return { label: url.href, keys }
}

/** The manifest of the keys directory, or undefined when there is none to read. */
export async function manifestOrUndefined(dir: string): Promise<Manifest | undefined> {
  try {
    return await readManifest(dir)
  } catch {
    return undefined
  }
}

export function kidCheck(kid: string | undefined, source: KeySource, manifest: Manifest | undefined, options: KeysAdminOptions): KidCheck {
  if (kid === undefined) return { ok: false, status: 'unknown', detail: 'the header has no kid (authz always sets one)' }
  const state = source.states?.get(kid)
  if (source.keys.has(kid)) {
    if (state === 'expired') {
      return { ok: false, kid, status: 'unpublished', state, detail: `${kid}: expired key, no longer published: verifiers reject its tokens (prune removes it)` }
    }
    return { ok: true, kid, status: 'known', ...(state === undefined ? {} : { state }), detail: `${kid}: ${state ?? 'published'} in ${source.label}` }
  }
  const revoked = manifest?.revoked.find((r) => r.kid === kid)
  if (revoked !== undefined) {
    return { ok: false, kid, status: 'revoked', revokedAt: iso(revoked.revokedAt), detail: `${kid}: revoked at ${iso(revoked.revokedAt)} (manifest in ${options.dir})` }
  }
  if (manifest?.keys.some((k) => k.kid === kid) === true) {
    const localState = statusesOf(manifest, options).find((s) => s.key.kid === kid)?.state
    return { ok: false, kid, status: 'unpublished', state: localState, detail: `${kid}: in the local manifest (${localState}) but not in ${source.label}` }
  }
  return {
    ok: false,
    kid,
    status: 'unknown',
    detail: `${kid}: not in ${source.label}, and the manifest does not list it as revoked: probably pruned (or not signed by this authz)`,
  }
}

export async function signatureCheck(token: string, header: ProtectedHeaderParameters, source: KeySource): Promise<SignatureCheck> {
  const jwk = header.kid === undefined ? undefined : source.keys.get(header.kid)
  if (jwk === undefined) return { ok: false, status: 'unverified', detail: 'not verified: no key with this kid' }
  // The algorithm is the key's (its JWKS entry), never the token header's alone.
  const alg = (jwk.alg ?? (jwk.kty === 'EC' ? 'ES256' : 'RS256')) as string
  try {
    const key = await importJWK({ ...jwk, alg }, alg)
    await compactVerify(token, key, { algorithms: [alg] })
    return { ok: true, status: 'valid', detail: `valid (${alg}, key ${header.kid})` }
  } catch (err) {
    const code = (err as { code?: string }).code ?? 'ERR_JOSE'
    const why =
      code === 'ERR_JOSE_ALG_NOT_ALLOWED'
        ? `alg ${String(header.alg)} is not the algorithm of key ${header.kid} (${alg})`
        : code === 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED'
          ? 'signature does not match'
          : code
    return { ok: false, status: 'invalid', code, detail: `invalid: ${why}` }
  }
}

export function timeChecks(payload: JWTPayload, nowSec: number): { exp: TimeCheck; nbf: TimeCheck } {
  const { exp, nbf } = payload
  const expCheck: TimeCheck =
    typeof exp !== 'number'
      ? { ok: false, detail: 'no exp claim' }
      : nowSec < exp
        ? { ok: true, at: iso(exp * 1000), secondsLeft: Math.round(exp - nowSec), detail: `${iso(exp * 1000)}: valid for ${formatDuration((exp - nowSec) * 1000)}` }
        : { ok: false, at: iso(exp * 1000), secondsLeft: Math.round(exp - nowSec), detail: `${iso(exp * 1000)}: expired ${formatDuration((nowSec - exp) * 1000)} ago` }
  const nbfCheck: TimeCheck =
    typeof nbf !== 'number'
      ? { ok: null, detail: 'absent' }
      : nbf <= nowSec
        ? { ok: true, at: iso(nbf * 1000), detail: `${iso(nbf * 1000)}: passed` }
        : { ok: false, at: iso(nbf * 1000), detail: `${iso(nbf * 1000)}: not valid for another ${formatDuration((nbf - nowSec) * 1000)}` }
  return { exp: expCheck, nbf: nbfCheck }
}

export async function bindingCheck(payload: JWTPayload, certPath: string | undefined): Promise<BindingCheck> {
  const cnf = payload.cnf as { 'x5t#S256'?: unknown } | undefined
  const bound = cnf?.['x5t#S256']
  if (typeof bound !== 'string') return { ok: false, binding: 'missing', detail: 'no cnf.x5t#S256 (authz always binds its tokens)' }
  if (certPath === undefined) return { ok: null, binding: 'not_checked', thumbprint: bound, detail: `x5t#S256 ${bound} (pass --cert <pem> to check a certificate)` }
  let thumbprint: string
  try {
    thumbprint = thumbprintOf(await readPem(certPath, 'certificate'))
  } catch (err) {
    throw new Error(`--cert ${certPath}: ${err instanceof Error && err.message.startsWith('cannot read') ? err.message : 'not a PEM certificate'}`)
  }
  return thumbprint === bound
    ? { ok: true, binding: 'match', thumbprint: bound, detail: `x5t#S256 ${bound}: matches ${certPath}` }
    : { ok: false, binding: 'mismatch', thumbprint: bound, certificate: thumbprint, detail: `x5t#S256 ${bound}: ${certPath} is another certificate (${thumbprint})` }
}
