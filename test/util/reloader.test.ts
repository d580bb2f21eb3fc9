import t, { type Test } from 'tap'
import { Reloader, type ReloadEvent, type Schedule } from '../../src/util/reloader.js'

/** An attempt that fails `failures` times (with the same message), then loads once and is unchanged after. */
function source(failures: number) {
  let calls = 0
  return {
    get calls() {
      return calls
    },
    attempt: async (): Promise<boolean> => {
      calls++
      if (calls <= failures) throw new Error('key file not there yet')
      return calls === failures + 1
    },
  }
}

/** Timers the test fires by hand: which retries were scheduled, and after how long. */
function manualTimers() {
  const pending: { fn: () => unknown; ms: number; cancelled: boolean }[] = []
  const schedule: Schedule = (fn, ms) => {
    const timer = { fn, ms, cancelled: false }
    pending.push(timer)
    return { cancel: () => void (timer.cancelled = true) }
  }
  return {
    schedule,
    /** Live timers, in the order they were set. */
    get live() {
      return pending.filter((p) => !p.cancelled)
    },
    /** Fires the oldest live timer; resolves when what it started is done. */
    async fire(): Promise<void> {
      const next = pending.find((p) => !p.cancelled)
      if (next === undefined) throw new Error('no timer to fire')
      next.cancelled = true
      await next.fn()
    },
  }
}

function setup(t: Test, failures: number) {
  const src = source(failures)
  const timers = manualTimers()
  const reloader = new Reloader({ attempt: src.attempt, toError: (e) => e as Error, backoff: { initialMs: 500, maxMs: 4000 }, schedule: timers.schedule })
  const events: ReloadEvent[] = []
  reloader.onEvent((e) => events.push(e))
  t.teardown(() => reloader.close())
  return { src, timers, reloader, events }
}

t.test('a failed reload is retried with backoff until it loads, and reported once (regression: retried never)', async (t) => {
  const { src, timers, reloader, events } = setup(t, 3)
  reloader.watch([t.testdir()], 60_000)
  const first = await reloader.reload()
  t.equal(first.error?.message, 'key file not there yet', 'the first failure is returned')
  t.ok(reloader.failingSince !== undefined, 'failing')
  const delays: number[] = []
  while (reloader.failingSince !== undefined) {
    t.equal(timers.live.length, 1, 'exactly one retry is scheduled while failing')
    delays.push((timers.live[0] as { ms: number }).ms)
    const before = src.calls
    await timers.fire()
    t.equal(src.calls, before + 1, 'the retry made one attempt')
  }
  t.same(delays.slice(0, 2), [500, 1000], 'delays grow')
  t.same(events.map((e) => e.kind), ['failed', 'recovered'], 'the repeated failure is reported once; the recovery once')
  t.match(events[1], { kind: 'recovered', changed: true })
  t.equal(timers.live.length, 0, 'no retry once it loads')
})

t.test('retry delays are bounded', async (t) => {
  const { timers, reloader } = setup(t, 100)
  reloader.watch([t.testdir()], 60_000)
  const delays: number[] = []
  for (let i = 0; i < 7; i++) {
    await reloader.reload()
    delays.push((timers.live[0] as { ms: number }).ms)
  }
  t.same(delays, [500, 1000, 2000, 4000, 4000, 4000, 4000])
})

t.test('without watch() nothing retries in the background; close() cancels the retry', async (t) => {
  const { src, timers, reloader } = setup(t, 100)
  await reloader.reload()
  await reloader.reload()
  t.equal(timers.live.length, 0, 'not watching: no retry scheduled')
  t.equal(src.calls, 2)
  reloader.watch([t.testdir()], 60_000)
  await reloader.reload()
  t.equal(timers.live.length, 1, 'watching: a retry is scheduled')
  reloader.close()
  t.equal(timers.live.length, 0, 'closed: the retry is cancelled')
})

t.test('force reports a failure that was reported before (SIGHUP)', async (t) => {
  const { reloader, events } = setup(t, 100)
  await reloader.reload()
  t.same(await reloader.reload(), { changed: false }, 'the same failure again: not reported')
  t.equal((await reloader.reload(true)).error?.message, 'key file not there yet')
  t.same(events.map((e) => e.kind), ['failed', 'failed'])
})
