/**
 * The calling side: gets tokens from authz over mTLS, caches one per (audience, scopes), refreshes it in
 * the background at about half its lifetime (±10 % jitter, never later than `exp` − 60 s, as the Go kit), with at most
 * one request in flight per key however many callers wait, and keeps serving a cached token while
 * refreshes fail (retrying with exponential backoff, and never before authz's Retry-After) until it
 * expires. With nothing valid cached, a caller during the backoff gets the last error at once instead of
 * a new request: an outage or a refusal is not retried at the callers' rate. A request that has no cached token
 * to fall back on and meets a reset connection (authz retires old keep-alive connections after a CA or
 * CRL update, and a request can race the close) is retried once, on a fresh connection.
 *
 * A token is bound to the certificate it was fetched with. With its TLS material from files (`tls`, a
 * TlsFiles), the client follows renewals: each set of material is a generation with its own connections to
 * authz and its own cached tokens; when a new set comes into force, the old generation's tokens are dropped
 * and the next request fetches with the new certificate. Helpers that open connections to callees
 * (`serviceFetch`, `serviceClient`) pair each connection with tokens of its own material (`tls`,
 * `tokenFor`). A token a callee refuses can be dropped (`invalidate`): at most once per key per cooldown, so
 * a callee that refuses everything cannot turn callers into a storm of requests to authz.
 */
import { Agent } from 'node:https'
import { systemClock, type Clock } from './clock.js'
import { TokenClientError } from './errors.js'
import { splitScopes } from './grammar.js'
import { httpRequestText, type HttpResult } from './http.js'
import type { TlsFiles, TlsMaterial } from './tls-files.js'

/** The default refresh margin: a token is refreshed no later than this long before it expires, ms. */
export const REFRESH_BEFORE_MS = 60_000
/** The default shortest interval between two invalidations of one key that drop a token, ms. */
export const INVALIDATE_COOLDOWN_MS = 30_000

/** How a TokenClient reaches authz, and how it paces refreshes. */
export interface TokenClientOptions {
  /** authz's token endpoint, e.g. `https://authz.internal:8443/token`. */
  readonly tokenUrl: string | URL
  /**
   * This service's TLS material from files, followed as it is renewed (new connections and new tokens use
   * the renewed certificate). Give this, or `ca`, `cert` and `key`. The client does not close it.
   */
  readonly tls?: TlsFiles
  /** CA bundle that authz's server certificate chains to (fixed material: give this, `cert` and `key`, or `tls`). */
  readonly ca?: string | Buffer
  /** This service's client certificate (its CN or SPIFFE ID is the identity authz puts in `sub`). */
  readonly cert?: string | Buffer
  readonly key?: string | Buffer
  /** Refresh at this fraction of the lifetime (default 0.5). */
  readonly refreshRatio?: number
  /** Relative jitter on the refresh instant (default 0.1, i.e. ±10 %). */
  readonly jitter?: number
  /**
   * Never refresh later than this long before expiry, ms (default 60 s, the Go kit's `RefreshBefore`): room
   * for two retries at the backoff's cap before the cached token dies.
   */
  readonly refreshBeforeMs?: number
  /** @deprecated Use `refreshBeforeMs` (the Go kit's name; same meaning). Removed in the next release. */
  readonly minRemainingMs?: number
  /** Backoff after a failed refresh: first delay and cap, ms (default 1 s and 30 s). */
  readonly retry?: { readonly initialMs?: number; readonly maxMs?: number }
  /** Per-request timeout, ms (default 5 s). */
  readonly timeoutMs?: number
  /**
   * `invalidate` drops a key's token at most once per this interval, ms (default 30 s): a callee that
   * answers 401 to every token costs authz at most one request per caller and key per interval.
   */
  readonly invalidateCooldownMs?: number
  /** Refresh on timers even when nobody asks (default true). Tests turn it off and drive the clock. */
  readonly backgroundRefresh?: boolean
  /** Called when a request to authz settles (for metrics and logs; never given the token). */
  readonly onRefresh?: (event: RefreshEvent) => void
  readonly clock?: Clock
  readonly random?: () => number
}

/** One request to authz for a token, settled. */
export interface RefreshEvent {
  readonly audience: string
  readonly scopes: readonly string[]
  /** The clock's time when the request started, ms. */
  readonly startedAt: number
  readonly ok: boolean
  readonly error?: TokenClientError
}

interface CachedToken {
  readonly value: string
  readonly expiresAt: number
  readonly refreshAt: number
}

/** One set of TLS material, its connections to authz and the tokens fetched with it. */
interface Generation {
  readonly material: TlsMaterial
  readonly agent: Agent
  readonly entries: Map<string, Entry>
  /** A newer set is in force: its tokens are dropped, it schedules no refresh. */
  retired: boolean
  /** Requests to authz in progress on its agent (the agent is destroyed when a retired generation has none). */
  pending: number
}

interface Entry {
  readonly gen: Generation
  readonly audience: string
  readonly scopes: readonly string[]
  token?: CachedToken
  /** When `invalidate` last dropped this key's token. */
  invalidatedAt?: number
  inflight?: Promise<CachedToken>
  failures: number
  retryAt: number
  /** Why the last request failed, until one succeeds. */
  lastError?: TokenClientError
  timer?: NodeJS.Timeout
}

/** The options' pacing, resolved and checked once. */
interface Pacing {
  readonly refreshRatio: number
  readonly jitter: number
  readonly refreshBeforeMs: number
  readonly retryInitialMs: number
  readonly retryMaxMs: number
  readonly timeoutMs: number
  readonly invalidateCooldownMs: number
}

function pacingOf(options: TokenClientOptions): Pacing {
  const pacing: Pacing = {
    refreshRatio: options.refreshRatio ?? 0.5,
    jitter: options.jitter ?? 0.1,
    refreshBeforeMs: options.refreshBeforeMs ?? options.minRemainingMs ?? REFRESH_BEFORE_MS,
    retryInitialMs: options.retry?.initialMs ?? 1000,
    retryMaxMs: options.retry?.maxMs ?? 30_000,
    timeoutMs: options.timeoutMs ?? 5000,
    invalidateCooldownMs: options.invalidateCooldownMs ?? INVALIDATE_COOLDOWN_MS,
  }
  if (!(pacing.refreshRatio > 0 && pacing.refreshRatio < 1)) throw new TypeError('refreshRatio must be between 0 and 1')
  if (!(pacing.jitter >= 0 && pacing.jitter < 1)) throw new TypeError('jitter must be at least 0 and below 1')
  for (const name of ['refreshBeforeMs', 'retryInitialMs', 'retryMaxMs', 'timeoutMs', 'invalidateCooldownMs'] as const) {
    if (!(Number.isFinite(pacing[name]) && pacing[name] >= 0)) throw new TypeError(`${name} must be a finite number of ms, at least 0`)
  }
  return pacing
}

/** One cached token per (audience, scopes), refreshed before it expires. */
export class TokenClient {
  readonly #url: URL
  readonly #clock: Clock
  readonly #random: () => number
  readonly #options: TokenClientOptions
  readonly #pacing: Pacing
  #gen: Generation
  /** Every set of material this client has used: `tokenFor` serves no other. */
  readonly #known = new WeakSet<TlsMaterial>()
  readonly #unwatch: (() => void) | undefined
  #closed = false

  constructor(options: TokenClientOptions) {
    this.#pacing = pacingOf(options)
    this.#options = options
    this.#url = new URL(options.tokenUrl)
    if (this.#url.protocol !== 'https:') throw new TypeError('tokenUrl must be an https URL')
    this.#clock = options.clock ?? systemClock
    this.#random = options.random ?? Math.random
    const { tls, ca, cert, key } = options
    if ((tls === undefined) === (cert === undefined) || (tls === undefined && (ca === undefined || key === undefined))) {
      throw new TypeError('give tls (a TlsFiles), or ca, cert and key')
    }
    this.#gen = this.#generation(tls?.current ?? Object.freeze({ ca: ca as string | Buffer, cert: cert as string | Buffer, key: key as string | Buffer }))
    this.#unwatch = tls?.onChange((material) => this.#rotate(material))
  }

  /**
   * The TLS material in force: what a connection that carries this client's tokens must present (the
   * tokens are bound to its certificate). It changes when `tls` files are renewed.
   */
  get tls(): TlsMaterial {
    return this.#gen.material
  }

  /**
   * A valid token for `audience` (and these scopes, if given): from the cache when fresh, otherwise
   * fetched — concurrent callers share one request. Rejects with a TokenClientError when no valid token
   * can be had. The token is bound to the certificate in force (`tls`) when it resolves.
   */
  async getToken(audience: string, scopes?: string | readonly string[]): Promise<string> {
    // A renewal while the request was in flight: that token is bound to the old certificate; ask again
    // (at most twice more: renewals are minutes apart).
    for (let attempt = 0; ; attempt++) {
      const gen = this.#gen
      const token = await this.#tokenOf(gen, audience, scopes)
      if (gen === this.#gen || attempt === 2) return token
    }
  }

  /**
   * A token bound to `material`'s certificate, for a connection opened with that material: the cached
   * token when `material` is the set in force; for a set a renewal replaced (a connection opened just
   * before it), one request with that material, not cached.
   */
  async tokenFor(material: TlsMaterial, audience: string, scopes?: string | readonly string[]): Promise<string> {
    if (material === this.#gen.material) return this.#tokenOf(this.#gen, audience, scopes)
    if (!this.#known.has(material)) throw new TypeError('tokenFor: not TLS material of this client')
    if (this.#closed) throw new TokenClientError('ERR_CLIENT_CLOSED', 'token client is closed')
    const agent = new Agent({ keepAlive: false, ca: material.ca, cert: material.cert, key: material.key })
    const gen: Generation = { material, agent, entries: new Map(), retired: true, pending: 0 }
    const list = normaliseScopes(scopes)
    return (await this.#fetch({ gen, audience, scopes: list, failures: 0, retryAt: 0 })).value
  }

  /**
   * Drops the cached token of (audience, scopes): the next `getToken` for it fetches a new one — after a
   * `keys revoke`, say, when a callee answers 401 to a token that is still fresh. With `token`, only if that
   * is still the cached token (a 401 for a token already replaced drops nothing). At most once per key per
   * `invalidateCooldownMs`. Returns true when the next `getToken` will not return `token` (or the cached
   * token): it was dropped, or already replaced; false when the cooldown kept it.
   */
  invalidate(audience: string, scopes?: string | readonly string[], token?: string): boolean {
    const entry = this.#gen.entries.get(keyOf(audience, normaliseScopes(scopes)))
    const cached = entry?.token
    if (entry === undefined || cached === undefined || (token !== undefined && cached.value !== token)) return true
    const now = this.#clock.now()
    if (entry.invalidatedAt !== undefined && now - entry.invalidatedAt < this.#pacing.invalidateCooldownMs) return false
    entry.invalidatedAt = now
    entry.token = undefined
    if (entry.timer !== undefined) clearTimeout(entry.timer)
    return true
  }

  /** Stops timers and closes the connection pool. Pending requests still settle. */
  close(): void {
    this.#closed = true
    this.#unwatch?.()
    for (const entry of this.#gen.entries.values()) if (entry.timer !== undefined) clearTimeout(entry.timer)
    this.#gen.agent.destroy()
  }

  #generation(material: TlsMaterial): Generation {
    this.#known.add(material)
    // One keep-alive mTLS agent for every request to authz with this material.
    const agent = new Agent({ keepAlive: true, maxSockets: 4, ca: material.ca, cert: material.cert, key: material.key })
    return { material, agent, entries: new Map(), retired: false, pending: 0 }
  }

  /** A renewed set is in force: new tokens and connections use it; the old generation's tokens are dropped. */
  #rotate(material: TlsMaterial): void {
    if (this.#closed) return
    const old = this.#gen
    this.#gen = this.#generation(material)
    old.retired = true
    for (const entry of old.entries.values()) if (entry.timer !== undefined) clearTimeout(entry.timer)
    old.entries.clear()
    if (old.pending === 0) old.agent.destroy()
  }

  async #tokenOf(gen: Generation, audience: string, scopes: string | readonly string[] | undefined): Promise<string> {
    if (this.#closed) throw new TokenClientError('ERR_CLIENT_CLOSED', 'token client is closed')
    const list = normaliseScopes(scopes)
    const key = keyOf(audience, list)
    let entry = gen.entries.get(key)
    if (entry === undefined) {
      entry = { gen, audience, scopes: list, failures: 0, retryAt: 0 }
      gen.entries.set(key, entry)
    }
    const now = this.#clock.now()
    const cached = entry.token
    if (cached !== undefined && now < cached.expiresAt) {
      if (now >= cached.refreshAt) this.#refreshInBackground(entry)
      return cached.value
    }
    return (await this.#refresh(entry)).value
  }

  #refreshInBackground(entry: Entry): void {
    if (this.#closed || entry.inflight !== undefined) return
    this.#refresh(entry).catch(() => undefined) // the failure is handled (backoff) in #refresh
  }

  #refresh(entry: Entry): Promise<CachedToken> {
    if (entry.inflight !== undefined) return entry.inflight
    // Within the backoff after a failure: no new request, the last error.
    if (entry.lastError !== undefined && this.#clock.now() < entry.retryAt) return Promise.reject(entry.lastError)
    const startedAt = this.#clock.now()
    entry.inflight = this.#fetch(entry).then(
      (token) => {
        entry.token = token
        entry.failures = 0
        entry.retryAt = 0
        entry.lastError = undefined
        entry.inflight = undefined
        this.#schedule(entry, token.refreshAt)
        this.#report(entry, startedAt)
        return token
      },
      (err: unknown) => {
        const error = err as TokenClientError
        entry.failures++
        const { retryInitialMs, retryMaxMs } = this.#pacing
        const base = Math.min(retryMaxMs, retryInitialMs * 2 ** Math.min(entry.failures - 1, 30))
        const delay = Math.max(base / 2 + (this.#random() * base) / 2, (error.retryAfterSeconds ?? 0) * 1000)
        entry.retryAt = this.#clock.now() + delay
        entry.lastError = error
        entry.inflight = undefined
        // Keep trying while the cached token is still good, so callers never see the outage.
        if (entry.token !== undefined && entry.retryAt < entry.token.expiresAt) this.#schedule(entry, entry.retryAt)
        this.#report(entry, startedAt, error)
        throw error
      },
    )
    return entry.inflight
  }

  /** Tells `onRefresh`, after the entry is settled: a listener that throws changes nothing here. */
  #report(entry: Entry, startedAt: number, error?: TokenClientError): void {
    try {
      this.#options.onRefresh?.({ audience: entry.audience, scopes: entry.scopes, startedAt, ok: error === undefined, ...(error === undefined ? {} : { error }) })
    } catch {
      // the listener's own fault: the token, its refresh and its backoff stand
    }
  }

  #schedule(entry: Entry, at: number): void {
    if (this.#options.backgroundRefresh === false || this.#closed || entry.gen.retired) return
    if (entry.timer !== undefined) clearTimeout(entry.timer)
    entry.timer = setTimeout(() => this.#refreshInBackground(entry), Math.max(0, at - this.#clock.now()))
    entry.timer.unref()
  }

  async #fetch(entry: Entry): Promise<CachedToken> {
    const { gen } = entry
    gen.pending++
    try {
      return await this.#request(entry)
    } finally {
      if (--gen.pending === 0 && gen.retired) gen.agent.destroy()
    }
  }

  async #request(entry: Entry): Promise<CachedToken> {
    const { material, agent: pool } = entry.gen
    const body = JSON.stringify({
      grant_type: 'client_credentials',
      audience: entry.audience,
      ...(entry.scopes.length > 0 ? { scope: entry.scopes.join(' ') } : {}),
    })
    const requestedAt = this.#clock.now()
    const send = (agent: Agent | false): Promise<HttpResult> =>
      httpRequestText(this.#url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', accept: 'application/json' },
        body,
        timeoutMs: this.#pacing.timeoutMs,
        ...(agent === false ? { tls: { ca: material.ca, cert: material.cert, key: material.key } } : { agent }),
      })
    let res: HttpResult
    try {
      try {
        res = await send(pool)
      } catch (err) {
        // Nothing cached to serve meanwhile: one retry, on a connection of its own (the pool may hold
        // other connections that authz is closing), before the caller sees an error.
        if (entry.token !== undefined || !isConnectionReset(err)) throw err
        res = await send(false)
      }
    } catch (err) {
      throw new TokenClientError('ERR_TOKEN_NETWORK', `cannot reach ${this.#url.origin}`, { cause: err })
    }
    let json: Record<string, unknown>
    try {
      json = JSON.parse(res.body) as Record<string, unknown>
    } catch {
      throw new TokenClientError('ERR_TOKEN_RESPONSE', `authz answered ${res.status} with a body that is not JSON`, { status: res.status })
    }
    if (res.status !== 200) {
      const oauthError = typeof json.error === 'string' ? json.error : undefined
      const code = res.status >= 400 && res.status < 500 && oauthError !== undefined ? 'ERR_TOKEN_DENIED' : 'ERR_TOKEN_RESPONSE'
      throw new TokenClientError(code, `authz refused a token for ${entry.audience}: ${res.status} ${oauthError ?? ''}`.trim(), {
        status: res.status,
        ...(oauthError === undefined ? {} : { oauthError }),
        ...retryAfterOf(res),
      })
    }
    const { access_token: value, expires_in: expiresIn } = json
    if (typeof value !== 'string' || typeof expiresIn !== 'number' || !(expiresIn > 0)) {
      throw new TokenClientError('ERR_TOKEN_RESPONSE', 'authz answered 200 without access_token/expires_in', { status: 200 })
    }
    const lifetime = expiresIn * 1000
    const { refreshRatio, jitter, refreshBeforeMs } = this.#pacing
    const planned = lifetime * refreshRatio * (1 + jitter * (2 * this.#random() - 1))
    const refreshIn = Math.max(0, Math.min(planned, lifetime - refreshBeforeMs))
    return { value, expiresAt: requestedAt + lifetime, refreshAt: requestedAt + refreshIn }
  }
}

const keyOf = (audience: string, scopes: readonly string[]): string => `${audience}\n${scopes.join(' ')}`

function normaliseScopes(scopes: string | readonly string[] | undefined): string[] {
  if (scopes === undefined) return []
  const list = typeof scopes === 'string' ? splitScopes(scopes) : scopes.filter((s) => s !== '')
  return [...new Set(list)].sort()
}

/** authz's `Retry-After` (429 `slow_down`), in seconds, when it sent a sane one. */
function retryAfterOf(res: HttpResult): { retryAfterSeconds?: number } {
  const header = res.headers['retry-after']
  const seconds = typeof header === 'string' && /^\d{1,4}$/.test(header) ? Number(header) : 0
  return seconds > 0 && seconds <= 3600 ? { retryAfterSeconds: seconds } : {}
}

/** A connection the server closed under a request: ECONNRESET, EPIPE, or Node's "socket hang up". */
function isConnectionReset(err: unknown): boolean {
  const code = (err as { code?: unknown } | undefined)?.code
  return code === 'ECONNRESET' || code === 'EPIPE'
}
