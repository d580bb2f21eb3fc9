// What one verification costs a receiving service in @authz/sdk: n distinct tokens verified one at a time
// with the verified-token cache off (every token pays its signature check), RS256 and ES256, in this
// process — CPU of every thread (process.cpuUsage) and wall time per token; plus a cached RS256 token (the
// binding still checked). Used by bench/sdk.mjs and, per round, by bench/run.mjs.
//   node bench/verify-cost.mjs [--n 3000] [--first RS256|ES256]   → one JSON line
import { createVerifier } from '@authz/sdk'
import { calculateJwkThumbprint, exportJWK, generateKeyPair, SignJWT } from 'jose'

/** A signing key of the bench's own, as a JWK (public members, kid, alg) and a token signer. */
export async function key(alg) {
  const { privateKey, publicKey } = await generateKeyPair(alg)
  const jwk = await exportJWK(publicKey)
  const kid = await calculateJwkThumbprint(jwk)
  return { jwk: { ...jwk, kid, alg, use: 'sig' }, sign: (claims) => new SignJWT(claims).setProtectedHeader({ alg, typ: 'at+jwt', kid }).sign(privateKey) }
}

/** The claims of an authz token for order-service → inventory-service, fresh now, bound to `thumbprint`. */
export function tokenClaims(thumbprint) {
  const now = Math.floor(Date.now() / 1000)
  return {
    iss: 'https://authz.internal',
    sub: 'order-service',
    aud: 'inventory-service',
    iat: now,
    nbf: now,
    exp: now + 900,
    jti: crypto.randomUUID(),
    scope: 'stock:read',
    cnf: { 'x5t#S256': thumbprint },
  }
}

/**
 * Verification cost per token, cache off, for RS256 and ES256 (`first` is measured first), and of a cached
 * RS256 token. `thumbprint` is the cnf.x5t#S256 of the tokens (any base64url SHA-256 will do).
 */
export async function verifyCosts({ n = 3000, first = 'RS256', thumbprint = 'A'.repeat(43) } = {}) {
  const keys = { RS256: await key('RS256'), ES256: await key('ES256') }
  const jwks = JSON.stringify({ keys: [keys.RS256.jwk, keys.ES256.jwk] })
  const claims = () => tokenClaims(thumbprint)
  const perToken = async (alg) => {
    const tokens = await Promise.all(Array.from({ length: n }, () => keys[alg].sign(claims())))
    const verifier = await createVerifier({ issuer: 'https://authz.internal', audience: 'inventory-service', keys: jwks, algorithms: ['RS256', 'ES256'], cache: false })
    const peer = { peerThumbprint: thumbprint } // a peer certificate is required: the binding is part of the cost
    for (const t of tokens.slice(0, 200)) await verifier.verify(t, peer) // warm up
    const cpu0 = process.cpuUsage()
    const t0 = performance.now()
    for (const t of tokens) await verifier.verify(t, peer)
    const wall = performance.now() - t0
    const cpu = process.cpuUsage(cpu0)
    verifier.close()
    return { cpuUs: (cpu.user + cpu.system) / n, wallUs: (wall * 1000) / n }
  }
  const order = first === 'ES256' ? ['ES256', 'RS256'] : ['RS256', 'ES256']
  const result = {}
  for (const alg of order) result[alg] = await perToken(alg)
  const token = await keys.RS256.sign(claims())
  const verifier = await createVerifier({ issuer: 'https://authz.internal', audience: 'inventory-service', keys: jwks })
  await verifier.verify(token, { peerThumbprint: thumbprint })
  const cpu0 = process.cpuUsage()
  for (let i = 0; i < n; i++) await verifier.verify(token, { peerThumbprint: thumbprint })
  const cpu = process.cpuUsage(cpu0)
  verifier.close()
  return { RS256: result.RS256, ES256: result.ES256, cachedUs: (cpu.user + cpu.system) / n, n }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const arg = (name, fallback) => (process.argv.includes(name) ? process.argv[process.argv.indexOf(name) + 1] : fallback)
  const costs = await verifyCosts({ n: Number(arg('--n', 3000)), first: arg('--first', 'RS256') })
  process.stdout.write(`${JSON.stringify(costs)}\n`)
}
