/**
 * Every connection of the main listener from accept to close, and the one place that decides when a
 * connection's trust ends:
 *   - trust: a connection accepted under a client CA bundle or CRL that has since changed is *retired*.
 *     Its certificate is checked again against the material in force before a request on it is served,
 *     and the answer closes it, so the client's next request comes with a fresh handshake. Nothing is
 *     reset: every request that reached the server gets an answer. A connection's trust generation is the
 *     one in force when it was *accepted*, not when its handshake ended: Node gives a TLS socket the
 *     server's secure context (CA bundle, CRLs) at accept, so a client that opens TCP before a reload and
 *     sends its ClientHello after it is verified against the old material, and must be re-checked.
 *   - age: a connection older than `maxAgeMs` is closed after its current answer, so long-lived clients
 *     re-handshake now and then (as proxies' max connection duration does).
 *   - drain (shutdown): answers carry `Connection: close`; connections without a request (idle keep-alive
 *     ones, ones mid-handshake, ones that never spoke or whose request headers are not complete) are
 *     closed at once; a request whose headers arrived is served if its body arrives in time; whatever is
 *     still open at the deadline is destroyed.
 * The certificate's own validity period is checked per request by identity/peer.ts.
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Server as NetServer, Socket } from 'node:net'
import type { TLSSocket } from 'node:tls'
import type { Clock } from '../clock.js'
import { presentedChain, type ClientTrust } from './trust.js'

interface Connection {
  readonly raw: Socket
  /** The socket requests arrive on: the TLS socket once the handshake is done (plain HTTP: the raw one). */
  socket: Socket | undefined
  /** Clock time of the handshake (ms). */
  born: number
  /** The trust generation in force at accept: the secure context the handshake is verified against. */
  readonly generation: number
  /** The request being received or answered, if any. */
  request: IncomingMessage | undefined
  /** Set when the next answer must close the connection (e.g. its certificate failed a check). */
  closeAfterAnswer: boolean
  /** The re-check of a retired connection's certificate, once per generation. */
  recheck: { readonly generation: number; readonly trusted: Promise<boolean> } | undefined
}

export interface LifetimeOptions {
  readonly clock: Clock
  /** Close a connection after its current answer once it is older than this, ms (0: no limit). */
  readonly maxAgeMs: number
  /** A plain HTTP server (the ops listener): requests arrive on the raw socket, there is no trust to retire. */
  readonly plain?: boolean
}

/** Why a connection's next answer closes it, or undefined when it stays open. */
export type CloseReason = 'draining' | 'retired' | 'max_age' | 'refused'

const endpoint = (socket: Socket): string | undefined =>
  socket.remoteAddress === undefined ? undefined : `${socket.remoteAddress}|${socket.remotePort ?? ''}`

export class ConnectionLifetimes {
  readonly #options: LifetimeOptions
  /** Open connections by remote endpoint (unique among live TCP connections of one listener). */
  readonly #open = new Map<string, Connection>()
  readonly #bySocket = new WeakMap<Socket, Connection>()
  #generation = 0
  #trust: ClientTrust | undefined
  #draining = false
  #deadline: NodeJS.Timeout | undefined

  constructor(server: NetServer, options: LifetimeOptions) {
    this.#options = options
    server.on('connection', (raw: Socket) => {
      // (Refused at accept by the admission: nothing to track.)
      if (raw.destroyed) return
      if (this.#draining) {
        raw.destroy()
        return
      }
      const key = endpoint(raw)
      if (key === undefined) return
      const connection: Connection = {
        raw,
        socket: undefined,
        born: options.clock.now(),
        generation: this.#generation,
        request: undefined,
        closeAfterAnswer: false,
        recheck: undefined,
      }
      this.#open.set(key, connection)
      if (options.plain === true) {
        connection.socket = raw
        this.#bySocket.set(raw, connection)
      }
      raw.once('close', () => {
        if (this.#open.get(key) === connection) this.#open.delete(key)
      })
    })
    server.on('secureConnection', (tls: TLSSocket) => {
      const key = endpoint(tls)
      const connection = key === undefined ? undefined : this.#open.get(key)
      if (connection === undefined) return
      connection.socket = tls
      // Age counts from the handshake that authenticated the peer; trust from the accept (see above).
      connection.born = options.clock.now()
      this.#bySocket.set(tls, connection)
    })
    server.on('request', (request: IncomingMessage, response: ServerResponse) => {
      const connection = this.#bySocket.get(request.socket)
      if (connection === undefined) return
      connection.request = request
      response.once('close', () => {
        if (connection.request === request) connection.request = undefined
      })
    })
  }

  /** Open connections (handshaking ones included). */
  get size(): number {
    return this.#open.size
  }

  /** True from the start of the drain (shutdown): connections closed from then on were closed by the server. */
  get draining(): boolean {
    return this.#draining
  }

  /** The client CA bundle or CRL changed: connections opened before are retired (see the module comment). */
  retire(trust: ClientTrust): void {
    this.#generation++
    this.#trust = trust
  }

  /** True when the socket was accepted under trust material that is no longer in force. */
  isRetired(socket: TLSSocket): boolean {
    const connection = this.#bySocket.get(socket)
    return connection !== undefined && connection.generation < this.#generation
  }

  /**
   * Whether the peer of `socket` is trusted by the material in force: true for a connection made under it;
   * for a retired one, its presented chain is checked again (once per trust change).
   */
  stillTrusted(socket: TLSSocket): Promise<boolean> {
    const connection = this.#bySocket.get(socket)
    if (connection === undefined || connection.generation === this.#generation || this.#trust === undefined) return Promise.resolve(true)
    if (connection.recheck?.generation !== this.#generation) {
      const trust = this.#trust
      connection.recheck = { generation: this.#generation, trusted: trust.accepts(presentedChain(socket), new Date(this.#options.clock.now())) }
    }
    return connection.recheck.trusted
  }

  /** The next answer on this socket closes the connection. */
  closeAfterAnswer(socket: Socket): void {
    const connection = this.#bySocket.get(socket)
    if (connection !== undefined) connection.closeAfterAnswer = true
  }

  /** Why the answer being sent on `socket` must close its connection, or undefined. */
  closeReason(socket: Socket): CloseReason | undefined {
    if (this.#draining) return 'draining'
    const connection = this.#bySocket.get(socket)
    if (connection === undefined) return undefined
    if (connection.closeAfterAnswer) return 'refused'
    if (connection.generation < this.#generation) return 'retired'
    const { maxAgeMs, clock } = this.#options
    if (maxAgeMs > 0 && clock.now() - connection.born >= maxAgeMs) return 'max_age'
    return undefined
  }

  /**
   * Shutdown: from now on answers close their connections and new connections are refused; connections
   * without a request (no complete request headers) are closed now; at `deadlineMs` every connection left is
   * destroyed, whatever its client does, and `onDeadline` is told how many that was.
   */
  drain(deadlineMs: number, onDeadline?: (destroyed: number) => void): void {
    if (this.#draining) return
    this.#draining = true
    for (const connection of this.#open.values()) {
      if (connection.request === undefined) destroy(connection)
    }
    this.#deadline = setTimeout(() => {
      const left = [...this.#open.values()]
      for (const connection of left) destroy(connection)
      onDeadline?.(left.length)
    }, deadlineMs)
    this.#deadline.unref()
  }

  /** Clears the drain deadline once everything is closed. */
  stop(): void {
    if (this.#deadline !== undefined) clearTimeout(this.#deadline)
    this.#deadline = undefined
  }
}

function destroy(connection: Connection): void {
  ;(connection.socket ?? connection.raw).destroy()
  if (connection.socket !== undefined) connection.raw.destroy()
}
