/**
 * Who may hold a socket on the main listener. A socket that has not finished its TLS handshake has proved
 * nothing, so it must never take the place of a caller that has:
 *   - authenticated (handshaken) connections have their budget, `AUTHZ_MAX_CONNECTIONS`: at it, new
 *     connections are refused at accept, and nothing unauthenticated counts against it;
 *   - sockets still in their handshake have a budget of their own, `AUTHZ_MAX_HANDSHAKES`, and at most
 *     `AUTHZ_MAX_HANDSHAKES_PER_SOURCE` of them per source address (an IPv6 /64). A full budget never
 *     refuses the newcomer: it closes the oldest handshaking socket of the source that holds the most
 *     (or of the newcomer's own source, at its limit). A real handshake takes milliseconds; a silent socket
 *     waits to be evicted;
 *   - handshake work per source is bounded: each connection of a source that ends without authenticating
 *     (refused, abandoned, evicted, silent until the handshake timeout) takes a token from the source's
 *     bucket, refilled at `AUTHZ_HANDSHAKE_RATE_PER_SOURCE` per second (burst: 5 s worth), into debt if
 *     many ended at once. While the bucket is empty, new connections of that source are closed at accept,
 *     before OpenSSL has read a byte: a replayed ClientHello costs the server its ECDHE and signature only
 *     that many times a second on average, however many sockets replay it in parallel. A handshake that
 *     authenticates takes nothing, so callers with a valid certificate are never limited, however many
 *     connections they open at once.
 * Many sources at once (a botnet) can still outrun the handshake capacity: only a layer-4 limit in front
 * (connection rate per source at the load balancer, SYN cookies) helps there; the README gives the figures.
 */
import { isIP, Socket, type Server as NetServer } from 'node:net'
import type { TLSSocket } from 'node:tls'
import type { Logger } from 'pino'
import { systemClock } from '../clock.js'
import type { Metrics } from '../metrics.js'
import { RateLimiter } from '../rate-limit.js'
import { LogSummary } from '@authz/sdk'

export interface AdmissionLimits {
  /** Authenticated connections open at once (AUTHZ_MAX_CONNECTIONS). */
  readonly maxConnections: number
  /** Sockets in their TLS handshake at once, all sources together (AUTHZ_MAX_HANDSHAKES). */
  readonly maxHandshakes: number
  /** Sockets in their TLS handshake at once from one source (AUTHZ_MAX_HANDSHAKES_PER_SOURCE). */
  readonly maxHandshakesPerSource: number
  /** Connections per second per source that may end without authenticating; 0: no limit (AUTHZ_HANDSHAKE_RATE_PER_SOURCE). */
  readonly handshakeRatePerSource: number
}

/** Why the server closed a socket before or right after its handshake (`authz_tls_connections_shed_total{reason}`). */
export type ShedReason = 'max_connections' | 'handshake_budget' | 'source_handshakes' | 'source_rate'
export const SHED_REASONS: readonly ShedReason[] = ['max_connections', 'handshake_budget', 'source_handshakes', 'source_rate']

/** The seconds of handshake rate a source may spend at once. */
const BURST_SECONDS = 5

/** An IPv6 address as its eight groups of four hex digits. */
function ipv6Groups(address: string): string[] {
  const [head = '', tail] = address.split('%')[0]?.split('::') ?? []
  const left = head === '' ? [] : head.split(':')
  const right = tail === undefined || tail === '' ? [] : tail.split(':')
  const groups = tail === undefined ? left : [...left, ...Array<string>(8 - left.length - right.length).fill('0'), ...right]
  return groups.map((g) => g.padStart(4, '0').toLowerCase())
}

/**
 * The source a socket's budget is counted against: the IPv4 address (IPv4-mapped IPv6 included), or the
 * /64 of an IPv6 address (one host is routinely given a whole /64 to pick addresses from).
 */
export function sourceOf(address: string | undefined): string {
  if (address === undefined) return 'unknown'
  const mapped = /^::ffff:(\d{1,3}(?:\.\d{1,3}){3})$/i.exec(address)?.[1]
  if (mapped !== undefined) return mapped
  if (isIP(address) !== 6) return address
  return `${ipv6Groups(address).slice(0, 4).join(':')}::/64`
}

/**
 * The TCP socket under a server-side TLS socket. Node keeps it as `_parent` (since 0.11, in Deno and Bun
 * too); it is the only link from a TLS socket whose handshake failed back to the connection it came on.
 */
export function rawSocketOf(tls: TLSSocket): Socket | undefined {
  const parent = (tls as TLSSocket & { _parent?: unknown })._parent
  return parent instanceof Socket ? parent : undefined
}

interface Handshaking {
  readonly source: string
}

export class HandshakeAdmission {
  readonly #limits: AdmissionLimits
  readonly #metrics: Metrics
  readonly #log: LogSummary
  /** Sockets in their handshake, per source, oldest first (a Map keeps insertion order). */
  readonly #handshaking = new Map<string, Map<Socket, Handshaking>>()
  #handshakingCount = 0
  readonly #established = new WeakSet<Socket>()
  #establishedCount = 0
  /** Sockets this server closed on purpose: their end is not a handshake failure. */
  readonly #shed = new WeakSet<Socket>()
  readonly #rate: RateLimiter

  constructor(server: NetServer, limits: AdmissionLimits, metrics: Metrics, logger: Logger) {
    this.#limits = limits
    this.#metrics = metrics
    this.#rate = new RateLimiter(limits.handshakeRatePerSource, systemClock, limits.handshakeRatePerSource * BURST_SECONDS)
    this.#log = new LogSummary({
      logger,
      event: 'connections_shed',
      message: 'connection closed at accept or in its handshake: a connection budget is full (see authz_tls_connections_shed_total)',
    })
    for (const reason of SHED_REASONS) metrics.tlsConnectionsShed.inc({ reason }, 0)
    this.#gauges()
    // Node's TLS server wraps each accepted TCP connection in a TLS socket from a 'connection' listener of
    // its own. Admission runs before it, and calls it only for what it admits: a connection refused at
    // accept costs no TLS state (half the cost of a refusal under a flood of reconnects).
    const wrappers = server.listeners('connection')
    if (wrappers.length !== 1) throw new TypeError('HandshakeAdmission must be the first to listen to a TLS server’s connections')
    const wrap = wrappers[0] as (raw: Socket) => void
    server.removeListener('connection', wrap)
    server.prependListener('connection', (raw: Socket) => {
      if (this.#accept(raw)) wrap.call(server, raw)
    })
    server.on('secureConnection', (tls: TLSSocket) => this.#authenticated(tls))
  }

  /** True when this server closed the socket itself (a budget), so its end says nothing about the peer. */
  shedSocket(raw: Socket): boolean {
    return this.#shed.has(raw)
  }

  /** Sockets in their handshake now. */
  get handshaking(): number {
    return this.#handshakingCount
  }

  /** Authenticated connections open now. */
  get established(): number {
    return this.#establishedCount
  }

  close(): void {
    this.#log.close()
  }

  /** Whether `raw` may start its handshake (or was closed). */
  #accept(raw: Socket): boolean {
    if (raw.destroyed) return false
    const source = sourceOf(raw.remoteAddress)
    if (this.#establishedCount >= this.#limits.maxConnections) return this.#shedNow(raw, source, 'max_connections')
    if (!this.#rate.allows(source)) return this.#shedNow(raw, source, 'source_rate')
    let mine = this.#handshaking.get(source)
    if (mine !== undefined && mine.size >= this.#limits.maxHandshakesPerSource) this.#evictOldest(mine, 'source_handshakes')
    if (this.#handshakingCount >= this.#limits.maxHandshakes) this.#evictOldest(this.#busiest(), 'handshake_budget')
    if (mine === undefined) {
      mine = new Map()
      this.#handshaking.set(source, mine)
    }
    mine.set(raw, { source })
    this.#handshakingCount++
    raw.once('close', () => {
      // Closed before authenticating, and not by a budget: the source spent handshake work for nothing.
      if (this.#handshakeOver(raw, source) && !this.#shed.has(raw)) this.#rate.charge(source)
      if (this.#established.has(raw)) {
        this.#established.delete(raw)
        this.#establishedCount--
      }
      this.#gauges()
    })
    this.#gauges()
    return true
  }

  #authenticated(tls: TLSSocket): void {
    const raw = rawSocketOf(tls)
    // Only an authenticated handshake gets here (rejectUnauthorized).
    if (raw === undefined || !this.#handshakeOver(raw, sourceOf(raw.remoteAddress))) return
    if (this.#establishedCount >= this.#limits.maxConnections) {
      this.#shedNow(raw, sourceOf(raw.remoteAddress), 'max_connections')
      tls.destroy()
      return
    }
    this.#established.add(raw)
    this.#establishedCount++
    this.#gauges()
  }

  /** Takes `raw` off the handshaking lists; false when it was not on them. */
  #handshakeOver(raw: Socket, source: string): boolean {
    const mine = this.#handshaking.get(source)
    if (mine === undefined || !mine.delete(raw)) return false
    this.#handshakingCount--
    if (mine.size === 0) this.#handshaking.delete(source)
    return true
  }

  /** The handshaking sockets of the source that holds the most. */
  #busiest(): Map<Socket, Handshaking> | undefined {
    let busiest: Map<Socket, Handshaking> | undefined
    for (const mine of this.#handshaking.values()) if (busiest === undefined || mine.size > busiest.size) busiest = mine
    return busiest
  }

  #evictOldest(sockets: Map<Socket, Handshaking> | undefined, reason: ShedReason): void {
    const oldest = sockets?.entries().next().value
    if (oldest === undefined) return
    const [raw, { source }] = oldest
    this.#handshakeOver(raw, source)
    // It ends without authenticating, like any other: its source pays for it.
    this.#rate.charge(source)
    this.#shedNow(raw, source, reason)
  }

  #shedNow(raw: Socket, source: string, reason: ShedReason): false {
    this.#shed.add(raw)
    raw.destroy()
    this.#metrics.tlsConnectionsShed.inc({ reason })
    this.#log.note(reason, { reason, source })
    this.#gauges()
    return false
  }

  #gauges(): void {
    this.#metrics.tlsConnections.set({ state: 'handshaking' }, this.#handshakingCount)
    this.#metrics.tlsConnections.set({ state: 'established' }, this.#establishedCount)
  }
}
