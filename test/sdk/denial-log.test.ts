import grpc from '@grpc/grpc-js'
import t from 'tap'
import { DenialLog } from '../../packages/sdk/src/denial-log.js'
import type { Denial } from '../../packages/sdk/src/guard.js'
import { InventoryClient, startCallee, unary } from '../helpers/callee.js'
import { startHarness } from '../helpers/harness.js'

function capture() {
  const lines: { fields: Record<string, unknown>; message: string }[] = []
  return { lines, logger: { warn: (fields: Record<string, unknown>, message: string) => lines.push({ fields, message }) } }
}
const denial = (reason: Denial['reason'], sub?: string, path = '/x'): Denial => ({ allowed: false, status: 401, reason, method: 'GET', path, ...(sub === undefined ? {} : { sub, aud: 'inventory-service' }) })

t.test('a line at once per (reason, caller), then one count per interval; a quiet key is forgotten', async (t) => {
  const { lines, logger } = capture()
  const log = new DenialLog(logger, { intervalMs: 60_000 })
  t.teardown(() => log.close())
  for (let i = 0; i < 5; i++) log.note(denial('ERR_TOKEN_SIGNATURE', undefined, `/x/${i}`))
  log.note(denial('ERR_BINDING_MISMATCH', 'order-service'))
  log.note(denial('ERR_BINDING_MISMATCH', 'payment-service'))
  log.note(denial('ERR_BINDING_MISMATCH', 'payment-service'))
  t.same(
    lines.map((l) => [l.fields.reason, l.fields.sub, l.fields.count]),
    [
      ['ERR_TOKEN_SIGNATURE', undefined, 1],
      ['ERR_BINDING_MISMATCH', 'order-service', 1],
      ['ERR_BINDING_MISMATCH', 'payment-service', 1],
    ],
  )
  lines.length = 0
  log.flush()
  t.same(
    lines.map((l) => [l.fields.reason, l.fields.sub, l.fields.count, l.fields.path, l.message]),
    [
      ['ERR_TOKEN_SIGNATURE', undefined, 4, undefined, 'service call denied (4 more in the last 60s)'],
      ['ERR_BINDING_MISMATCH', 'payment-service', 1, undefined, 'service call denied (1 more in the last 60s)'],
    ],
    'a summary per key that had more; no path (it speaks for many calls)',
  )
  lines.length = 0
  log.flush() // nothing since: every key forgotten
  t.same(lines, [])
  log.note(denial('ERR_TOKEN_SIGNATURE'))
  t.equal(lines.length, 1, 'a forgotten key: a line at once again')
})

t.test('keys are bounded: beyond maxKeys, denials are counted together; a throwing logger changes nothing', async (t) => {
  const { lines, logger } = capture()
  const log = new DenialLog(logger, { maxKeys: 3 })
  t.teardown(() => log.close())
  for (let i = 0; i < 100; i++) log.note(denial('ERR_ROUTE_FORBIDDEN', `caller-${i}`))
  t.equal(lines.length, 4, 'three keys and one overflow line')
  t.match(lines[3]?.fields, { overflow: true, count: 1 })
  log.close()
  t.match(lines.at(-1)?.fields, { overflow: true, count: 96 }, 'close writes what is pending')
  const throwing = new DenialLog({ warn: () => {
    throw new Error('log down')
  } })
  t.doesNotThrow(() => throwing.note(denial('ERR_TOKEN_MISSING')))
  throwing.close()
  t.throws(() => new DenialLog(logger, { intervalMs: 0 }), TypeError)
})

t.test('gRPC wrappers given a logger write bounded denial lines, shared across methods', async (t) => {
  const h = await startHarness(t)
  const callee = await startCallee(t, h)
  const order = h.pki.client('order-service')
  const noToken = new InventoryClient(`localhost:${callee.grpcPort}`, grpc.credentials.createSsl(Buffer.from(h.pki.ca.certPem), Buffer.from(order.keyPem), Buffer.from(order.certPem)))
  t.teardown(() => noToken.close())
  for (let i = 0; i < 20; i++) t.equal(await unary(noToken, i % 2 === 0 ? 'GetStock' : 'Admin'), 'UNAUTHENTICATED')
  const lines = callee.logs.records().filter((r) => r.event === 'service_call_denied' && r.interval_s === undefined)
  t.same(
    lines.map(({ status, reason, path, count }) => ({ status, reason, path, count })),
    [{ status: 401, reason: 'ERR_TOKEN_MISSING', path: '/demo.Inventory/GetStock', count: 1 }],
    'one line at once for 20 denials of two methods (the rest in the summary)',
  )
  t.equal(callee.counters.snapshot().denied.ERR_TOKEN_MISSING, 20)
})
