/** Minimal HTTP(S) client of the SDK: one request, the whole body, a timeout. */
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
    tls?: { ca?: string | Buffer | undefined; cert?: string | Buffer | undefined; key?: string | Buffer | undefined }
  },
): Promise<HttpResult> {
  return new Promise((resolve, reject) => {
    const send = url.protocol === 'https:' ? httpsRequest : httpRequest
    const req = send(
      url,
      {
        method: options.method ?? 'GET',
        headers: options.headers,
        // No agent given: a connection of its own, never one from the global keep-alive pool.
        agent: options.agent ?? false,
        ...(url.protocol === 'https:' ? (options.tls ?? {}) : {}),
        timeout: options.timeoutMs ?? 5000,
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
        res.on('error', reject)
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }))
      },
    )
    req.on('timeout', () => req.destroy(new Error('timeout')))
    req.on('error', reject)
    req.end(options.body)
  })
}
