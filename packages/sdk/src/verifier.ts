/**
 * The receiving side: verifies authz tokens offline. The algorithms the operator allows (RS256 by
 * default; ES256 by option), each key's algorithm taken from the key set; `typ` at+jwt; `iss` and `aud`
 * exact (one string `aud`); `exp`/`nbf` and a future `iat` with a leeway of at most 30 s; a bounded
 * lifetime (`exp − iat`); `sub` and `jti` present; and, when the request came over mTLS, `cnf.x5t#S256`
 * equal to the presenting certificate's thumbprint — on every request, cached token or not.
 */
import type { JWTPayload } from 'jose'
import { jwtVerify } from 'jose'
import { thumbprintOf, type CertificateInput } from './certificate.js'
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
  /** Longest `exp − iat` accepted, seconds (default 900 + leeway). */
  readonly maxLifetime?: number
  /** Reject tokens that cannot be matched to a peer certificate (default false). */
  readonly requireBinding?: boolean
  /** Bounds on the JWKS refresh interval taken from its `Cache-Control: max-age`, seconds. */
  readonly jwksMaxAge?: JwksMaxAgeBounds
  /** At most one token-caused JWKS fetch (unknown kid, no set yet) per this interval, ms (default 30 s). */
  readonly unknownKidCooldownMs?: number
  /** Resolve even when the first JWKS fetch fails, and keep trying in the background (default false). */
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

const joseCodes: Record<string, VerifyErrorCode> = {
  ERR_JWT_EXPIRED: 'ERR_TOKEN_EXPIRED',
  ERR_JOSE_ALG_NOT_ALLOWED: 'ERR_TOKEN_ALG',
  ERR_JOSE_NOT_SUPPORTED: 'ERR_TOKEN_ALG',
  ERR_JWS_SIGNATURE_VERIFICATION_FAILED: 'ERR_TOKEN_SIGNATURE',
  ERR_JWKS_NO_MATCHING_KEY: 'ERR_TOKEN_UNKNOWN_KID',
}
const claimCodes: Record<string, VerifyErrorCode> = {
  iss: 'ERR_TOKEN_ISSUER',
  aud: 'ERR_TOKEN_AUDIENCE',
  nbf: 'ERR_TOKEN_NOT_YET_VALID',
  typ: 'ERR_TOKEN_TYP',
}

function mapJoseError(err: unknown): VerifyError {
  if (err instanceof VerifyError) return err
  const { code, claim } = err as { code?: string; claim?: string }
  const mapped = code === 'ERR_JWT_CLAIM_VALIDATION_FAILED' ? (claimCodes[claim ?? ''] ?? 'ERR_TOKEN_CLAIMS') : (joseCodes[code ?? ''] ?? 'ERR_TOKEN_MALFORMED')
  return new VerifyError(mapped, (err as Error).message, { cause: err })
}

/** The part of a verification that holds for every request with this token. */
interface Verified {
  readonly caller: VerifiedCaller
  /** `cnf.x5t#S256`, if the token is bound. */
  readonly boundTo: string | undefined
}

/**
 * Creates a verifier and loads its keys. With a `jwksUrl`, rejects when the JWKS cannot be fetched, unless
 * `waitForJwks`. Throws TypeError on misuse (a leeway over 30 s, an unknown algorithm, neither or both of
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
    if (!(await remote.loaded) && options.waitForJwks !== true) {
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
  const getKey = (header: Parameters<KeySource['keyFor']>[0]) => source.keyFor(header)

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
    const { aud, sub, jti, exp, iat } = payload as { aud: unknown; sub: unknown; jti: unknown; exp: number; iat: number }
    if (typeof aud !== 'string') throw new VerifyError('ERR_TOKEN_AUDIENCE', 'aud must be one string')
    if (typeof sub !== 'string' || sub === '') throw new VerifyError('ERR_TOKEN_CLAIMS', 'sub missing')
    if (typeof jti !== 'string' || jti === '') throw new VerifyError('ERR_TOKEN_CLAIMS', 'jti missing')
    if (iat > clock.now() / 1000 + leeway) throw new VerifyError('ERR_TOKEN_ISSUED_IN_FUTURE', 'iat is in the future')
    if (exp - iat > maxLifetime) throw new VerifyError('ERR_TOKEN_LIFETIME', `lifetime over ${maxLifetime} s`)
    const bound = (payload.cnf as { 'x5t#S256'?: unknown } | undefined)?.['x5t#S256']
    const scope = typeof payload.scope === 'string' ? payload.scope : ''
    return Object.freeze({
      boundTo: typeof bound === 'string' ? bound : undefined,
      caller: Object.freeze({
        service: sub,
        audience: aud,
        scopes: Object.freeze(splitScopes(scope)),
        tokenId: jti,
        expiresAt: exp,
        claims: Object.freeze(payload),
      }),
    })
  }

  const checkBinding = (verified: Verified, context: VerifyContext): void => {
    const peer = context.peerCertificate
    // A peer certificate without bytes (Node's `{}` for "none presented") throws ERR_BINDING_REQUIRED.
    const presented = context.peerThumbprint ?? (peer === undefined || peer === null ? undefined : thumbprintOf(peer))
    if (presented !== undefined) {
      if (verified.boundTo === undefined) throw new VerifyError('ERR_BINDING_REQUIRED', 'token carries no certificate binding')
      if (presented !== verified.boundTo) throw new VerifyError('ERR_BINDING_MISMATCH', 'token is bound to another certificate')
    } else if (options.requireBinding === true) {
      throw new VerifyError('ERR_BINDING_REQUIRED', 'no peer certificate to check the binding against')
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
      let verified = cache?.get(token)
      if (verified === undefined) {
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
