/**
 * `serviceFetch`: a `fetch` for calling one service, as a calling service uses `fetch` today. Every request
 * carries a token for the callee's audience in `X-Service-Token` and goes over mTLS with the certificate the
 * token is bound to: token and connection come from the same TLS material (`TokenClient.tls`), so a renewed
 * certificate moves both together — connections opened before a renewal finish their requests with tokens of
 * their own certificate, new requests use new connections. A 401 to a token this helper supplied (a revoked
 * signing key, a token the callee no longer accepts) is retried once with a fresh token: the token is dropped
 * (`TokenClient.invalidate`, at most once per key per cooldown) and the request sent again if the new token
 * differs. Never a loop, never for 403. A body given as a stream cannot be sent twice: such a request is not
 * retried (its 401 is returned). Built on node:https (HTTP/1.1, keep-alive); redirects are returned, never
 * followed (the token is for this callee only).
 */
import type { IncomingMessage } from 'node:http'
import { Agent, request } from 'node:https'
import { Readable } from 'node:stream'
import type { TlsMaterial } from './tls-files.js'
import type { TokenClient } from './token-client.js'

/** The request header that carries the token. */
const SERVICE_TOKEN_HEADER = 'x-service-token'

/** A request body: anything `fetch` takes, or a Node stream / async iterable of bytes (sent once, never retried). */
export type ServiceFetchBody = NonNullable<RequestInit['body']> | Readable | AsyncIterable<Uint8Array>

/** What a request may say: `fetch`'s method, headers, body and signal. */
export interface ServiceFetchInit {
  readonly method?: string
  readonly headers?: RequestInit['headers']
  readonly body?: ServiceFetchBody | null
  /** Aborts the request (`AbortSignal.timeout(ms)` for a deadline; there is no default one). */
  readonly signal?: AbortSignal | null
}

/** A `fetch` bound to one callee's audience. */
export type ServiceFetch = (input: string | URL, init?: ServiceFetchInit) => Promise<Response>

export interface ServiceFetchOptions {
  /** Sockets per callee host and certificate (default 64). */
  readonly maxSockets?: number
  /** Told when a 401 was retried with a fresh token (metrics). Must not throw (a throw is ignored). */
  readonly onRetry?: (info: { readonly audience: string; readonly method: string; readonly path: string }) => void
}

interface PreparedBody {
  /** The whole body, when it can be sent again. */
  readonly bytes?: Buffer
  /** A body that streams (sent once). */
  readonly stream?: Readable
  readonly contentType?: string | null
}

const isStream = (body: unknown): body is ReadableStream | Readable | AsyncIterable<Uint8Array> =>
  body instanceof ReadableStream || body instanceof Readable || (typeof body === 'object' && body !== null && Symbol.asyncIterator in body && !(body instanceof Blob))

/** The body as bytes when it is a value (`fetch`'s own encoding: strings, forms, blobs, buffers), else a stream. */
async function prepare(body: ServiceFetchBody | null | undefined): Promise<PreparedBody> {
  if (body === undefined || body === null) return {}
  if (isStream(body)) return { stream: body instanceof ReadableStream ? Readable.fromWeb(body as never) : Readable.from(body) }
  const encoded = new Response(body as RequestInit['body'])
  return { bytes: Buffer.from(await encoded.arrayBuffer()), contentType: encoded.headers.get('content-type') }
}

/** One callee agent per TLS material, destroyed once a renewal replaced it and its requests are done. */
interface Pool {
  readonly agent: Agent
  active: number
  retired: boolean
}

/**
 * A `fetch` for one callee: `https` URLs only, `X-Service-Token` for `audience` (and `scopes`) from `tokens`,
 * mTLS with `tokens.tls`. Resolves with a standard `Response`; rejects like `fetch` (a `TypeError` whose
 * `cause` is the network error, an `AbortError`), or with the `TokenClientError` when no token can be had.
 */
export function serviceFetch(tokens: TokenClient, audience: string, scopes?: string | readonly string[], options: ServiceFetchOptions = {}): ServiceFetch {
  const pools = new Map<TlsMaterial, Pool>()
  const maxSockets = options.maxSockets ?? 64

  const poolFor = (material: TlsMaterial): Pool => {
    let pool = pools.get(material)
    if (pool === undefined) {
      pool = { agent: new Agent({ keepAlive: true, maxSockets, ca: material.ca, cert: material.cert, key: material.key }), active: 0, retired: false }
      pools.set(material, pool)
    }
    // A renewal: the connections of other material take no new request and close when their last one ends.
    for (const [other, old] of pools) {
      if (other === material || other === tokens.tls) continue
      old.retired = true
      pools.delete(other)
      if (old.active === 0) old.agent.destroy()
    }
    return pool
  }

  const send = (url: URL, init: ServiceFetchInit, headers: Headers, body: PreparedBody, material: TlsMaterial, token: string): Promise<IncomingMessage> => {
    const pool = poolFor(material)
    const outgoing: Record<string, string> = Object.fromEntries(headers)
    outgoing[SERVICE_TOKEN_HEADER] = token
    if (body.bytes !== undefined) outgoing['content-length'] = String(body.bytes.length)
    pool.active++
    let settled = false
    const done = (): void => {
      if (settled) return
      settled = true
      if (--pool.active === 0 && pool.retired) pool.agent.destroy()
    }
    return new Promise((resolve, reject) => {
      const req = request(url, { method: init.method ?? 'GET', headers: outgoing, agent: pool.agent, ...(init.signal ? { signal: init.signal } : {}) }, (res) => {
        res.once('close', done)
        resolve(res)
      })
      req.once('error', (err) => {
        done()
        reject(err.name === 'AbortError' ? err : new TypeError('fetch failed', { cause: err }))
      })
      if (body.stream !== undefined) body.stream.once('error', (err) => req.destroy(err)).pipe(req)
      else req.end(body.bytes)
    })
  }

  return async (input, init = {}) => {
    const url = new URL(input)
    if (url.protocol !== 'https:') throw new TypeError('serviceFetch: only https URLs: a token never travels in clear')
    const method = (init.method ?? 'GET').toUpperCase()
    if ((method === 'GET' || method === 'HEAD') && init.body !== undefined && init.body !== null) throw new TypeError(`serviceFetch: a ${method} request has no body`)
    const body = await prepare(init.body)
    const headers = new Headers(init.headers ?? undefined)
    if (body.contentType && !headers.has('content-type')) headers.set('content-type', body.contentType)

    const material = tokens.tls
    const token = await tokens.tokenFor(material, audience, scopes)
    const first = await send(url, init, headers, body, material, token)
    if (first.statusCode !== 401) return toResponse(first, method)
    // Once, with another token: never for a token the cooldown kept, never again after this. A streamed
    // body cannot be sent again: its token is dropped all the same, for the next request.
    if (!tokens.invalidate(audience, scopes, token) || body.stream !== undefined) return toResponse(first, method)
    const next = tokens.tls
    const fresh = await tokens.tokenFor(next, audience, scopes).catch(() => undefined)
    if (fresh === undefined || fresh === token) return toResponse(first, method)
    // The 401's body: a bare 401 is drained so that its connection is reused; anything longer (or of no
    // stated length) is not read at all — the connection is closed instead.
    if (Number(first.headers['content-length'] ?? Infinity) <= 4096) first.resume()
    else first.destroy()
    try {
      options.onRetry?.({ audience, method, path: url.pathname })
    } catch {
      // the listener's own fault
    }
    return toResponse(await send(url, init, headers, body, next, fresh), method)
  }
}

/** Node's answer as a `Response` whose body streams. */
function toResponse(res: IncomingMessage, method: string): Response {
  const status = res.statusCode ?? 0
  const headers = new Headers()
  for (let i = 0; i + 1 < res.rawHeaders.length; i += 2) headers.append(res.rawHeaders[i] as string, res.rawHeaders[i + 1] as string)
  const empty = method === 'HEAD' || status === 204 || status === 205 || status === 304
  if (empty) res.resume()
  return new Response(empty ? null : (Readable.toWeb(res) as ReadableStream), { status, statusText: res.statusMessage ?? '', headers })
}
