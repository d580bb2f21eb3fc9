/**
 * The receiving side: verifies authz tokens offline with the JWKS it fetched. RS256 only; `typ` at+jwt;
 * `iss` and `aud` exact (one string `aud`); `exp`/`nbf` with a leeway of at most 30 s; `sub` and `jti`
 * present; and, when the request came over mTLS, `cnf.x5t#S256` must match the presenting certificate.
 * The JWKS is loaded at start, refreshed periodically and once on an unknown `kid` (with a cooldown);
 * when a fetch fails the last good set stays. Signature and claims checks are jose's.
 */
import { createHash, X509Certificate } from 'node:crypto'
import { Agent as HttpAgent } from 'node:http'
import { Agent as HttpsAgent } from 'node:https'
import type { PeerCertificate } from 'node:tls'
import { createLocalJWKSet, errors as joseErrors, jwtVerify, type JSONWebKeySet, type JWK, type JWTPayload, type JWTVerifyGetKey } from 'jose'
import { systemClock, type Clock } from '../clock.js'
import { VerifyError, type VerifyErrorCode } from './errors.js'
import { httpRequestText } from './http.js'

/** The largest leeway a verifier accepts, seconds. */
export const MAX_LEEWAY_SEC = 30

/** What a verifier checks tokens against, and how it keeps the JWKS fresh. */
export interface VerifierOptions {
  /** authz's `AUTHZ_ISSUER`, compared exactly with `iss`. */
  readonly issuer: string
  /** This service's own name, compared exactly with `aud`. */
  readonly audience: string
  /** Where authz publishes its keys: the ops listener, or the main listener over mTLS. */
  readonly jwksUrl: string | URL
  /** CA bundle for an https JWKS URL, and a client certificate when it is the mTLS listener. */
  readonly ca?: string | Buffer
  readonly cert?: string | Buffer
  readonly key?: string | Buffer
  /** Clock skew allowed on `exp`/`nbf`, seconds (default 5, at most 30). */
  readonly leeway?: number
  /** Reject tokens that cannot be matched to a peer certificate (default false). */
  readonly requireBinding?: boolean
  /** Periodic JWKS refresh, ms (default 5 min). */
  readonly refreshIntervalMs?: number
  /** At most one refetch per this interval when a token names an unknown kid, ms (default 30 s). */
  readonly unknownKidCooldownMs?: number
  /** Resolve even when the first JWKS fetch fails, and keep trying in the background (default false). */
  readonly waitForJwks?: boolean
  readonly timeoutMs?: number
  readonly clock?: Clock
}

/** Who called, as established by a verified token. */
export interface VerifiedCaller {
  /** The calling service (`sub`: its certificate CN at authz). */
  readonly service: string
  readonly audience: string
  readonly scopes: readonly string[]
  /** `jti`. */
  readonly tokenId: string
  /** `exp`, seconds since epoch. */
  readonly expiresAt: number
  readonly claims: Readonly<JWTPayload>
}

/** A certificate as Node hands it out (TLS peer certificate), as DER bytes, a PEM string or an X509Certificate. */
export type CertificateInput = PeerCertificate | Uint8Array | string | X509Certificate

/** Verifies authz tokens for one audience. Create with createVerifier; close() stops its refresh timer. */
export interface Verifier {
  verify(token: string | undefined, context?: { peerCertificate?: CertificateInput | undefined }): Promise<VerifiedCaller>
  /** Refetches the JWKS now; false when the fetch failed (the last good set stays). */
  refresh(): Promise<boolean>
  /** kids of the JWKS in use. */
  readonly kids: readonly string[]
  close(): void
}

/** base64url SHA-256 of a certificate's DER: what `cnf.x5t#S256` holds. */
export function thumbprintOf(cert: CertificateInput): string {
  let der: Uint8Array
  if (cert instanceof X509Certificate) der = cert.raw
  else if (typeof cert === 'string') der = new X509Certificate(cert).raw
  else if (cert instanceof Uint8Array) der = cert
  else if (cert.raw !== undefined) der = cert.raw
  else throw new VerifyError('ERR_BINDING_REQUIRED', 'no certificate bytes')
  return createHash('sha256').update(der).digest('base64url')
}

function mapJoseError(err: unknown): VerifyError {
  if (err instanceof VerifyError) return err
  const code = (err as { code?: string }).code
  const claim = (err as { claim?: string }).claim
  const table: Record<string, VerifyErrorCode> = {
    ERR_JWT_EXPIRED: 'ERR_TOKEN_EXPIRED',
    ERR_JOSE_ALG_NOT_ALLOWED: 'ERR_TOKEN_ALG',
    ERR_JOSE_NOT_SUPPORTED: 'ERR_TOKEN_ALG',
    ERR_JWS_SIGNATURE_VERIFICATION_FAILED: 'ERR_TOKEN_SIGNATURE',
    ERR_JWKS_NO_MATCHING_KEY: 'ERR_TOKEN_UNKNOWN_KID',
    ERR_JWKS_MULTIPLE_MATCHING_KEYS: 'ERR_TOKEN_UNKNOWN_KID',
    ERR_JWS_INVALID: 'ERR_TOKEN_MALFORMED',
    ERR_JWT_INVALID: 'ERR_TOKEN_MALFORMED',
  }
  if (code === 'ERR_JWT_CLAIM_VALIDATION_FAILED') {
    const byClaim: Record<string, VerifyErrorCode> = {
      iss: 'ERR_TOKEN_ISSUER',
      aud: 'ERR_TOKEN_AUDIENCE',
      nbf: 'ERR_TOKEN_NOT_YET_VALID',
      typ: 'ERR_TOKEN_TYP',
    }
    return new VerifyError(byClaim[claim ?? ''] ?? 'ERR_TOKEN_CLAIMS', (err as Error).message, { cause: err })
  }
  return new VerifyError(table[code ?? ''] ?? 'ERR_TOKEN_MALFORMED', (err as Error).message, { cause: err })
}

/** The keys of a JWKS that may verify an authz token: RSA, RS256 (or no alg), not for encryption. Anything else is ignored, never trusted. */
export function rs256SigningKeys(keys: readonly JWK[]): JWK[] {
  return keys.filter((k) => k.kty === 'RSA' && (k.alg === undefined || k.alg === 'RS256') && k.use !== 'enc')
}

function isJwks(value: unknown): value is JSONWebKeySet {
  return typeof value === 'object' && value !== null && Array.isArray((value as { keys?: unknown }).keys)
}

/**
 * Creates a verifier and loads the JWKS. Rejects when the JWKS cannot be fetched, unless `waitForJwks`.
 * Throws TypeError on misuse (a leeway over 30 s, a non-http(s) URL).
 */
export async function createVerifier(options: VerifierOptions): Promise<Verifier> {
  const leeway = options.leeway ?? 5
  if (!(leeway >= 0 && leeway <= MAX_LEEWAY_SEC)) throw new TypeError(`leeway must be between 0 and ${MAX_LEEWAY_SEC} seconds`)
  const url = new URL(options.jwksUrl)
  if (url.protocol !== 'https:' && url.protocol !== 'http:') throw new TypeError('jwksUrl must be http(s)')
  const clock = options.clock ?? systemClock
  const cooldown = options.unknownKidCooldownMs ?? 30_000
  const agent =
    url.protocol === 'https:'
      ? new HttpsAgent({ keepAlive: true, ca: options.ca, cert: options.cert, key: options.key })
      : new HttpAgent({ keepAlive: true })

  let keySet: JWTVerifyGetKey | undefined
  let kids: string[] = []
  let etag: string | undefined
  let lastFetch = Number.NEGATIVE_INFINITY
  let inflight: Promise<boolean> | undefined

  const fetchOnce = async (): Promise<boolean> => {
    lastFetch = clock.now()
    try {
      const res = await httpRequestText(url, {
        headers: { accept: 'application/jwk-set+json, application/json', ...(etag === undefined ? {} : { 'if-none-match': etag }) },
        agent,
        timeoutMs: options.timeoutMs ?? 5000,
      })
      if (res.status === 304 && keySet !== undefined) return true
      if (res.status !== 200) return false
      const jwks: unknown = JSON.parse(res.body)
      if (!isJwks(jwks)) return false
      const usable = { keys: rs256SigningKeys(jwks.keys) }
      keySet = createLocalJWKSet(usable)
      kids = usable.keys.map((k) => k.kid).filter((k): k is string => typeof k === 'string')
      const newEtag = res.headers.etag
      etag = typeof newEtag === 'string' ? newEtag : undefined
      return true
    } catch {
      return false
    }
  }
  const refresh = (): Promise<boolean> => {
    inflight ??= fetchOnce().finally(() => {
      inflight = undefined
    })
    return inflight
  }

  const ok = await refresh()
  if (!ok && options.waitForJwks !== true) {
    agent.destroy()
    throw new VerifyError('ERR_JWKS_UNAVAILABLE', `cannot load the JWKS from ${url.href}`)
  }
  // Periodic refresh; while no set could be loaded yet (waitForJwks), retry every second.
  let timer: NodeJS.Timeout | undefined
  let closed = false
  const schedule = (): void => {
    if (closed) return
    timer = setTimeout(() => void refresh().then(schedule), keySet === undefined ? 1000 : (options.refreshIntervalMs ?? 300_000))
    timer.unref()
  }
  schedule()
  const getKey: JWTVerifyGetKey = async (header, token) => {
    if (keySet === undefined) {
      await refresh()
      if (keySet === undefined) throw new VerifyError('ERR_JWKS_UNAVAILABLE', 'no JWKS loaded yet')
    }
    try {
      return await keySet(header, token)
    } catch (err) {
      // An unknown kid: refetch once (the issuer may have just published it), but not more often than
      // the cooldown allows, so a flood of forged kids cannot turn into a flood of fetches.
      if (err instanceof joseErrors.JWKSNoMatchingKey && clock.now() - lastFetch >= cooldown && (await refresh())) {
        return keySet(header, token)
      }
      throw err
    }
  }

  return {
    get kids() {
      return kids
    },
    refresh,
    close() {
      closed = true
      if (timer !== undefined) clearTimeout(timer)
      agent.destroy()
    },
    async verify(token, context = {}) {
      if (typeof token !== 'string' || token === '') throw new VerifyError('ERR_TOKEN_MISSING', 'no token')
      let payload: JWTPayload
      try {
        ;({ payload } = await jwtVerify(token, getKey, {
          algorithms: ['RS256'],
          typ: 'at+jwt',
          issuer: options.issuer,
          audience: options.audience,
          clockTolerance: leeway,
          currentDate: new Date(clock.now()),
          requiredClaims: ['iss', 'sub', 'aud', 'exp', 'iat', 'jti'],
        }))
      } catch (err) {
        throw mapJoseError(err)
      }
      if (typeof payload.aud !== 'string') throw new VerifyError('ERR_TOKEN_AUDIENCE', 'aud must be one string')
      if (typeof payload.sub !== 'string' || payload.sub === '') throw new VerifyError('ERR_TOKEN_CLAIMS', 'sub missing')
      const bound = (payload.cnf as { 'x5t#S256'?: unknown } | undefined)?.['x5t#S256']
      const peer = context.peerCertificate
      if (peer !== undefined && peer !== null && !(typeof peer === 'object' && 'raw' in peer && peer.raw === undefined)) {
        if (typeof bound !== 'string') throw new VerifyError('ERR_BINDING_REQUIRED', 'token carries no certificate binding')
        if (thumbprintOf(peer) !== bound) throw new VerifyError('ERR_BINDING_MISMATCH', 'token is bound to another certificate')
      } else if (options.requireBinding === true) {
        throw new VerifyError('ERR_BINDING_REQUIRED', 'no peer certificate to check the binding against')
      }
      const scope = typeof payload.scope === 'string' ? payload.scope : ''
      return Object.freeze({
        service: payload.sub,
        audience: payload.aud,
        scopes: Object.freeze(scope.split(' ').filter((s) => s !== '')),
        tokenId: String(payload.jti),
        expiresAt: payload.exp as number,
        claims: Object.freeze(payload),
      })
    },
  }
}
