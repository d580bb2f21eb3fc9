/**
 * The receiving side: verifies authz tokens offline. The algorithms the operator allows (RS256 by
 * default; ES256 by option), each key's algorithm taken from the key set; `typ` at+jwt; `iss` and `aud`
 * exact (one string `aud`); `exp`/`nbf` and a future `iat` with a leeway of at most 30 s; a bounded
 * lifetime (`exp − iat`); `sub` and `jti` present; and, when the request came over mTLS, `cnf.x5t#S256`
 * equal to the presenting certificate's thumbprint — on every request, cached token or not.
 */
import type { JWTPayload } from 'jose'
import { jwtVerify } from 'jose'
import { peerThumbprintOf, type CertificateInput } from './certificate.js'
import { systemClock, type Clock } from './clock.js'
import { VerifyError, type VerifyErrorCode } from './errors.js'
import { splitScopes } from './grammar.js'
import { remoteJwksSource, staticKeySource, type JwksMaxAgeBounds, type KeySource } from './jwks.js'
import { KeySet, SUPPORTED_ALGORITHMS, type Algorithm, type JsonWebKeySet } from './key-set.js'
import { TokenCache, type TokenCacheOptions } from './token-cache.js'

/** The largest leeway a verifier accepts, seconds; also the default. */
export const MAX_LEEWAY_SEC = 30
/** The longest token lifetime authz issues (`AUTHZ_TOKEN_TTL` ≤ 900 s). */
export const MAX_TOKEN_TTL_SEC = 900
/** Tokens longer than this are refused outright, whatever the options say. */
const TOKEN_MAX_LENGTH = 8192

/** What a verifier checks tokens against, and where its keys come from. */
export interface VerifierOptions {
  /** authz's `AUTHZ_ISSUER`, compared exactly with `iss`. */
  readonly issuer: string
  /** This service's own name, compared exactly with `aud`. */
  readonly audience: string
  /** Where authz publishes its keys: the ops listener, or the main listener over mTLS. Give this or `keys`. */
  readonly jwksUrl?: string | URL
  /**
   * A static key set instead of a JWKS URL: JWKS JSON text or object, or PEM public keys (SPKI), e.g.
   * `process.env.AUTHZ_JWKS` or `readFileSync('/etc/authz/jwks.json', 'utf8')`. Never refreshed: a new
   * key must reach the service before it starts signing.
   */
  readonly keys?: string | JsonWebKeySet
  /** CA bundle for an https JWKS URL, and a client certificate when it is the mTLS listener. */
  readonly ca?: string | Buffer
  readonly cert?: string | Buffer
  readonly key?: string | Buffer
  /** Algorithms accepted (default `['RS256']`; `'ES256'` may be added). The key's own algorithm must match. */
  readonly algorithms?: readonly Algorithm[]
  /** Clock skew allowed on `exp`, `nbf` and a future `iat`, seconds (default and maximum 30). */
  readonly leeway?: number
  /** Longest `exp − iat` accepted, seconds, exactly (default 900 + leeway). */
  readonly maxLifetime?: number
  /**
   * Accept a token when `verify` is given no peer certificate (default false: refused with
   * ERR_BINDING_REQUIRED). Only for a service whose mTLS ends before it (a mesh sidecar): its tokens are then
   * bearer tokens. A peer certificate that is given is always checked against `cnf.x5t#S256`.
   */
  readonly allowNoPeer?: boolean
  /**
   * @deprecated Use `allowNoPeer` (the Go kit's name; a peer is now required by default). `requireBinding:
   * false` means `allowNoPeer: true`. Removed in the next release.
   */
  readonly requireBinding?: boolean
  /** Bounds on the JWKS refresh interval taken from its `Cache-Control: max-age`, seconds. */
  readonly jwksMaxAge?: JwksMaxAgeBounds
  /** At most one token-caused JWKS fetch (unknown kid, no set yet) per this interval, ms (default 30 s). */
  readonly unknownKidCooldownMs?: number
  /**
   * Resolve even when the first JWKS fetch fails, and keep trying in the background; tokens are refused
   * (ERR_JWKS_UNAVAILABLE) until a load succeeds (default false: `createVerifier` rejects).
   */
  readonly startWithoutKeys?: boolean
  /** @deprecated Use `startWithoutKeys` (the Go kit's name; same meaning). Removed in the next release. */
  readonly waitForJwks?: boolean
  /** The verified-token cache (default on: 1000 tokens, 5 min); `false` turns it off. */
  readonly cache?: false | TokenCacheOptions
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

/** What a request proves besides its token. */
export interface VerifyContext {
  /** The TLS peer certificate the request came over. */
  readonly peerCertificate?: CertificateInput | undefined
  /** Its thumbprint, when the caller already has it (computed once per connection). Wins over `peerCertificate`. */
  readonly peerThumbprint?: string | undefined
}

/** Verifies authz tokens for one audience. Create with createVerifier; close() stops its refresh timer. */
export interface Verifier {
  verify(token: string | undefined, context?: VerifyContext): Promise<VerifiedCaller>
  /**
   * The fast path of `verify` for integrations: the caller of a token the cache holds, synchronously,
   * after the binding check (which throws like `verify`); undefined when the token is not cached.
   */
  verifyCached(token: string, context?: VerifyContext): VerifiedCaller | undefined
  /** Refetches the JWKS now; false when the fetch failed (the last good set stays). Always true for static keys. */
  refresh(): Promise<boolean>
  /** kids of the key set in use. */
  readonly kids: readonly string[]
  /** ms until the next scheduled JWKS refresh (undefined with static keys). */
  readonly nextRefreshMs: number | undefined
  /** Tokens in the verified-token cache (0 when it is off). */
  readonly cachedTokens: number
  close(): void
}

// Anything else is ERR_TOKEN_MALFORMED, ERR_JOSE_NOT_SUPPORTED included: with the algorithms option
// refusing other algorithms first, jose says that of a crit header it does not know.
const joseCodes: Record<string, VerifyErrorCode> = {
  ERR_JWT_EXPIRED: 'ERR_TOKEN_EXPIRED',
  ERR_JOSE_ALG_NOT_ALLOWED: 'ERR_TOKEN_ALG',
  ERR_JWS_SIGNATURE_VERIFICATION_FAILED: 'ERR_TOKEN_SIGNATURE',
  ERR_JWKS_NO_MATCHING_KEY: 'ERR_TOKEN_UNKNOWN_KID',
}
/** A claim whose value jose found wrong; a claim that is missing or of the wrong type is ERR_TOKEN_CLAIMS. */
const claimCodes: Record<string, VerifyErrorCode> = {
  iss: 'ERR_TOKEN_ISSUER',
  aud: 'ERR_TOKEN_AUDIENCE',
  nbf: 'ERR_TOKEN_NOT_YET_VALID',
  typ: 'ERR_TOKEN_TYP',
}

/** A compact JWS: three base64url segments without padding or whitespace (the signature may be empty). */
const COMPACT_JWS = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/

/**
 * Each segment is the canonical base64url of its bytes (no bits set past the last byte), as Go's strict
 * decoder requires: one token, one spelling, whichever kit reads it.
 */
const canonical = (token: string): boolean => token.split('.').every((seg) => Buffer.from(seg, 'base64url').toString('base64url') === seg)

/** `sub` and `aud` of an authenticated payload, when they are strings: what a refusal may report. */
function whose(payload: unknown): { subject?: string; audience?: string } {
  const { sub, aud } = (payload ?? {}) as { sub?: unknown; aud?: unknown }
  return { ...(typeof sub === 'string' && sub !== '' ? { subject: sub } : {}), ...(typeof aud === 'string' ? { audience: aud } : {}) }
}

function mapJoseError(err: unknown): VerifyError {
  if (err instanceof VerifyError) return err
  const { code, claim, reason, payload } = err as { code?: string; claim?: string; reason?: string; payload?: unknown }
  const message = err instanceof Error ? err.message : 'verification failed'
  if (code === 'ERR_JWT_CLAIM_VALIDATION_FAILED') {
    const mapped = reason === 'check_failed' ? (claimCodes[claim ?? ''] ?? 'ERR_TOKEN_CLAIMS') : 'ERR_TOKEN_CLAIMS'
    return new VerifyError(mapped, message, { cause: err, ...whose(payload) })
  }
  if (code === 'ERR_JWT_EXPIRED') return new VerifyError('ERR_TOKEN_EXPIRED', message, { cause: err, ...whose(payload) })
  return new VerifyError(joseCodes[code ?? ''] ?? 'ERR_TOKEN_MALFORMED', message, { cause: err })
}

/** `typ` as jose compares it: `at+jwt` and `application/at+jwt`, in any case. */
function isAccessTokenTyp(typ: unknown): boolean {
  if (typeof typ !== 'string') return false
  const lower = typ.toLowerCase()
  return lower === 'at+jwt' || lower === 'application/at+jwt'
}

/** The part of a verification that holds for every request with this token. */
interface Verified {
  readonly caller: VerifiedCaller
  /** `cnf.x5t#S256`, if the token is bound. */
  readonly boundTo: string | undefined
}

/**
 * Creates a verifier and loads its keys. With a `jwksUrl`, rejects when the JWKS cannot be fetched, unless
 * `startWithoutKeys`. Throws TypeError on misuse (a leeway over 30 s, an unknown algorithm, neither or both of
 * `jwksUrl` and `keys`); a static set without a usable public key rejects with ERR_JWKS_INVALID.
 */
export async function createVerifier(options: VerifierOptions): Promise<Verifier> {
  const leeway = options.leeway ?? MAX_LEEWAY_SEC
  if (!(leeway >= 0 && leeway <= MAX_LEEWAY_SEC)) throw new TypeError(`leeway must be between 0 and ${MAX_LEEWAY_SEC} seconds`)
  const maxLifetime = options.maxLifetime ?? MAX_TOKEN_TTL_SEC + leeway
  if (!(maxLifetime > 0)) throw new TypeError('maxLifetime must be positive')
  const algorithms = options.algorithms ?? ['RS256']
  if (algorithms.length === 0 || algorithms.some((a) => !SUPPORTED_ALGORITHMS.includes(a))) {
    throw new TypeError(`algorithms must be some of ${SUPPORTED_ALGORITHMS.join(', ')}`)
  }
  if ((options.jwksUrl === undefined) === (options.keys === undefined)) throw new TypeError('give exactly one of jwksUrl and keys')
  const clock = options.clock ?? systemClock
  const allowNoPeer = options.allowNoPeer ?? options.requireBinding === false
  const startWithoutKeys = options.startWithoutKeys ?? options.waitForJwks === true

  let source: KeySource
  if (options.keys !== undefined) {
    source = staticKeySource(await KeySet.fromStatic(options.keys, algorithms))
  } else {
    const url = new URL(options.jwksUrl as string | URL)
    if (url.protocol !== 'https:' && url.protocol !== 'http:') throw new TypeError('jwksUrl must be http(s)')
    const remote = remoteJwksSource({
      url,
      algorithms,
      clock,
      maxAge: options.jwksMaxAge,
      cooldownMs: options.unknownKidCooldownMs ?? 30_000,
      timeoutMs: options.timeoutMs ?? 5000,
      tls: { ca: options.ca, cert: options.cert, key: options.key },
    })
    if (!(await remote.loaded) && !startWithoutKeys) {
      remote.close()
      throw new VerifyError('ERR_JWKS_UNAVAILABLE', `cannot load the JWKS from ${url.href}`)
    }
    source = remote
  }

  const cache = options.cache === false ? undefined : new TokenCache<Verified>(clock, options.cache)
  // Keys changed (a rotation, a revoke): nothing verified with the old set is trusted any longer.
  let generation = 0
  source.onChange(() => {
    generation++
    cache?.clear()
  })
  // Header checks before any signature math, in the Go kit's order: jose has checked crit and the
  // algorithm by now; then typ, then the key of the kid (whose algorithm must be the header's).
  const getKey = (header: Parameters<KeySource['keyFor']>[0]) => {
    if (!isAccessTokenTyp(header.typ)) throw new VerifyError('ERR_TOKEN_TYP', 'typ is not at+jwt')
    return source.keyFor(header)
  }

  const verifyToken = async (token: string): Promise<Verified> => {
    let payload: JWTPayload
    try {
      ;({ payload } = await jwtVerify(token, getKey, {
        algorithms: [...algorithms],
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
    // What jose leaves to us, in one order (conformance/README.md): the signature verified, so the
    // refusal may say whose token it was.
    const refuse = (code: VerifyErrorCode, message: string): VerifyError => new VerifyError(code, message, whose(payload))
    const { aud, sub, jti, exp, iat, scope, cnf } = payload as Record<string, unknown>
    if (typeof aud !== 'string') throw refuse('ERR_TOKEN_AUDIENCE', 'aud must be one string')
    if (typeof sub !== 'string' || sub === '') throw refuse('ERR_TOKEN_CLAIMS', 'sub must be a non-empty string')
    if (typeof jti !== 'string' || jti === '') throw refuse('ERR_TOKEN_CLAIMS', 'jti must be a non-empty string')
    if (scope !== undefined && typeof scope !== 'string') throw refuse('ERR_TOKEN_CLAIMS', 'scope must be a string')
    const bound = typeof cnf === 'object' && cnf !== null && !Array.isArray(cnf) ? (cnf as Record<string, unknown>)['x5t#S256'] : cnf === undefined ? undefined : null
    if (bound === null || (bound !== undefined && typeof bound !== 'string')) throw refuse('ERR_TOKEN_CLAIMS', 'cnf must be an object, its x5t#S256 a string')
    // jose checked that exp and iat are numbers.
    if ((iat as number) > clock.now() / 1000 + leeway) throw refuse('ERR_TOKEN_ISSUED_IN_FUTURE', 'iat is in the future')
    const lifetime = (exp as number) - (iat as number)
    if (!(lifetime > 0 && lifetime <= maxLifetime)) throw refuse('ERR_TOKEN_LIFETIME', `lifetime ${lifetime} s is not within (0, ${maxLifetime}]`)
    return Object.freeze({
      boundTo: bound as string | undefined,
      caller: Object.freeze({
        service: sub,
        audience: aud,
        scopes: Object.freeze(splitScopes((scope as string | undefined) ?? '')),
        tokenId: jti,
        expiresAt: exp as number,
        claims: Object.freeze(payload),
      }),
    })
  }

  /** The thumbprint of the certificate the request came over, if any; one that cannot be read is none. */
  const presentedBy = (context: VerifyContext): string | undefined => {
    if (context.peerThumbprint !== undefined) return context.peerThumbprint
    try {
      return peerThumbprintOf(context.peerCertificate)
    } catch {
      return undefined
    }
  }

  const checkBinding = (verified: Verified, context: VerifyContext): void => {
    const refuse = (code: VerifyErrorCode, message: string): VerifyError =>
      new VerifyError(code, message, { subject: verified.caller.service, audience: verified.caller.audience })
    const presented = presentedBy(context)
    if (presented !== undefined) {
      if (verified.boundTo === undefined) throw refuse('ERR_BINDING_REQUIRED', 'token carries no certificate binding')
      if (presented !== verified.boundTo) throw refuse('ERR_BINDING_MISMATCH', 'token is bound to another certificate')
    } else if (!allowNoPeer) {
      throw refuse('ERR_BINDING_REQUIRED', 'no peer certificate to check the binding against')
    }
  }

  return {
    get kids() {
      return source.current?.kids ?? []
    },
    get nextRefreshMs() {
      return source.nextRefreshMs
    },
    get cachedTokens() {
      return cache?.size ?? 0
    },
    refresh: () => source.refresh(),
    close: () => source.close(),
    verifyCached(token, context = {}) {
      const verified = cache?.get(token)
      if (verified === undefined) return undefined
      checkBinding(verified, context)
      return verified.caller
    },
    async verify(token, context = {}) {
      if (typeof token !== 'string' || token === '') throw new VerifyError('ERR_TOKEN_MISSING', 'no token')
      if (token.length > TOKEN_MAX_LENGTH) throw new VerifyError('ERR_TOKEN_MALFORMED', 'token too long')
      // A cached token is this exact string, which passed every check when it entered the cache.
      let verified = cache?.get(token)
      if (verified === undefined) {
        if (!COMPACT_JWS.test(token) || !canonical(token)) throw new VerifyError('ERR_TOKEN_MALFORMED', 'not three canonical base64url segments')
        const before = generation
        verified = await verifyToken(token)
        // Verified against a key set that changed meanwhile: good for this request, not for the cache.
        if (cache !== undefined && generation === before) cache.set(token, verified, verified.caller.expiresAt * 1000)
      }
      checkBinding(verified, context)
      return verified.caller
    },
  }
}
