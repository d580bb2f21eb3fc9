/**
 * The callee policy file under a running service: watched from `load` on (both kits), a bad file reported
 * once rather than at every poll, the rules in force kept.
 */
import { execFileSync } from 'node:child_process'
import { rename, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { pino } from 'pino'
import t from 'tap'
import { CalleeCounters } from '../../packages/sdk/src/callee-counters.js'
import { CalleePolicy, POLICY_POLL_MS } from '../../packages/sdk/src/callee-policy.js'
import type { CalleePolicyError } from '../../packages/sdk/src/errors.js'

const caller = (scopes: string[]) => ({ service: 'order-service', scopes, audience: 'inventory-service', tokenId: 'j', expiresAt: 0, claims: {} })
/** As an editor or a ConfigMap update writes: a whole new file renamed into place. */
async function replace(path: string, text: string): Promise<void> {
  await writeFile(`${path}.tmp`, text)
  await rename(`${path}.tmp`, path)
}
const rules = (scope: string) => JSON.stringify({ routes: { 'GET /stock/:sku': { scopes: [scope] } } })

/** The reload events of a policy, in order, each awaited as it comes. */
function reloads() {
  const seen: (CalleePolicyError | undefined)[] = []
  let wake: (() => void) | undefined
  return {
    onReload: (err: CalleePolicyError | undefined) => {
      seen.push(err)
      wake?.()
    },
    async next(): Promise<CalleePolicyError | undefined> {
      while (seen.length === 0) await new Promise<void>((resolve) => (wake = resolve))
      return seen.shift()
    },
    get pending() {
      return seen.length
    },
  }
}

t.test('load watches the file from the start: a new file is in force without calling watch()', async (t) => {
  t.equal(POLICY_POLL_MS, 2000, 'the Go kit polls every 2 s too')
  const dir = t.testdir({ 'policy.json': rules('stock:read') })
  const path = join(dir, 'policy.json')
  const events = reloads()
  const policy = await CalleePolicy.load(path, { onReload: events.onReload })
  t.teardown(() => policy.close())
  t.equal(policy.decide('GET /stock/:sku', caller(['stock:deduct'])), 'forbidden')
  await replace(path, rules('stock:deduct'))
  t.equal(await events.next(), undefined, 'a reload that changed the rules')
  t.equal(policy.decide('GET /stock/:sku', caller(['stock:deduct'])), 'allow')
  const once = await CalleePolicy.load(path, { pollMs: 0 })
  t.equal(once.decide('GET /stock/:sku', caller(['stock:deduct'])), 'allow', 'pollMs 0: read once')
})

t.test('a bad file is reported once, not at every poll; the rules in force stay (regression)', async (t) => {
  const dir = t.testdir({ 'policy.json': rules('stock:read') })
  const path = join(dir, 'policy.json')
  const events = reloads()
  const policy = await CalleePolicy.load(path, { pollMs: 10, onReload: events.onReload })
  t.teardown(() => policy.close())
  await replace(path, '{"routes": {"GET /stock/:sku": {"scopes": "oops"}}}')
  t.match(await events.next(), { code: 'ERR_POLICY_INVALID', entry: '/routes/GET ~1stock~1:sku/scopes' })
  // Many polls of the same bad file go by; then a good one: the next event is its change, not the error again.
  await replace(path, '{"routes": {"GET /stock/:sku": {"scopes": "oops"}}}')
  await new Promise((resolve) => setTimeout(resolve, 100))
  t.equal(policy.decide('GET /stock/:sku', caller(['stock:read'])), 'allow', 'the rules in force stay')
  await replace(path, rules('stock:deduct'))
  t.equal(await events.next(), undefined, 'the fixed file, with no repeated report of the bad one before it')
  await replace(path, '{"routes": {"GET /stock/:sku": {"scopes": "oops"}}}')
  t.match(await events.next(), { code: 'ERR_POLICY_INVALID' }, 'the same bad file after a good one is news again')
})

t.test('files that are not files: a FIFO, a directory, a device, a huge file are refused at once (regression: a FIFO blocked a libuv thread and the exit for ever)', async (t) => {
  const dir = t.testdir({ 'policy.json': rules('stock:read'), 'big.json': JSON.stringify({ routes: {}, $schema: 'x'.repeat(1 << 20) }) })
  execFileSync('mkfifo', [join(dir, 'fifo.json')])
  for (const [name, path] of [
    ['a FIFO', join(dir, 'fifo.json')],
    ['a directory', dir],
    ['a device', '/dev/zero'],
    ['over 1 MiB', join(dir, 'big.json')],
  ] as const) {
    await t.rejects(CalleePolicy.load(path, { pollMs: 0 }), { code: 'ERR_POLICY_READ' }, name)
  }
  const policy = await CalleePolicy.load(join(dir, 'policy.json'), { pollMs: 0 })
  await rename(join(dir, 'fifo.json'), join(dir, 'policy.json'))
  t.match(await policy.reload(), { code: 'ERR_POLICY_READ', message: /not a regular file/ }, 'swapped in under a loaded policy')
  t.equal(policy.decide('GET /stock/:sku', caller(['stock:read'])), 'allow', 'the rules in force stay')
})

t.test("a pino logger (Fastify's app.log) is a policy logger: one line per distinct failure, one for the recovery", async (t) => {
  const dir = t.testdir({ 'policy.json': rules('stock:read') })
  const path = join(dir, 'policy.json')
  const lines: Record<string, unknown>[] = []
  const logger = pino({ base: undefined }, { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) })
  const counters = new CalleeCounters()
  const policy = await CalleePolicy.load(path, { pollMs: 0, logger, counters })
  t.teardown(() => policy.close())
  await replace(path, '{"routes": {"GET /x": {"scopes": "oops"}}}')
  t.match(await policy.reload(), { code: 'ERR_POLICY_INVALID' })
  t.match(await policy.reload(), { code: 'ERR_POLICY_INVALID' }, 'the same failure again')
  await replace(path, rules('stock:deduct'))
  t.equal(await policy.reload(), undefined)
  t.match(lines, [
    { level: 50, event: 'policy_reload_failed', source: path, code: 'ERR_POLICY_INVALID', msg: /previous rules stay in force/ },
    { level: 40, event: 'policy_reload_recovered', source: path, failures: 2 },
  ])
  t.equal(lines.length, 2)
  t.match(counters.snapshot(), { policyReloadFailures: 2, policyReloadFailing: false })
})
