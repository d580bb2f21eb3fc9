/** Real HTTPS/HTTP requests for tests: a fresh TLS connection per request unless an agent is given. */
import { request as httpRequest, type IncomingMessage } from 'node:http'
import { request as httpsRequest, type Agent } from 'node:https'
import { createServer } from 'node:net'
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

/**
 * A request whose body is only half sent: it is in flight (headers read, handler waiting for the body)
 * until `finish()` sends the rest. For drain and reload tests.
 */
export function halfSentRequest(
  port: number,
  options: { path?: string; body: string; ca: string | Buffer; client?: KeyPairPem; agent?: Agent },
): { finish(): void; done: Promise<{ status: number; headers: Record<string, string | string[] | undefined> }> } {
  let finish!: () => void
  const done = new Promise<{ status: number; headers: Record<string, string | string[] | undefined> }>((resolve, reject) => {
    const req = httpsRequest(
      {
        host: '127.0.0.1',
        servername: 'localhost',
        port,
        method: 'POST',
        path: options.path ?? '/token',
        ca: options.ca,
        ...(options.client === undefined ? {} : { cert: options.client.certPem, key: options.client.keyPem }),
        agent: options.agent ?? false,
        headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(options.body) },
      },
      (res) => {
        res.resume()
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers }))
      },
    )
    req.on('error', reject)
    const half = Math.floor(options.body.length / 2)
    req.write(options.body.slice(0, half))
    finish = () => req.end(options.body.slice(half))
  })
  return { done, finish: () => finish() }
}

/** A port that was free a moment ago (for a child process whose port 0 cannot be queried). */
export async function freePort(): Promise<number> {
  const server = createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as { port: number }
  await new Promise((resolve) => server.close(resolve))
  return port
}
