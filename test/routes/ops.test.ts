import t from 'tap'
import { startHarness } from '../helpers/harness.js'

t.test('healthz and readyz when a key signs', async (t) => {
  const h = await startHarness(t)
  const health = await h.opsCall('/healthz')
  t.equal(health.status, 200)
  t.same(health.json(), { status: 'ok' })
  const ready = await h.opsCall('/readyz')
  t.equal(ready.status, 200)
  t.same(ready.json(), { status: 'ready', checks: { signing_key: true, policy: true } })
})

t.test('readyz is 503 when no key can sign', async (t) => {
  const h = await startHarness(t, { noKey: true })
  const ready = await h.opsCall('/readyz')
  t.equal(ready.status, 503)
  t.same(ready.json(), { status: 'not_ready', checks: { signing_key: false, policy: true } })
  t.equal((await h.opsCall('/healthz')).status, 200, 'still alive')
})

t.test('metrics: prometheus text with the authz series', async (t) => {
  const h = await startHarness(t)
  const res = await h.opsCall('/metrics')
  t.equal(res.status, 200)
  t.match(res.headers['content-type'], /^text\/plain/)
  for (const name of [
    'authz_tokens_issued_total',
    'authz_token_requests_denied_total',
    'authz_signing_duration_seconds',
    'authz_keys_published 1',
    'authz_signing_keys{state="active"} 1',
    'authz_signing_keys{state="next"} 0',
    'authz_ready 1',
  ]) {
    t.ok(res.text.includes(name), name)
  }
})

t.test('the ops listener serves nothing else and takes no bodies', async (t) => {
  const h = await startHarness(t)
  t.equal((await h.opsCall('/token')).status, 404)
  const { httpCall } = await import('../helpers/http.js')
  const post = await httpCall(h.opsPort, { method: 'POST', path: '/healthz', headers: { 'content-type': 'application/json' }, body: '{}' })
  t.equal(post.status, 404)
})
