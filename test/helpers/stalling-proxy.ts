/**
 * A TCP proxy in front of a TLS server that lets a handshake stop half way: it forwards the client's first
 * TLS record (the ClientHello) and the server's answers, then holds everything else the client sends (its
 * certificate, its Finished) until `release()`. A test can so change the server's trust material while a
 * handshake is in progress, after the server has read the ClientHello and before it sees the certificate.
 */
import { connect, createServer, type Socket } from 'node:net'
import type { Test } from 'tap'

export interface StallingProxy {
  readonly port: number
  /** Resolves when the server has answered the ClientHello (its ServerHello reached the proxy). */
  readonly serverAnswered: Promise<void>
  /** Sends what the client has sent since its ClientHello, and everything after it. */
  release(): void
}

/** One proxied connection to `targetPort` on 127.0.0.1, closed with the test. */
export async function stallingProxy(t: Test, targetPort: number): Promise<StallingProxy> {
  let answered!: () => void
  const serverAnswered = new Promise<void>((resolve) => (answered = resolve))
  let release: () => void = () => undefined
  const sockets: Socket[] = []
  const server = createServer((client) => {
    const upstream = connect(targetPort, '127.0.0.1')
    sockets.push(client, upstream)
    for (const s of [client, upstream]) s.on('error', () => undefined)
    let pending = Buffer.alloc(0)
    let forwardedHello = false
    let released = false
    client.on('data', (chunk: Buffer) => {
      if (released) {
        upstream.write(chunk)
        return
      }
      pending = Buffer.concat([pending, chunk])
      // A TLS record: type (1 byte), version (2), length (2), then `length` bytes.
      if (!forwardedHello && pending.length >= 5 && pending.length >= 5 + pending.readUInt16BE(3)) {
        const end = 5 + pending.readUInt16BE(3)
        upstream.write(pending.subarray(0, end))
        pending = pending.subarray(end)
        forwardedHello = true
      }
    })
    upstream.on('data', (chunk: Buffer) => {
      client.write(chunk)
      answered()
    })
    client.on('close', () => upstream.destroy())
    upstream.on('close', () => client.destroy())
    release = () => {
      released = true
      if (pending.length > 0) upstream.write(pending)
      pending = Buffer.alloc(0)
    }
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => {
    for (const s of sockets) s.destroy()
    server.close()
  })
  return { port: (server.address() as { port: number }).port, serverAnswered, release: () => release() }
}
