/**
 * Where a verifier's keys come from: a static set given at start, or authz's JWKS fetched over http(s).
 *
 * The fetched set is refreshed as the response's `Cache-Control: max-age` says, bounded below (so
 * `max-age=0` cannot turn into a fetch loop) and above (so a huge max-age cannot keep a revoked key
 * trusted for days); and once on an unknown kid. Every fetch that a token causes (an unknown kid, or no
 * set loaded yet) waits for the cooldown since the previous fetch, whatever started that one: a flood of
 * forged tokens costs one fetch per cooldown, before the first load too. A failed fetch keeps the last
 * good set and is retried with backoff.
 */
import { Agent as HttpAgent } from 'node:http'
import { Agent as HttpsAgent } from 'node:https'
import { errors as joseErrors, type JWSHeaderParameters } from 'jose'
import type { Clock } from './clock.js'
import { VerifyError } from './errors.js'
import { httpRequestText } from './http.js'
import { isJwks, KeySet, SUPPORTED_ALGORITHMS, type Algorithm, type VerificationKey } from './key-set.js'

/** Bounds of the refresh interval taken from the JWKS response's `max-age`, seconds. */
export interface JwksMaxAgeBounds {
  /** Never refresh more often than this (default 30 s; also the delay for `max-age=0` or `no-cache`). */
  readonly min?: number
  /** Never keep a set longer than this (default 3600 s). */
  readonly max?: number
  /** When the response says nothing (default 300 s). */
  readonly fallback?: number
}

/** Where the keys come from, and what the verifier asks of it. */
export interface KeySource {
  readonly current: KeySet | undefined
  /** ms until the next scheduled refresh (undefined for a static set or once closed). */
  readonly nextRefreshMs: number | undefined
  /** The key for this token header; may refetch once on an unknown kid, within the cooldown. */
  keyFor(header: JWSHeaderParameters): Promise<VerificationKey>
  /** Refetches now (deduplicated with one in flight); false when the fetch failed. */
  refresh(): Promise<boolean>
  /** Called whenever the trusted keys change. */
  onChange(listener: () => void): void
  close(): void
}

export function staticKeySource(set: KeySet): KeySource {
  return {
    current: set,
    nextRefreshMs: undefined,
    keyFor: async (header) => set.keyFor(header),
    refresh: async () => true,
    onChange: () => undefined,
    close: () => undefined,
  }
}

export interface RemoteJwksOptions {
  readonly url: URL
  readonly algorithms: readonly Algorithm[]
  readonly clock: Clock
  readonly maxAge?: JwksMaxAgeBounds | undefined
  readonly cooldownMs: number
  readonly timeoutMs: number
  readonly tls?: { ca?: string | Buffer | undefined; cert?: string | Buffer | undefined; key?: string | Buffer | undefined }
}

/** `max-age` of a Cache-Control header, seconds; 0 for no-store/no-cache; undefined when absent. */
export function maxAgeOf(header: string | string[] | undefined): number | undefined {
  const value = Array.isArray(header) ? header.join(',') : header
  if (value === undefined) return undefined
  if (/(^|[\s,])no-(store|cache)\b/i.test(value)) return 0
  const match = /(?:^|[\s,])max-age\s*=\s*"?(\d{1,12})"?/i.exec(value)
  return match === null ? undefined : Number(match[1])
}

export function remoteJwksSource(options: RemoteJwksOptions): KeySource & { readonly loaded: Promise<boolean> } {
  const { url, clock, cooldownMs } = options
  const bounds = { min: options.maxAge?.min ?? 30, max: options.maxAge?.max ?? 3600, fallback: options.maxAge?.fallback ?? 300 }
  if (!(bounds.min > 0 && bounds.min <= bounds.max)) throw new TypeError('jwksMaxAge: need 0 < min <= max')
  const agent = url.protocol === 'https:' ? new HttpsAgent({ keepAlive: true, ...options.tls }) : new HttpAgent({ keepAlive: true })
  const listeners: (() => void)[] = []
  let current: KeySet | undefined
  let etag: string | undefined
  let lastAttempt = Number.NEGATIVE_INFINITY
  let failures = 0
  let inflight: Promise<boolean> | undefined
  let timer: NodeJS.Timeout | undefined
  let nextAt: number | undefined
  let closed = false

  const schedule = (delayMs: number): void => {
    if (closed) return
    if (timer !== undefined) clearTimeout(timer)
    nextAt = clock.now() + delayMs
    timer = setTimeout(() => void refresh(), delayMs)
    timer.unref()
  }

  /** One fetch; returns the max-age the answer gave (seconds) or null when it failed. */
  const fetchOnce = async (): Promise<number | undefined | null> => {
    try {
      const res = await httpRequestText(url, {
        headers: { accept: 'application/jwk-set+json, application/json', ...(etag === undefined || current === undefined ? {} : { 'if-none-match': etag }) },
        agent,
        timeoutMs: options.timeoutMs,
      })
      if (res.status === 304 && current !== undefined) return maxAgeOf(res.headers['cache-control'])
      if (res.status !== 200) return null
      const jwks: unknown = JSON.parse(res.body)
      if (!isJwks(jwks)) return null
      const next = await KeySet.fromJwks(jwks, options.algorithms)
      if (next.kids.length === 0) {
        // No usable key at all is a broken answer (authz always publishes its signing key), not a
        // revoke-all: the last good set stays. But when the issuer publishes keys of algorithms this
        // verifier does not allow (it moved to ES256, and this verifier was left at RS256), keeping the old
        // set would keep pruned and revoked keys trusted for ever: the set becomes empty, every token fails.
        if ((await KeySet.fromJwks(jwks, SUPPORTED_ALGORITHMS)).kids.length === 0) return null
      }
      const changed = current === undefined || next.fingerprint !== current.fingerprint
      current = next
      etag = typeof res.headers.etag === 'string' ? res.headers.etag : undefined
      if (changed) for (const listener of listeners) listener()
      return maxAgeOf(res.headers['cache-control'])
    } catch {
      return null
    }
  }

  const refresh = (): Promise<boolean> => {
    if (closed) return Promise.resolve(false)
    inflight ??= (async () => {
      lastAttempt = clock.now()
      const maxAge = await fetchOnce()
      inflight = undefined
      if (maxAge === null) {
        failures++
        // Backoff from 1 s, never slower than the cooldown: a verifier without keys recovers quickly.
        schedule(Math.min(1000 * 2 ** (failures - 1), Math.max(cooldownMs, 1000), bounds.max * 1000))
        return false
      }
      failures = 0
      schedule(Math.min(Math.max(maxAge ?? bounds.fallback, bounds.min), bounds.max) * 1000)
      return true
    })()
    return inflight
  }

  /** A fetch a token asks for: joins the one in flight, or starts one when the cooldown has passed. */
  const onDemand = async (): Promise<boolean> => {
    if (inflight !== undefined) return inflight
    if (clock.now() - lastAttempt < cooldownMs) return false
    return refresh()
  }

  return {
    loaded: refresh(),
    get current() {
      return current
    },
    get nextRefreshMs() {
      return closed || nextAt === undefined ? undefined : Math.max(0, nextAt - clock.now())
    },
    refresh,
    onChange: (listener) => void listeners.push(listener),
    async keyFor(header) {
      if (current === undefined) {
        await onDemand()
        if (current === undefined) throw new VerifyError('ERR_JWKS_UNAVAILABLE', 'no JWKS loaded yet')
      }
      try {
        return current.keyFor(header)
      } catch (err) {
        // An unknown kid: the issuer may have just published it. Refetch, within the cooldown.
        if (err instanceof joseErrors.JWKSNoMatchingKey && (await onDemand())) return current.keyFor(header)
        throw err
      }
    },
    close() {
      closed = true
      if (timer !== undefined) clearTimeout(timer)
      agent.destroy()
    },
  }
}
