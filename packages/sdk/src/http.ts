/**
 * Minimal HTTP(S) client of the SDK: one request, the whole body, a deadline. The deadline bounds the
 * whole exchange (a server that trickles a byte now and then never resets it), not only idle time.
 */
import { request as httpRequest, type Agent as HttpAgent } from 'node:http'
import { request as httpsRequest, type Agent as HttpsAgent } from 'node:https'

export interface HttpResult {
  readonly status: number
  readonly headers: Record<string, string | string[] | undefined>
  readonly body: string
}

const MAX_BODY = 1 << 20

export function httpRequestText(
  url: URL,
  options: {
    method?: string
    headers?: Record<string, string>
    body?: string
    agent?: HttpAgent | HttpsAgent
    timeoutMs?: number
    /** Aborts the request (its promise rejects). */
    signal?: AbortSignal
    tls?: { ca?: string | Buffer | undefined; cert?: string | Buffer | undefined; key?: string | Buffer | undefined }
  },
): Promise<HttpResult> {
  return new Promise((resolve, reject) => {
    const timeoutMs = options.timeoutMs ?? 5000
    const send = url.protocol === 'https:' ? httpsRequest : httpRequest
    const req = send(
      url,
      {
        method: options.method ?? 'GET',
        headers: options.headers,
        // No agent given: a connection of its own, never one from the global keep-alive pool.
        agent: options.agent ?? false,
        ...(options.signal === undefined ? {} : { signal: options.signal }),
        ...(url.protocol === 'https:' ? (options.tls ?? {}) : {}),
      },
      (res) => {
        const chunks: Buffer[] = []
        let size = 0
        res.on('data', (c: Buffer) => {
          size += c.length
          if (size > MAX_BODY) {
            req.destroy(new Error('response too large'))
            return
          }
          chunks.push(c)
        })
        res.on('error', fail)
        res.on('end', () => {
          clearTimeout(deadline)
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') })
        })
      },
    )
    const deadline = setTimeout(() => req.destroy(Object.assign(new Error(`no complete answer within ${timeoutMs} ms`), { code: 'ETIMEDOUT' })), timeoutMs)
    deadline.unref()
    function fail(err: Error): void {
      clearTimeout(deadline)
      reject(err)
    }
    req.on('error', fail)
    req.end(options.body)
  })
}
