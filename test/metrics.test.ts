/**
 * The series an SRE alerts on (README "Metrics"): named by Prometheus conventions, "none" as an absent
 * series or an explicit 0 (never -1), lowercase label values, the signing key in force and the keyset
 * digest per replica, the /token duration by outcome, 429s and 503s by reason.
 */
import { readFileSync } from 'node:fs'
import t from 'tap'
import { createMetrics, memoryLimitBytes, TOKEN_OUTCOMES } from '../src/metrics.js'
import { rotateKeys } from '../src/keys/admin.js'
import { startHarness } from './helpers/harness.js'
import { familiesOf, parseSamples, samplesOf, valueOf } from './helpers/prom-text.js'

const timing = { tokenTtl: 600, jwksMaxAge: 600 }
const min = 60_000

t.test('authz_build_info names the version in package.json and the Node.js version', async (t) => {
  const h = await startHarness(t)
  const text = (await h.opsCall('/metrics')).text
  const version = (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }).version
  t.same(samplesOf(text, 'authz_build_info').map((s) => [s.labels, s.value]), [[{ version, node_version: process.version }, 1]])
})

t.test('no series ever reports -1; every label value is lowercase', async (t) => {
  const keyless = await startHarness(t, { noKey: true })
  const keyed = await startHarness(t)
  await keyed.token({ audience: 'inventory-service' })
  for (const h of [keyless, keyed]) {
    const samples = parseSamples((await h.opsCall('/metrics')).text)
    t.same(samples.filter((s) => s.value < 0), [], 'no negative value')
    // Identifiers whose case is part of them are verbatim: kid and digest (base64url), alg (JOSE names, as
    // in the JWKS), le (+Inf), and the policy's own names (audience, caller).
    const verbatim = new Set(['kid', 'digest', 'alg', 'le', 'audience', 'caller'])
    const upper = samples.filter((s) => s.name.startsWith('authz_') && Object.entries(s.labels).some(([k, v]) => !verbatim.has(k) && v !== v.toLowerCase()))
    t.same(upper, [], 'lowercase label values')
  }
})

t.test('the key in force: info series, state counts, activation timestamps, keyset digest; none is absent or 0', async (t) => {
  const h = await startHarness(t)
  const active = h.keys.signingKey()
  const metrics = async (): Promise<string> => (await h.opsCall('/metrics')).text
  let text = await metrics()
  t.same(samplesOf(text, 'authz_signing_key_info').map((s) => s.labels), [{ kid: active?.kid, alg: 'RS256', store: 'file' }])
  t.equal(valueOf(text, 'authz_signing_keys', { state: 'active' }), 1)
  t.equal(valueOf(text, 'authz_signing_keys', { state: 'next' }), 0, '"no next key" is an explicit 0')
  t.equal(valueOf(text, 'authz_signing_keys', { state: 'retired' }), 0)
  t.equal(valueOf(text, 'authz_signing_key_activation_timestamp_seconds'), (active?.activatesAt ?? 0) / 1000)
  t.notOk(familiesOf(text).has('authz_next_key_activation_timestamp_seconds'), 'no next key: the timestamp series is absent')
  const etag = (await h.opsCall('/.well-known/jwks.json')).headers.etag as string
  t.same(samplesOf(text, 'authz_jwks_info').map((s) => s.labels), [{ digest: etag.replaceAll('"', '') }], 'the digest is the JWKS ETag')

  const { key: next } = await rotateKeys({ dir: h.config.keysDir, timing, clock: h.clock })
  await h.keys.reload()
  text = await metrics()
  t.equal(valueOf(text, 'authz_next_key_activation_timestamp_seconds'), next.activatesAt / 1000)
  t.equal(valueOf(text, 'authz_signing_keys', { state: 'next' }), 1)
  t.equal(samplesOf(text, 'authz_jwks_info').length, 1, 'one digest at a time')
  t.not(samplesOf(text, 'authz_jwks_info')[0]?.labels.digest, etag.replaceAll('"', ''), 'a new keyset, a new digest')

  h.clock.advance(20 * min)
  text = await metrics()
  t.same(samplesOf(text, 'authz_signing_key_info').map((s) => s.labels.kid), [next.kid], 'only the key in force: the old kid is gone')
  t.same([valueOf(text, 'authz_signing_keys', { state: 'active' }), valueOf(text, 'authz_signing_keys', { state: 'retired' })], [1, 1])
  t.notOk(familiesOf(text).has('authz_next_key_activation_timestamp_seconds'))
})

t.test('no active key: the info and activation series are absent, active is 0, authz_ready 0', async (t) => {
  const h = await startHarness(t, { noKey: true })
  const text = (await h.opsCall('/metrics')).text
  t.same(samplesOf(text, 'authz_signing_key_info'), [])
  t.notOk(familiesOf(text).has('authz_signing_key_activation_timestamp_seconds'))
  t.equal(valueOf(text, 'authz_signing_keys', { state: 'active' }), 0)
  t.equal(valueOf(text, 'authz_ready'), 0)
  const ready = await startHarness(t)
  t.equal(valueOf((await ready.opsCall('/metrics')).text, 'authz_ready'), 1)
})

t.test('/token duration by outcome; every outcome and every denial code is a series from the start', async (t) => {
  const h = await startHarness(t)
  let text = (await h.opsCall('/metrics')).text
  for (const outcome of TOKEN_OUTCOMES) t.equal(valueOf(text, 'authz_token_request_duration_seconds_count', { outcome }), 0, `${outcome}: 0 before any request`)
  for (const error of TOKEN_OUTCOMES.filter((o) => o !== 'issued')) t.equal(valueOf(text, 'authz_token_requests_denied_total', { error }), 0, `denied ${error}: 0`)
  await h.token({ audience: 'inventory-service' })
  await h.token({ audience: 'inventory-service' })
  await h.token({ audience: 'nope' })
  await h.token({ audience: 'inventory-service' }, h.pki.client('billing-service'))
  await h.token('{"audience":"inventory-service"', undefined)
  text = (await h.opsCall('/metrics')).text
  t.equal(valueOf(text, 'authz_token_request_duration_seconds_count', { outcome: 'issued' }), 2)
  t.equal(valueOf(text, 'authz_token_request_duration_seconds_count', { outcome: 'invalid_target' }), 1)
  t.equal(valueOf(text, 'authz_token_request_duration_seconds_count', { outcome: 'invalid_client' }), 1)
  t.equal(valueOf(text, 'authz_token_request_duration_seconds_count', { outcome: 'invalid_request' }), 1)
  t.ok((valueOf(text, 'authz_token_request_duration_seconds_sum', { outcome: 'issued' }) ?? 0) > 0, 'time is measured')
  t.equal(valueOf(text, 'authz_token_request_duration_seconds_bucket', { outcome: 'issued', le: '0.05' }) !== undefined, true, 'the latency goal is a bucket boundary')
})

t.test('429s by caller, 503s by reason, each with Retry-After', async (t) => {
  const limited = await startHarness(t, { env: { AUTHZ_RATE_LIMIT: '1' } })
  await limited.token({ audience: 'inventory-service' })
  const slow = await limited.token({ audience: 'inventory-service' })
  t.equal(slow.status, 429)
  t.ok(Number(slow.headers['retry-after']) >= 1)
  let text = (await limited.opsCall('/metrics')).text
  t.equal(valueOf(text, 'authz_token_requests_rate_limited_total', { caller: 'order-service' }), 1)
  t.equal(valueOf(text, 'authz_token_request_duration_seconds_count', { outcome: 'slow_down' }), 1)

  const keyless = await startHarness(t, { noKey: true })
  text = (await keyless.opsCall('/metrics')).text
  for (const reason of ['no_active_key', 'signer_unavailable', 'signing_failed']) {
    t.equal(valueOf(text, 'authz_token_requests_unavailable_total', { reason }), 0, `${reason}: 0 from the start`)
  }
  const unavailable = await keyless.token({ audience: 'inventory-service' })
  t.same({ status: unavailable.status, body: unavailable.json(), retryAfter: unavailable.headers['retry-after'] }, { status: 503, body: { error: 'temporarily_unavailable' }, retryAfter: '30' }, 'nothing scheduled: retry in 30 s')
  text = (await keyless.opsCall('/metrics')).text
  t.equal(valueOf(text, 'authz_token_requests_unavailable_total', { reason: 'no_active_key' }), 1)
  t.equal(valueOf(text, 'authz_token_request_duration_seconds_count', { outcome: 'temporarily_unavailable' }), 1)

  // A key scheduled 7.2 s from now: Retry-After says when it signs.
  await rotateKeys({ dir: keyless.config.keysDir, timing, clock: keyless.clock }, { activateInMs: 7200, force: true })
  await keyless.keys.reload()
  t.equal((await keyless.token({ audience: 'inventory-service' })).headers['retry-after'], '8', 'until the next key activates')
  keyless.clock.advance(7200)
  t.equal((await keyless.token({ audience: 'inventory-service' })).status, 200, 'and then it signs')
})

t.test('authz_pkcs11_available exists only where a token is configured', async (t) => {
  const h = await startHarness(t)
  t.notOk(familiesOf((await h.opsCall('/metrics')).text).has('authz_pkcs11_available'), 'no token: no series (not a 0)')
  const metrics = createMetrics({ defaults: false })
  metrics.pkcs11Available.set(0)
  t.equal(valueOf(await metrics.registry.metrics(), 'authz_pkcs11_available'), 0, 'a token that is down: 0')
  metrics.pkcs11Available.set(1)
  t.equal(valueOf(await metrics.registry.metrics(), 'authz_pkcs11_available'), 1)
})

t.test('authz_memory_limit_bytes: the cgroup limit, absent when unlimited', async (t) => {
  const total = 8 * 2 ** 30
  t.equal(memoryLimitBytes(256 * 2 ** 20, total), 256 * 2 ** 20)
  for (const none of [undefined, 0, 2 ** 64, 2 ** 63, total]) t.equal(memoryLimitBytes(none, total), undefined, `${none} is no limit`)
  const text = await createMetrics().registry.metrics()
  t.equal(familiesOf(text).has('authz_memory_limit_bytes'), memoryLimitBytes() !== undefined, 'present exactly when this machine limits the process')
  t.ok(familiesOf(text).has('process_resident_memory_bytes') && familiesOf(text).has('nodejs_eventloop_lag_p99_seconds'), 'process metrics for the dashboard')
})

t.test('reload_failing is labelled policy, keyset, tls (lowercase)', async (t) => {
  const { startServer } = await import('../src/server.js')
  const { mkdtempSync, writeFileSync, rmSync } = await import('node:fs')
  const { tmpdir } = await import('node:os')
  const { join } = await import('node:path')
  const { Writable } = await import('node:stream')
  const dir = mkdtempSync(join(tmpdir(), 'authz-metrics-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  writeFileSync(join(dir, 'policy.json'), JSON.stringify({ audiences: ['a'], grants: { b: { a: [] } } }))
  const server = await startServer(
    { AUTHZ_KEYS_DIR: join(dir, 'keys'), AUTHZ_POLICY: join(dir, 'policy.json'), AUTHZ_PORT: '0', AUTHZ_OPS_PORT: '0', AUTHZ_HOST: '127.0.0.1', AUTHZ_OPS_HOST: '127.0.0.1' },
    { cwd: dir, logDestination: new Writable({ write: (_c, _e, cb) => cb() }), bannerOut: { write: () => true } },
  )
  t.teardown(() => server.close())
  const text = await server.metrics.registry.metrics()
  t.same(samplesOf(text, 'authz_reload_failing').map((s) => s.labels.what).sort(), ['keyset', 'policy', 'tls'])
})
