import { rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import t from 'tap'
import { PolicyStore } from '../../src/policy/store.js'
import { SAMPLE_POLICY } from '../helpers/harness.js'

t.test('load fails with a message naming the file and entry', async (t) => {
  const dir = t.testdir({ 'bad.json': JSON.stringify({ audiences: ['a'], grants: { b: { c: [] } } }) })
  await t.rejects(PolicyStore.load(join(dir, 'bad.json')), { code: 'ERR_POLICY_INVALID', message: /bad\.json: grants\["b"\]\["c"\]/ })
  await t.rejects(PolicyStore.load(join(dir, 'missing.json')), { code: 'ERR_POLICY_READ' })
})

t.test('reload: a good file replaces the policy; a bad or missing one keeps it and is reported once', async (t) => {
  const dir = t.testdir({ 'policy.json': JSON.stringify(SAMPLE_POLICY) })
  const path = join(dir, 'policy.json')
  const store = await PolicyStore.load(path)
  const first = store.current
  t.same(await store.reload(), { changed: false }, 'unchanged file')

  await writeFile(path, JSON.stringify({ audiences: ['a'], grants: { b: { a: [] } } }))
  t.same(await store.reload(), { changed: true })
  t.ok(store.current.grants.has('b'))

  await writeFile(path, '{"audiences": [')
  const bad = await store.reload()
  t.equal(bad.changed, false)
  t.equal(bad.error?.code, 'ERR_POLICY_INVALID')
  t.ok(store.current.grants.has('b'), 'previous policy in force')
  t.same(await store.reload(), { changed: false }, 'the same bad file is reported once')
  t.equal((await store.reload(true)).error?.code, 'ERR_POLICY_INVALID', 'force (SIGHUP) reports it again')

  await rm(path)
  t.equal((await store.reload()).error?.code, 'ERR_POLICY_READ')
  t.ok(store.current.grants.has('b'), 'a deleted file keeps the policy')
  t.not(store.current, first)
})

t.test('watch picks up a change by itself', async (t) => {
  const dir = t.testdir({ 'policy.json': JSON.stringify(SAMPLE_POLICY) })
  const path = join(dir, 'policy.json')
  const store = await PolicyStore.load(path)
  // The watcher holds no ref on the event loop (the listeners do in a server): keep the test alive.
  const keepAlive = setInterval(() => undefined, 1000)
  t.teardown(() => {
    clearInterval(keepAlive)
    store.close()
  })
  const reloaded = new Promise<void>((resolve) => store.watch((e) => e.kind === 'changed' && resolve(), 50))
  await writeFile(path, JSON.stringify({ audiences: ['x'], grants: {} }))
  await reloaded
  t.same([...store.current.audiences], ['x'])
})

t.test('reload in spiffe mode: a new file with a CN caller or a foreign trust domain is refused, the SPIFFE policy stays', async (t) => {
  const order = 'spiffe://example.org/ns/default/sa/order'
  const doc = (caller: string) => JSON.stringify({ audiences: ['a'], grants: { [caller]: { a: [] } } })
  const dir = t.testdir({ 'policy.json': doc(order) })
  const path = join(dir, 'policy.json')
  const store = await PolicyStore.load(path, { kind: 'spiffe', trustDomains: ['example.org'] })
  for (const caller of ['order-service', 'spiffe://evil.org/ns/default/sa/order']) {
    await writeFile(path, doc(caller))
    const result = await store.reload()
    t.match(result, { changed: false, error: { code: 'ERR_POLICY_INVALID', message: /grants\[".*"\]: caller / } }, caller)
    t.ok(store.current.grants.has(order), 'the SPIFFE policy stays in force')
  }
  await writeFile(path, doc('spiffe://example.org/ns/default/sa/billing'))
  t.same(await store.reload(), { changed: true })
})
