import t from 'tap'
import { createLogger } from '../../src/logger.js'
import { LogSummary } from '../../packages/sdk/src/log-summary.js'
import { LogCapture } from '../helpers/harness.js'

function summary(maxKeys?: number) {
  const logs = new LogCapture()
  const logger = createLogger('info', logs)
  const s = new LogSummary({ logger, event: 'rate_limited', message: 'caller over its rate limit', intervalMs: 10_000, ...(maxKeys === undefined ? {} : { maxKeys }) })
  t.teardown(() => s.close())
  return { s, logs, records: () => logs.records().filter((r) => r.event === 'rate_limited') }
}

t.test('a flood of one key is one line at once and one line per interval with the count, never a line per event', async (t) => {
  const { s, records } = summary()
  for (let i = 0; i < 1000; i++) s.note('order-service', { sub: 'order-service' })
  t.equal(records().length, 1, 'the first event is written at once')
  t.match(records()[0], { sub: 'order-service', count: 1, level: 40 })
  s.flush()
  t.equal(records().length, 2)
  t.match(records()[1], { sub: 'order-service', count: 999, interval_s: 10 })
  s.flush()
  t.equal(records().length, 2, 'a quiet interval writes nothing')
  t.equal(s.size, 0, 'and forgets the key')
  s.note('order-service', { sub: 'order-service' })
  t.equal(records().length, 3, 'after a quiet interval the next event is a line at once again')
})

t.test('keys are summarised separately; beyond maxKeys events are counted together (overflow)', async (t) => {
  const { s, records } = summary(2)
  s.note('a', { sub: 'a' })
  s.note('b', { sub: 'b' })
  for (let i = 0; i < 500; i++) s.note(`x${i}`, { sub: `x${i}` })
  t.equal(s.size, 3, 'a, b and the overflow')
  t.same(records().map((r) => r.sub ?? r.overflow), ['a', 'b', true])
  s.flush()
  t.match(records().at(-1), { overflow: true, count: 499 })
})

t.test('close writes what is pending', async (t) => {
  const { s, records } = summary()
  s.note('a', { reason: 'unknown_ca' })
  s.note('a', { reason: 'unknown_ca' })
  s.close()
  t.match(records().at(-1), { reason: 'unknown_ca', count: 1 })
  t.equal(s.size, 0)
})

t.test('a logger without the level asked for writes at warn; a logger that throws stops no count', async (t) => {
  const lines: [Record<string, unknown>, string][] = []
  const warnOnly = new LogSummary({ logger: { warn: (f, m) => lines.push([f, m]) }, event: 'e', message: 'm', level: 'error' })
  t.teardown(() => warnOnly.close())
  warnOnly.note('k', { sub: 'a' })
  t.same(lines, [[{ event: 'e', sub: 'a', count: 1 }, 'm']])
  let calls = 0
  const throwing = new LogSummary({
    logger: {
      warn: () => {
        calls++
        throw new Error('disk full')
      },
    },
    event: 'e',
    message: 'm',
  })
  t.teardown(() => throwing.close())
  t.doesNotThrow(() => throwing.note('k', { sub: 'a' }))
  throwing.note('k', { sub: 'a' })
  t.doesNotThrow(() => throwing.flush())
  t.equal(calls, 2, 'the first event and the summary of the second were both attempted')
  t.throws(() => new LogSummary({ logger: { warn: () => undefined }, event: 'e', message: 'm', intervalMs: 0 }), TypeError, 'an interval must be positive')
})
