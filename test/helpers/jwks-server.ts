/**
 * For verifier tests that need what authz never does: a JWKS endpoint with chosen bodies and
 * Cache-Control headers, or one that breaks every connection; and signing keys of either algorithm, with
 * authz's kid (the RFC 7638 thumbprint), to mint tokens that differ from a real one in exactly one way.
 */
import { randomUUID } from 'node:crypto'
import { createServer, type Server } from 'node:http'
import { calculateJwkThumbprint, exportJWK, generateKeyPair, SignJWT, type JWK, type JWTPayload } from 'jose'
import type { Test } from 'tap'

export interface JwksServer {
  readonly url: string
  /** Requests (or, when `mode` is 'reset', connections) received so far. */
  readonly hits: number
  /** What the next request gets. */
  body: string
  headers: Record<string, string>
  /** 'serve' answers `body`; 'reset' destroys every connection at once. */
  mode: 'serve' | 'reset'
  /** Resolves at the next hit (a request, or a reset connection). */
  nextHit(): Promise<void>
}

export async function startJwksServer(t: Test, jwks: { keys: JWK[] } = { keys: [] }): Promise<JwksServer> {
  let hits = 0
  let waiters: (() => void)[] = []
  const hit = (): void => {
    hits++
    for (const w of waiters) w()
    waiters = []
  }
  const state: JwksServer = {
    url: '',
    get hits() {
      return hits
    },
    body: JSON.stringify(jwks),
    headers: { 'cache-control': 'public, max-age=600' },
    mode: 'serve',
    nextHit: () => new Promise<void>((resolve) => waiters.push(resolve)),
  }
  const server: Server = createServer((_req, res) => {
    hit()
    res.writeHead(200, { 'content-type': 'application/json', ...state.headers }).end(state.body)
  })
  server.on('connection', (socket) => {
    if (state.mode === 'reset') {
      hit()
      socket.destroy()
    }
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())))
  server.unref()
  return Object.assign(state, { url: `http://127.0.0.1:${(server.address() as { port: number }).port}/.well-known/jwks.json` })
}

export interface SigningKey {
  readonly kid: string
  readonly alg: 'RS256' | 'ES256'
  /** The public JWK as authz publishes it: kty, key members, kid, alg, use. */
  readonly jwk: JWK
  sign(claims: JWTPayload, header?: Record<string, unknown>): Promise<string>
}

export async function signingKey(alg: 'RS256' | 'ES256'): Promise<SigningKey> {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true })
  const pub = await exportJWK(publicKey)
  const kid = await calculateJwkThumbprint(pub, 'sha256')
  return {
    kid,
    alg,
    jwk: { ...pub, kid, alg, use: 'sig' },
    sign: (claims, header = {}) => new SignJWT(claims).setProtectedHeader({ alg, typ: 'at+jwt', kid, ...header }).sign(privateKey),
  }
}

/** The claims of a good token for inventory-service at `nowMs`. */
export function claimsAt(nowMs: number, extra: JWTPayload = {}): JWTPayload {
  const now = Math.floor(nowMs / 1000)
  return { iss: 'https://authz.internal', sub: 'order-service', aud: 'inventory-service', iat: now, nbf: now, exp: now + 600, jti: randomUUID(), ...extra }
}
