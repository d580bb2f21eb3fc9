/**
 * Where a callee policy comes from: a file, or an `https://` URL of a configuration center (Consul's KV
 * with `?raw`, a plain web server) — the Go kit's policySource. A source reads the whole document; a URL
 * source asks with the last answer's ETag, and a 304 means that answer again. Redirects are never
 * followed: a 3xx is a failed read, so nobody moves the policy to another scheme or host unnoticed.
 */
import { constants } from 'node:fs'
import { open, type FileHandle } from 'node:fs/promises'
import { Agent as HttpAgent } from 'node:http'
import { Agent as HttpsAgent } from 'node:https'
import { setTimer, type Clock } from './clock.js'
import { CalleePolicyError } from './errors.js'
import { httpRequestText } from './http.js'

/** How often a watched policy file is checked for changes, ms (the Go kit's default too). */
export const POLICY_POLL_MS = 2000
/** How often a policy URL is pulled, ms, jittered by ±10 % (the Go kit's default too). */
export const POLICY_PULL_MS = 30_000
/** The bound of one fetch of a policy URL, from the request to the last byte, ms. */
export const POLICY_FETCH_TIMEOUT_MS = 10_000
/** The largest policy read, file or answer (the Go kit's bound too). */
const MAX_POLICY_BYTES = 1 << 20

/** TLS towards a configuration server: its CA, and a client certificate for mutual TLS. */
export interface PolicyTls {
  readonly ca?: string | Buffer | undefined
  readonly cert?: string | Buffer | undefined
  readonly key?: string | Buffer | undefined
}

/** What a URL source needs besides the URL. */
export interface UrlSourceOptions {
  /** Allow `http://` (default false): only where the network to the configuration server is trusted. */
  readonly allowHttp?: boolean
  readonly tls?: PolicyTls
  /** Headers of every request (a configuration center's token): never logged. */
  readonly headers?: Readonly<Record<string, string>>
  /** Bound of one fetch, ms (default 10 000), on `clock`. */
  readonly timeoutMs?: number
  readonly clock: Clock
}

export interface PolicySource {
  /** What errors and logs call it: a path, or the URL without its secrets. */
  readonly name: string
  /** The path of a file source. */
  readonly path?: string
  read(): Promise<string>
  /** The delay before the next read after a success (failures 0) or the failures-th failure in a row. */
  after(intervalMs: number, failures: number): number
  readonly defaultIntervalMs: number
  close(): void
}

/** A source that starts with a URL scheme (`https://…`) is a URL; anything else is a file path. */
export const isUrlSource = (source: string | URL): boolean => source instanceof URL || /^[A-Za-z][A-Za-z0-9+.-]*:\/\//.test(source)

/**
 * Reads a policy file, which must be a regular file of at most 1 MiB: a FIFO at the path would block the
 * read (a libuv thread, and the process's exit, for ever), a device would never end. Opened non-blocking,
 * then judged by what it is.
 */
export async function readPolicyFile(path: string): Promise<string> {
  const refuse = (why: string): CalleePolicyError => new CalleePolicyError('ERR_POLICY_READ', path, '', `cannot read: ${why}`)
  let handle: FileHandle | undefined
  try {
    handle = await open(path, constants.O_RDONLY | constants.O_NONBLOCK)
    const stat = await handle.stat()
    if (!stat.isFile()) throw refuse('not a regular file')
    if (stat.size > MAX_POLICY_BYTES) throw refuse('larger than 1 MiB')
    return await handle.readFile('utf8')
  } catch (err) {
    if (err instanceof CalleePolicyError) throw err
    throw refuse((err as NodeJS.ErrnoException).code ?? 'error')
  } finally {
    await handle?.close()
  }
}

export function fileSource(path: string): PolicySource {
  return { name: path, path, read: () => readPolicyFile(path), after: (intervalMs) => intervalMs, defaultIntervalMs: POLICY_POLL_MS, close: () => undefined }
}

/**
 * A URL as logs may show it: scheme, host (lower case, without a default port) and path; no user
 * information, and a query only as `?redacted` — either may hold a secret.
 */
export function shownUrl(url: URL): string {
  return `${url.protocol}//${url.host}${url.pathname}${url.search === '' && !url.href.endsWith('?') ? '' : '?redacted'}`
}

/** Parses and checks a URL source (https, or http when allowed; a host; no fragment): a TypeError when it cannot be one. */
export function parseUrlSource(source: string | URL, allowHttp = false): { url: URL; shown: string } {
  let url: URL
  try {
    url = new URL(source)
  } catch {
    throw new TypeError('a callee policy URL must be a valid https:// URL')
  }
  const shown = shownUrl(url)
  if (url.protocol === 'http:' && !allowHttp) throw new TypeError(`${shown}: an http:// policy source needs allowHttp (whoever can change the answer decides who may call)`)
  if (url.protocol !== 'https:' && url.protocol !== 'http:') throw new TypeError(`${shown}: a callee policy URL must be https:// (or http:// with allowHttp)`)
  if (url.hostname === '') throw new TypeError(`${shown}: a callee policy URL needs a host`)
  if (url.hash !== '' || String(source).includes('#')) throw new TypeError(`${shown}: a callee policy URL has no fragment`)
  return { url, shown }
}

/** Why a fetch failed, without the URL. */
function describe(err: unknown): string {
  const e = err as NodeJS.ErrnoException
  if (e.code === 'ECONNREFUSED' || e.code === 'ENOTFOUND' || e.code === 'EHOSTUNREACH' || e.code === 'ENETUNREACH') return `unreachable: ${e.code}`
  if (e.message === 'response too large') return 'larger than 1 MiB'
  return e.code ?? e.message
}

export function urlSource(source: string | URL, options: UrlSourceOptions): PolicySource {
  const { url, shown } = parseUrlSource(source, options.allowHttp)
  const timeoutMs = options.timeoutMs ?? POLICY_FETCH_TIMEOUT_MS
  // A connection per fetch (one every 30 s): a kept-alive socket the server has dropped would fail the
  // next fetch with a reset, and report an outage twice.
  const agent = url.protocol === 'https:' ? new HttpsAgent({ keepAlive: false, ...options.tls }) : new HttpAgent({ keepAlive: false })
  const refuse = (why: string): CalleePolicyError => new CalleePolicyError('ERR_POLICY_READ', shown, '', `cannot fetch: ${why}`)
  let last: { etag: string | undefined; text: string } | undefined
  return {
    name: shown,
    defaultIntervalMs: POLICY_PULL_MS,
    // The interval after a success; after failures, 1 s doubling up to the interval; either jittered by
    // ±10 %, so that a fleet started together does not pull together.
    after: (intervalMs, failures) => (failures === 0 ? intervalMs : Math.min(1000 * 2 ** Math.min(failures - 1, 20), intervalMs)) * (0.9 + 0.2 * Math.random()),
    close: () => agent.destroy(),
    async read() {
      const abort = new AbortController()
      let timedOut = false
      const cancel = setTimer(
        options.clock,
        () => {
          timedOut = true
          abort.abort()
        },
        timeoutMs,
      )
      const held = last
      try {
        const res = await httpRequestText(url, {
          headers: { ...options.headers, accept: 'application/json', ...(held?.etag === undefined ? {} : { 'if-none-match': held.etag }) },
          agent,
          // The clock's timer bounds the fetch; this one only stands behind it.
          timeoutMs: timeoutMs + 1000,
          signal: abort.signal,
        })
        // A 304 means the answer whose ETag was sent; to a request that sent none it names no document.
        if (res.status === 304 && held?.etag !== undefined) return held.text
        if (res.status === 304) throw refuse('answered 304 to a request without If-None-Match')
        if (res.status >= 300 && res.status < 400) throw refuse(`answered ${res.status}: redirects are not followed (configure the final URL)`)
        if (res.status < 200 || res.status > 299) throw refuse(`answered ${res.status}`)
        // No encoding is asked for (no Accept-Encoding): an encoded answer is not the document.
        const encoding = res.headers['content-encoding']
        if (typeof encoding === 'string' && encoding.trim().toLowerCase() !== 'identity') throw refuse(`answered with Content-Encoding ${JSON.stringify(encoding.slice(0, 40))}, which was not asked for`)
        if (Buffer.byteLength(res.body) > MAX_POLICY_BYTES) throw refuse('larger than 1 MiB')
        // An empty ETag is none (as in Go): nothing to ask with.
        last = { etag: typeof res.headers.etag === 'string' && res.headers.etag !== '' ? res.headers.etag : undefined, text: res.body }
        return res.body
      } catch (err) {
        if (err instanceof CalleePolicyError) throw err
        throw refuse(timedOut ? `no complete answer within ${timeoutMs} ms` : describe(err))
      } finally {
        cancel()
      }
    },
  }
}
