/**
 * One call end to end from a SPIFFE-identified caller (an X.509-SVID made at test time, its files read by
 * TlsFiles) through the TypeScript kit: authz with AUTHZ_IDENTITY=spiffe issues the token, serviceFetch and
 * serviceClient carry it, serviceAuth and the gRPC wrappers verify it and decide with a callee policy that
 * names the SPIFFE ID.
 */
import { mkdirSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { serviceClient } from '../../packages/sdk/src/grpc.js'
import { serviceFetch } from '../../packages/sdk/src/service-fetch.js'
import { TlsFiles } from '../../packages/sdk/src/tls-files.js'
import { TokenClient } from '../../packages/sdk/src/token-client.js'
import { CALLEE_POLICY, InventoryClient, startCallee, unary } from '../helpers/callee.js'
import { startHarness } from '../helpers/harness.js'
import { ORDER, SPIFFE_ENV } from '../helpers/spiffe.js'
import { renamedFiles } from '../helpers/tls-files.js'

const REPORTS = 'spiffe://example.org/ns/default/sa/reports'

t.test('a SPIFFE-identified caller through the TypeScript kit, HTTP and gRPC, allowed by its SPIFFE ID', async (t) => {
  const h = await startHarness(t, {
    env: SPIFFE_ENV,
    policy: { audiences: ['inventory-service'], grants: { [ORDER]: { 'inventory-service': ['stock:read'] }, [REPORTS]: { 'inventory-service': ['stock:read'] } } },
  })
  const callee = await startCallee(t, h, {
    policy: {
      service: 'inventory-service',
      routes: {
        ...CALLEE_POLICY.routes,
        'GET /stock/:sku': { scopes: ['stock:read'], callers: [ORDER] },
        '/demo.Inventory/GetStock': { scopes: ['stock:read'], callers: [ORDER] },
      },
    },
  })
  const base = t.testdir()
  const caller = (spiffeId: string) => {
    const dir = join(base, spiffeId.replace(/\W+/g, '+'))
    mkdirSync(dir)
    const files = new TlsFiles(renamedFiles(dir, h.pki.svid(spiffeId), h.pki.ca.certPem).paths, { pollMs: 0 })
    const tokens = new TokenClient({ tokenUrl: `https://localhost:${h.port}/token`, tls: files, clock: h.clock, backgroundRefresh: false })
    const grpcClient = serviceClient(InventoryClient, `localhost:${callee.grpcPort}`, tokens, 'inventory-service', 'stock:read')
    t.teardown(() => {
      grpcClient.close()
      tokens.close()
      files.close()
    })
    return { fetch: serviceFetch(tokens, 'inventory-service', 'stock:read'), grpcClient }
  }
  const order = caller(ORDER)
  const res = await order.fetch(`https://localhost:${callee.port}/stock/sku-1`)
  t.equal(res.status, 200)
  t.same(await res.json(), { sku: 'sku-1', caller: ORDER }, 'the handler sees the SPIFFE ID')
  t.equal(await unary(order.grpcClient, 'GetStock'), `OK {"sku":"sku-1","caller":"${ORDER}"}`)
  t.match(callee.seen, [{ caller: ORDER }, { caller: ORDER }])

  const reports = caller(REPORTS)
  t.equal((await reports.fetch(`https://localhost:${callee.port}/stock/sku-1`)).status, 403, 'another SPIFFE ID of the same trust domain: not a caller of the route')
  t.equal(await unary(reports.grpcClient, 'GetStock'), 'PERMISSION_DENIED')
  t.match(
    callee.logs.records().filter((r) => r.event === 'service_call_denied'),
    [{ status: 403, reason: 'ERR_ROUTE_FORBIDDEN', sub: REPORTS, aud: 'inventory-service' }],
    'the denial names the SPIFFE ID',
  )
})
