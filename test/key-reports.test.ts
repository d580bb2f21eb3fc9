/**
 * The key that signs, as the on-call engineer reads it in the log: a switch is one info line with both
 * kids; the start of "no key signs" is one error line — at start and at run time alike — naming the key
 * that stopped and the next one; its end is one warning.
 */
import t, { type Test } from 'tap'
import { ManualClock } from '../src/clock.js'
import { initKeys, pruneKeys, rotateKeys } from '../src/keys/admin.js'
import { KeyStore } from '../src/keys/store.js'
import { createLogger } from '../src/logger.js'
import { reportSigningKey } from '../src/reload-reports.js'
import { LogCapture } from './helpers/harness.js'
import { pooledKey } from './helpers/material.js'

const timing = { tokenTtl: 600, jwksMaxAge: 600 }
const min = 60_000

async function setup(t: Test) {
  const dir = t.testdir({})
  const clock = new ManualClock(Date.UTC(2026, 0, 1, 12))
  const logs = new LogCapture()
  const logger = createLogger('info', logs)
  return { dir, clock, logs, logger }
}

t.test('a prune run with a clock 1 h ahead leaves no key signing: one error line with both kids (regression: info, no kid)', async (t) => {
  const { dir, clock, logs, logger } = await setup(t)
  const first = await initKeys({ dir, timing, clock, newKey: pooledKey })
  clock.advance(10 * min)
  const { key: next } = await rotateKeys({ dir, timing, clock, newKey: pooledKey })
  const keys = await KeyStore.open({ dir, timing, clock })
  t.teardown(() => keys.close())
  const stop = reportSigningKey(keys, logger, clock)
  t.teardown(stop)
  t.same(logs.records(), [], 'a key signs at start: nothing to say')

  // The operator's machine is 1 h ahead: the first key looks expired there, and is pruned.
  const ahead = new ManualClock(clock.now() + 60 * min)
  t.same((await pruneKeys({ dir, timing, clock: ahead })).pruned, [first.kid])
  const stoppedAt = clock.now()
  await keys.reload()
  t.equal(keys.signingKey(), undefined, 'no key signs on the real clock')
  const errors = logs.records().filter((r) => r.level === 50)
  t.equal(errors.length, 1, 'one error line')
  t.match(errors[0], { event: 'no_signing_key', previous: first.kid, next: next.kid, next_activates_at: new Date(next.activatesAt).toISOString(), dir })

  await keys.reload(true)
  t.equal(logs.records().filter((r) => r.level === 50).length, 1, 'not repeated while the state lasts')

  clock.set(next.activatesAt)
  keys.statuses() // a read past the instant recomputes the view
  t.match(logs.records().at(-1), { level: 40, event: 'signing_key_active', kid: next.kid, alg: 'RS256', store: 'file', failed_for_ms: next.activatesAt - stoppedAt }, 'its end: one warning')
})

t.test('no key at start is the same error line; a scheduled switch is one info line with both kids', async (t) => {
  const { dir, clock, logs, logger } = await setup(t)
  // A key made "in the future": it activates 5 minutes from now.
  const later = new ManualClock(clock.now() + 5 * min)
  const key = await initKeys({ dir, timing, clock: later, newKey: pooledKey })
  const keys = await KeyStore.open({ dir, timing, clock })
  t.teardown(() => keys.close())
  t.teardown(reportSigningKey(keys, logger, clock))
  t.match(logs.records(), [{ level: 50, event: 'no_signing_key', previous: undefined, next: key.kid }])

  clock.advance(5 * min)
  keys.statuses()
  t.match(logs.records().at(-1), { level: 40, event: 'signing_key_active', kid: key.kid })

  const { key: second } = await rotateKeys({ dir, timing, clock, newKey: pooledKey }, { activateInMs: 20 * min })
  await keys.reload()
  clock.advance(20 * min)
  keys.statuses()
  t.match(logs.records().at(-1), { level: 30, event: 'signing_key_switched', kid: second.kid, previous: key.kid })
  t.equal(logs.records().filter((r) => r.level === 50).length, 1, 'a switch is not an error')
})
