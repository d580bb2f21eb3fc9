/**
 * GET /.well-known/jwks.json: the published public keys. The bytes and ETag are computed by the KeyStore
 * when the keyset or a key's state changes, never per request.
 */
import type { FastifyInstance } from 'fastify'
import type { KeyStore } from '../keys/store.js'

export const JWKS_PATH = '/.well-known/jwks.json'

/** True when an If-None-Match header matches the ETag (RFC 9110 §13.1.2, weak comparison). */
export function etagMatches(header: string | undefined, etag: string): boolean {
  if (header === undefined) return false
  if (header.trim() === '*') return true
  return header.split(',').some((t) => t.trim().replace(/^W\//, '') === etag)
}

export async function jwksRoutes(app: FastifyInstance, deps: { keys: KeyStore; maxAge: number }): Promise<void> {
  const cacheControl = `public, max-age=${deps.maxAge}`
  app.get(JWKS_PATH, async (request, reply) => {
    const jwks = deps.keys.jwks()
    void reply.header('cache-control', cacheControl).header('etag', jwks.etag).header('vary', 'accept')
    if (etagMatches(request.headers['if-none-match'], jwks.etag)) return reply.code(304).send()
    const accept = request.headers.accept ?? ''
    const type = accept.includes('application/jwk-set+json') ? 'application/jwk-set+json' : 'application/json'
    return reply.header('content-type', `${type}; charset=utf-8`).send(jwks.body)
  })
}
