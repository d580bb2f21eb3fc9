/** Real HTTPS/HTTP requests for tests: a fresh TLS connection per request unless an agent is given. */
import { request as httpRequest, type IncomingMessage } from 'node:http'
import { request as httpsRequest, type Agent } from 'node:https'
import type { KeyPairPem } from '../../src/pki/dev-pki.js'

export interface Response {
  readonly status: number
  readonly headers: Record<string, string | string[] | undefined>
  readonly text: string
  json<T = Record<string, unknown>>(): T
}

export interface RequestOptions {
  readonly method?: string
  readonly path: string
  readonly headers?: Record<string, string | number>
  readonly body?: string | Buffer
  readonly client?: KeyPairPem | undefined
  readonly ca?: string
  readonly agent?: Agent
}

function collect(res: IncomingMessage, resolve: (r: Response) => void, reject: (e: Error) => void): void {
  const chunks: Buffer[] = []
  res.on('data', (c: Buffer) => chunks.push(c))
  res.on('error', reject)
  res.on('end', () => {
    const text = Buffer.concat(chunks).toString('utf8')
    resolve({ status: res.statusCode ?? 0, headers: res.headers, text, json: () => JSON.parse(text) })
  })
}

export function httpsCall(port: number, options: RequestOptions): Promise<Response> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest(
      {
        host: '127.0.0.1',
        servername: 'localhost',
        port,
        method: options.method ?? 'GET',
        path: options.path,
        headers: options.headers,
        ca: options.ca,
        ...(options.client === undefined ? {} : { cert: options.client.certPem, key: options.client.keyPem }),
        agent: options.agent ?? false,
      },
      (res) => collect(res, resolve, reject),
    )
    req.on('error', reject)
    req.end(options.body)
  })
}

export function httpCall(port: number, options: Omit<RequestOptions, 'client' | 'ca' | 'agent'>): Promise<Response> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      { host: '127.0.0.1', port, method: options.method ?? 'GET', path: options.path, headers: options.headers, agent: false },
      (res) => collect(res, resolve, reject),
    )
    req.on('error', reject)
    req.end(options.body)
  })
}
