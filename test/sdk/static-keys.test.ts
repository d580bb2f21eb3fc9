/**
 * Keys without a network call, end to end: what `npm run keys -- export --public` writes (JWKS or PEM)
 * is a static key set a verifier loads at start, and it verifies authz's real tokens, certificate binding
 * included.
 */
import t from 'tap'
import { runKeysCli } from '../../src/cli/keys.js'
import { createVerifier } from '../../packages/sdk/src/verifier.js'
import { startHarness } from '../helpers/harness.js'
import { codeOf } from '../helpers/verify.js'

t.test('keys export --public → createVerifier({ keys }): authz tokens verify offline', async (t) => {
  const h = await startHarness(t)
  const token = (await h.token({ audience: 'inventory-service', scope: 'stock:read' })).json<{ access_token: string }>().access_token
  for (const format of ['jwks', 'pem']) {
    const out: string[] = []
    const code = await runKeysCli(['export', '--public', '--format', format], { AUTHZ_KEYS_DIR: h.config.keysDir }, { out: (l) => out.push(l), err: () => undefined }, h.clock)
    t.equal(code, 0, `export --format ${format}`)
    // As a service would get it: the file's text, or an environment variable.
    const verifier = await createVerifier({ issuer: 'https://authz.internal', audience: 'inventory-service', keys: out.join('\n'), clock: h.clock, requireBinding: true })
    t.same(verifier.kids, [h.keys.signingKey()?.kid], `${format}: the kid is authz's`)
    t.equal(await codeOf(verifier.verify(token, { peerCertificate: h.pki.client('order-service').certPem })), 'accepted', `${format}: a real token verifies`)
    t.equal(await codeOf(verifier.verify(token, { peerCertificate: h.pki.client('payment-service').certPem })), 'ERR_BINDING_MISMATCH', `${format}: bound`)
    verifier.close()
  }
})
