import t from 'tap'
import { activeAt, keyStates, nextTransition, published, retentionMs, safeActivationDelayMs } from '../../src/keys/lifecycle.js'

const timing = { tokenTtl: 600, jwksMaxAge: 600, marginSec: 300 }
const min = 60_000
const key = (kid: string, activatesAt: number, createdAt = 0) => ({ kid, activatesAt, createdAt })

t.test('retention and the safe activation delay', async (t) => {
  t.equal(retentionMs(timing), (600 + 600 + 300) * 1000)
  t.equal(retentionMs({ tokenTtl: 900, jwksMaxAge: 60 }), (900 + 60 + 300) * 1000, 'default margin')
  t.equal(safeActivationDelayMs(timing), 1200 * 1000)
})

t.test('states by time, a pure function of (keys, now)', async (t) => {
  const keys = [key('b', 20 * min, 10 * min), key('a', 0)]
  const at = (now: number) => keyStates(keys, now, timing).map((s) => [s.key.kid, s.state])
  t.same(at(-1), [['a', 'next'], ['b', 'next']], 'nothing active before the first activation')
  t.same(at(0), [['a', 'active'], ['b', 'next']])
  t.same(at(20 * min - 1), [['a', 'active'], ['b', 'next']])
  t.same(at(20 * min), [['a', 'retired'], ['b', 'active']], 'switch at the exact instant')
  const retiredUntil = 20 * min + retentionMs(timing)
  t.same(at(retiredUntil - 1), [['a', 'retired'], ['b', 'active']])
  t.same(at(retiredUntil), [['a', 'expired'], ['b', 'active']])
  const statuses = keyStates(keys, 30 * min, timing)
  t.match(statuses[0], { retiredAt: 20 * min, prunableAt: retiredUntil })
  t.equal(activeAt(statuses)?.kid, 'b')
  t.same(published(statuses).map((k) => k.kid), ['a', 'b'])
  t.same(published(keyStates(keys, retiredUntil, timing)).map((k) => k.kid), ['b'])
})

t.test('exactly one key signs at any instant, whatever the manifest order', async (t) => {
  const keys = [key('c', 40 * min, 2), key('a', 0, 0), key('b', 20 * min, 1), key('d', 40 * min, 3)]
  for (let now = -min; now < 200 * min; now += 7 * min) {
    const statuses = keyStates(keys, now, timing)
    const active = statuses.filter((s) => s.state === 'active')
    t.equal(active.length, now < 0 ? 0 : 1, `at ${now}`)
  }
  t.equal(activeAt(keyStates(keys, 45 * min, timing))?.kid, 'd', 'same activation instant: the newer key wins')
  t.same(keyStates(keys, 44 * min, timing).map((s) => s.state), ['retired', 'retired', 'retired', 'active'])
  t.same(keyStates(keys, 45 * min, timing).map((s) => s.state), ['expired', 'retired', 'retired', 'active'], 'a: retired at 20 min + 25 min')
})

t.test('a token never outlives its key publication', async (t) => {
  const keys = [key('a', 0), key('b', 20 * min)]
  // The last token signed by a is signed just before 20 min and expires a TTL later; a stays published past that.
  const lastExp = 20 * min - 1 + timing.tokenTtl * 1000
  const statuses = keyStates(keys, lastExp, timing)
  t.equal(statuses[0]?.state, 'retired')
  t.ok((statuses[0]?.prunableAt ?? 0) > lastExp + timing.jwksMaxAge * 1000)
})

t.test('nextTransition: activations and prune instants', async (t) => {
  const keys = [key('a', 0), key('b', 20 * min)]
  t.equal(nextTransition(keyStates(keys, 5 * min, timing), 5 * min), 20 * min)
  const after = keyStates(keys, 21 * min, timing)
  t.equal(nextTransition(after, 21 * min), 20 * min + retentionMs(timing))
  const late = 20 * min + retentionMs(timing) + 1
  t.equal(nextTransition(keyStates(keys, late, timing), late), null)
})
