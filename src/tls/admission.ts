/**
 * Who a connection comes from, as the server counts it: its source (an address, or an IPv6 /64), and the
 * TCP socket under a TLS socket.
 */
import { isIP, Socket } from 'node:net'
import type { TLSSocket } from 'node:tls'

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
