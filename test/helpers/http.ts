/** Real HTTPS/HTTP requests for tests: a fresh TLS connection per request unless an agent is given. */
import { request as httpRequest, type IncomingMessage } from 'node:http'
import { request as httpsRequest, type Agent } from 'node:https'
import { createServer, type Socket } from 'node:net'
import { connect as tlsConnect, type TLSSocket } from 'node:tls'
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
): { finish(): void; written: Promise<void>; done: Promise<{ status: number; headers: Record<string, string | string[] | undefined> }> } {
  let finish!: () => void
  let wrote!: () => void
  const written = new Promise<void>((resolve) => (wrote = resolve))
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
    req.write(options.body.slice(0, half), () => wrote())
    finish = () => req.end(options.body.slice(half))
  })
  return { done, written, finish: () => finish() }
}

/** A port that was free a moment ago (for a child process whose port 0 cannot be queried). */
export async function freePort(): Promise<number> {
  const server = createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as { port: number }
  await new Promise((resolve) => server.close(resolve))
  return port
}

export interface RawResponse {
  readonly status: number
  readonly headers: Record<string, string>
  readonly body: string
}

/**
 * One TLS connection driven by hand: each `send` writes raw HTTP/1.1 bytes and reads one response from
 * the same connection, so a test knows exactly which connection a request used. `closed` settles when the
 * server closes it.
 */
export async function openTlsConnection(
  port: number,
  options: {
    ca: string | Buffer
    client?: KeyPairPem
    session?: Buffer
    /** Handshake over this TCP connection (already open) instead of a new one to `port`. */
    socket?: Socket
    /** The one TLS version to offer. */
    version?: 'TLSv1.2' | 'TLSv1.3'
  },
): Promise<{
  socket: TLSSocket
  send(raw: string): Promise<RawResponse>
  closed: Promise<void>
  end(): void
  /** The first session the server gives (TLS 1.2: in the handshake; TLS 1.3: just after it), to resume with. */
  ticket: Promise<Buffer>
}> {
  const socket = tlsConnect({
    ...(options.socket === undefined ? { host: '127.0.0.1', port } : { socket: options.socket }),
    servername: 'localhost',
    ca: options.ca,
    ...(options.client === undefined ? {} : { cert: options.client.certPem, key: options.client.keyPem }),
    ...(options.session === undefined ? {} : { session: options.session }),
    ...(options.version === undefined ? {} : { minVersion: options.version, maxVersion: options.version }),
  })
  const ticket = new Promise<Buffer>((resolve) => socket.once('session', resolve))
  await new Promise<void>((resolve, reject) => {
    socket.once('secureConnect', () => resolve())
    socket.once('error', reject)
  })
  socket.on('error', () => undefined)
  let buffered = Buffer.alloc(0)
  let waiting: ((r: RawResponse | Error) => void) | undefined
  const tryParse = (): void => {
    if (waiting === undefined) return
    const end = buffered.indexOf('\r\n\r\n')
    if (end < 0) return
    const head = buffered.subarray(0, end).toString('latin1').split('\r\n')
    const headers: Record<string, string> = {}
    for (const line of head.slice(1)) {
      const i = line.indexOf(':')
      headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim()
    }
    const length = Number(headers['content-length'] ?? 0)
    if (buffered.length < end + 4 + length) return
    const body = buffered.subarray(end + 4, end + 4 + length).toString('utf8')
    buffered = buffered.subarray(end + 4 + length)
    const resolve = waiting
    waiting = undefined
    resolve({ status: Number((head[0] ?? '').split(' ')[1]), headers, body })
  }
  socket.on('data', (chunk: Buffer) => {
    buffered = Buffer.concat([buffered, chunk])
    tryParse()
  })
  const closed = new Promise<void>((resolve) =>
    socket.once('close', () => {
      waiting?.(new Error('connection closed before a response'))
      waiting = undefined
      resolve()
    }),
  )
  return {
    socket,
    closed,
    ticket,
    end: () => socket.end(),
    send: (raw) =>
      new Promise<RawResponse>((resolve, reject) => {
        if (socket.destroyed) {
          reject(new Error('connection closed before a response'))
          return
        }
        waiting = (r) => (r instanceof Error ? reject(r) : resolve(r))
        socket.write(raw)
        tryParse()
      }),
  }
}

/** A raw POST /token request for openTlsConnection. */
export function rawTokenRequest(body = '{"audience":"inventory-service"}'): string {
  return `POST /token HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`
}
