import { randomBytes } from 'node:crypto'
import type { Server as TlsServer } from 'node:tls'

export const DEFAULT_TICKET_KEY_ROTATION_MS = 3_600_000

/**
 * Session tickets let a reconnecting caller skip the full handshake (the resumed session keeps the
 * verified client certificate). The ticket key is replaced regularly so a stolen key opens little.
 * Returns the function that stops the rotation.
 */
export function rotateTicketKeys(server: TlsServer, intervalMs = DEFAULT_TICKET_KEY_ROTATION_MS): () => void {
  server.setTicketKeys(randomBytes(48))
  const timer = setInterval(() => server.setTicketKeys(randomBytes(48)), intervalMs)
  timer.unref()
  return () => clearInterval(timer)
}
