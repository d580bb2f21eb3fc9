/**
 * serviceClient against a guarded gRPC service over real mTLS: the token in metadata, one retry on
 * UNAUTHENTICATED for the calls whose request can be sent again, a bounded number of token requests.
 */
import grpc from '@grpc/grpc-js'
import t, { type Test } from 'tap'
import { serviceClient } from '../../packages/sdk/src/grpc.js'
import { TokenClient } from '../../packages/sdk/src/token-client.js'
import { revokeKey } from '../../src/keys/admin.js'
import { createServerCert } from '../../src/pki/dev-pki.js'
import { InventoryClient, INVENTORY_GRPC, startCallee, unary, upload, watch, type Callee } from '../helpers/callee.js'
import { startHarness, type Harness } from '../helpers/harness.js'

const issued = (h: Harness): number => h.logs.records().filter((r) => r.event === 'token_issued').length

function clientOf(t: Test, h: Harness, port: number, scopes = 'stock:read') {
  const order = h.pki.client('order-service')
  const tokens = new TokenClient({ tokenUrl: `https://localhost:${h.port}/token`, ca: h.pki.ca.certPem, cert: order.certPem, key: order.keyPem, clock: h.clock, backgroundRefresh: false })
  const retries: string[] = []
  const client = serviceClient(InventoryClient, `localhost:${port}`, tokens, 'inventory-service', scopes, { onRetry: (i) => retries.push(i.method) })
  t.teardown(() => {
    client.close()
    tokens.close()
  })
  return { client, tokens, retries }
}

async function revoke(h: Harness, callee: Callee): Promise<void> {
  const kid = h.keys.signingKey()?.kid as string
  await revokeKey({ dir: h.config.keysDir, timing: { tokenTtl: 600, jwksMaxAge: 600 }, clock: h.clock }, kid)
  await h.keys.reload()
  await callee.verifier.refresh()
}

t.test('serviceClient: every kind of call carries the token over the certificate it is bound to', async (t) => {
  const h = await startHarness(t)
  const callee = await startCallee(t, h)
  const { client } = clientOf(t, h, callee.grpcPort)
  t.equal(await unary(client, 'GetStock'), 'OK {"sku":"sku-1","caller":"order-service"}')
  t.equal(await watch(client), 'OK [{"n":1},{"n":2}]')
  t.equal(await upload(client), 'OK {"received":2,"caller":"order-service"}')
  t.equal(await unary(client, 'Admin'), 'PERMISSION_DENIED')
  t.equal(issued(h), 1)
  t.ok(client instanceof grpc.Client, 'it is a client of its class')
  t.same(new Set(callee.seen.map((s) => s.peer === s.boundTo)), new Set([true]))
  const { client: refused } = clientOf(t, h, callee.grpcPort, 'stock:write')
  t.equal(await unary(refused, 'GetStock'), 'UNAUTHENTICATED', 'authz refused the token: UNAUTHENTICATED, as before')
})

t.test("after the README's emergency revoke: unary and server-streaming calls retried once; client streaming is not", async (t) => {
  const h = await startHarness(t)
  const callee = await startCallee(t, h)
  const { client, retries } = clientOf(t, h, callee.grpcPort)
  t.equal(await unary(client, 'GetStock'), 'OK {"sku":"sku-1","caller":"order-service"}')
  await revoke(h, callee)
  const results = await Promise.all(Array.from({ length: 10 }, () => unary(client, 'GetStock')))
  t.same(new Set(results), new Set(['OK {"sku":"sku-1","caller":"order-service"}']), '10 concurrent calls, all answered')
  t.equal(issued(h), 2, 'one fresh token for all of them')
  t.ok(retries.length >= 1, `${retries.length} retried`)
  h.clock.advance(30_000) // the invalidation cooldown
  await revoke(h, callee)
  t.equal(await watch(client), 'OK [{"n":1},{"n":2}]', 'server streaming: retried, every message once')
  h.clock.advance(30_000)
  await revoke(h, callee)
  t.equal(await upload(client), 'UNAUTHENTICATED', 'client streaming: its messages cannot be sent again; the 401 as it came')
  t.equal(await upload(client), 'OK {"received":2,"caller":"order-service"}', '...its token was dropped: the next call has a fresh one')
  t.equal(issued(h), 4)
})

t.test('a service that answers UNAUTHENTICATED to everything: a bounded number of token requests', async (t) => {
  const h = await startHarness(t)
  const server = new grpc.Server()
  let calls = 0
  const refuse = (_call: unknown, callback: grpc.sendUnaryData<unknown>): void => {
    calls++
    callback({ code: grpc.status.UNAUTHENTICATED, details: '' })
  }
  server.addService(INVENTORY_GRPC, { GetStock: refuse, Admin: refuse, Watch: () => undefined, Upload: () => undefined })
  const tls = createServerCert(h.pki.ca)
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(
      '127.0.0.1:0',
      grpc.ServerCredentials.createSsl(Buffer.from(h.pki.ca.certPem), [{ private_key: Buffer.from(tls.keyPem), cert_chain: Buffer.from(tls.certPem) }], true),
      (err, bound) => (err === null ? resolve(bound) : reject(err)),
    ),
  )
  t.teardown(() => new Promise<void>((resolve) => server.tryShutdown(() => resolve())))
  const { client } = clientOf(t, h, port)
  for (let i = 0; i < 30; i++) t.equal(await unary(client, 'GetStock'), 'UNAUTHENTICATED')
  const concurrent = await Promise.all(Array.from({ length: 30 }, () => unary(client, 'GetStock')))
  t.same(new Set(concurrent), new Set(['UNAUTHENTICATED']))
  t.equal(issued(h), 2, '60 calls: two tokens')
  t.equal(calls, 61, 'one retry in all')
})
