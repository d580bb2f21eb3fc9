import t from 'tap'
import { startHarness } from '../helpers/harness.js'

t.test('JWKS: public members only, from an allowlist, on both listeners', async (t) => {
  const h = await startHarness(t)
  const viaOps = await h.opsCall('/.well-known/jwks.json')
  const viaMain = await h.call({ path: '/.well-known/jwks.json', client: h.pki.client('order-service') })
  for (const res of [viaOps, viaMain]) {
    t.equal(res.status, 200)
    t.equal(res.headers['cache-control'], 'public, max-age=600')
    t.match(res.headers.etag, /^"[A-Za-z0-9_-]+"$/)
    t.match(res.headers['content-type'], /^application\/json/)
    const { keys } = res.json<{ keys: Record<string, string>[] }>()
    t.equal(keys.length, 1)
    const key = keys[0] as Record<string, string>
    t.same(Object.keys(key).sort(), ['alg', 'e', 'kid', 'kty', 'n', 'use'])
    t.same({ kty: key.kty, alg: key.alg, use: key.use, kid: key.kid }, { kty: 'RSA', alg: 'RS256', use: 'sig', kid: h.keys.signingKey()?.kid })
    for (const privateMember of ['d', 'p', 'q', 'dp', 'dq', 'qi']) t.notOk(privateMember in key)
    t.ok(Buffer.from(key.n as string, 'base64url').length >= 256, 'RSA-2048 or larger')
  }
  t.equal(viaOps.text, viaMain.text)
})

t.test('JWKS: ETag and If-None-Match give 304; jwk-set+json on request; max-age follows the config', async (t) => {
  const h = await startHarness(t, { env: { AUTHZ_JWKS_MAX_AGE: '120' } })
  const first = await h.opsCall('/.well-known/jwks.json', { accept: 'application/jwk-set+json' })
  t.match(first.headers['content-type'], /^application\/jwk-set\+json/)
  t.equal(first.headers['cache-control'], 'public, max-age=120')
  const etag = first.headers.etag as string
  const second = await h.opsCall('/.well-known/jwks.json', { 'if-none-match': etag })
  t.equal(second.status, 304)
  t.equal(second.text, '')
  t.equal((await h.opsCall('/.well-known/jwks.json', { 'if-none-match': `"other", W/${etag}` })).status, 304)
  t.equal((await h.opsCall('/.well-known/jwks.json', { 'if-none-match': '"other"' })).status, 200)
})

t.test('discovery metadata at both well-known names (RFC 8414, RFC 8705)', async (t) => {
  const h = await startHarness(t, { env: { AUTHZ_ISSUER: 'https://authz.example.test' } })
  for (const path of ['/.well-known/openid-configuration', '/.well-known/oauth-authorization-server']) {
    const res = await h.call({ path, client: h.pki.client('order-service') })
    t.equal(res.status, 200)
    t.match(res.headers['content-type'], /^application\/json/)
    t.same(res.json(), {
      issuer: 'https://authz.example.test',
      token_endpoint: 'https://authz.example.test/token',
      jwks_uri: 'https://authz.example.test/.well-known/jwks.json',
      grant_types_supported: ['client_credentials'],
      response_types_supported: [],
      token_endpoint_auth_methods_supported: ['tls_client_auth'],
      tls_client_certificate_bound_access_tokens: true,
      mtls_endpoint_aliases: { token_endpoint: 'https://authz.example.test/token' },
      scopes_supported: ['order:read', 'stock:deduct', 'stock:read'],
      access_token_signing_alg_values_supported: ['RS256'],
    })
  }
})
