/**
 * The caller's certificate renewed under traffic (a kubelet `..data` swap, twice), with serviceFetch and
 * serviceClient: every call succeeds, and every call a guarded service let through came over the very
 * certificate its token is bound to — no token ever travels over a connection of another certificate.
 */
import t from 'tap'
import { thumbprintOf } from '../../packages/sdk/src/certificate.js'
import { serviceClient } from '../../packages/sdk/src/grpc.js'
import { serviceFetch } from '../../packages/sdk/src/service-fetch.js'
import { TlsFiles } from '../../packages/sdk/src/tls-files.js'
import { TokenClient } from '../../packages/sdk/src/token-client.js'
import { createClientCert } from '../../src/pki/dev-pki.js'
import { boundTo, InventoryClient, startCallee, unary } from '../helpers/callee.js'
import { startHarness } from '../helpers/harness.js'
import { VALID_FROM } from '../helpers/material.js'
import { kubeletVolume } from '../helpers/tls-files.js'

t.test('certificates renewed twice under HTTP and gRPC traffic: zero failures, every token over its own certificate', async (t) => {
  const h = await startHarness(t)
  const callee = await startCallee(t, h)
  const certs = [h.pki.client('order-service'), createClientCert(h.pki.ca, 'order-service', VALID_FROM), createClientCert(h.pki.ca, 'order-service', VALID_FROM)] as const
  const volume = kubeletVolume(t.testdir(), certs[0], h.pki.ca.certPem)
  const files = new TlsFiles(volume.paths, { pollMs: 0 })
  const tokens = new TokenClient({ tokenUrl: `https://localhost:${h.port}/token`, tls: files, clock: h.clock, backgroundRefresh: false })
  const inventory = serviceFetch(tokens, 'inventory-service', 'stock:read')
  const grpcInventory = serviceClient(InventoryClient, `localhost:${callee.grpcPort}`, tokens, 'inventory-service', 'stock:read')
  t.teardown(() => {
    grpcInventory.close()
    tokens.close()
    files.close()
  })

  // Eight HTTP and eight gRPC callers, each calling in a loop until told to stop.
  const outcomes = { ok: 0, failed: [] as string[] }
  let waiter: { until: () => boolean; resolve: () => void } | undefined
  const settled = (result: string): void => {
    if (result === 'ok') outcomes.ok++
    else outcomes.failed.push(result)
    // Failures end the wait too: the assertions below then say what went wrong, rather than a timeout.
    if (waiter !== undefined && (waiter.until() || outcomes.failed.length >= 20)) {
      waiter.resolve()
      waiter = undefined
    }
  }
  /** Resolves once `until` holds after some call settled (calls are what moves the test). */
  const after = (until: () => boolean): Promise<void> => new Promise((resolve) => (waiter = { until, resolve }))
  let stop = false
  const http = async (): Promise<void> => {
    while (!stop) {
      const res = await inventory(`https://localhost:${callee.port}/stock/sku-1`).catch((err: Error) => err)
      settled(res instanceof Response ? (res.status === 200 ? 'ok' : `http ${res.status}`) : `http ${res.message}`)
      if (res instanceof Response) await res.arrayBuffer()
    }
  }
  const grpc = async (): Promise<void> => {
    while (!stop) {
      const res = await unary(grpcInventory, 'GetStock')
      settled(res.startsWith('OK ') ? 'ok' : `grpc ${res}`)
    }
  }
  const workers = [...Array.from({ length: 8 }, http), ...Array.from({ length: 8 }, grpc)]

  const seenWith = (cert: (typeof certs)[number]): number => callee.seen.filter((s) => s.peer === thumbprintOf(cert.certPem)).length
  await after(() => seenWith(certs[0]) >= 40)
  for (const next of [certs[1], certs[2]]) {
    volume.write(next, h.pki.ca.certPem)
    t.equal(await files.reload(), true, 'renewed while calls are in flight')
    await after(() => seenWith(next) >= 40)
  }
  stop = true
  await Promise.all(workers)

  t.same(outcomes.failed, [], `${outcomes.ok} calls, no failure`)
  t.ok(
    certs.every((c) => seenWith(c) > 0),
    'calls came over each of the three certificates',
  )
  t.same(
    callee.seen.filter((s) => s.peer !== s.boundTo),
    [],
    'every call let through carried a token bound to the certificate of its connection',
  )
  t.same(callee.counters.snapshot().denied.ERR_BINDING_MISMATCH, 0, 'no token ever came over another certificate')
  t.equal(boundTo(await tokens.getToken('inventory-service', 'stock:read')), thumbprintOf(certs[2].certPem), 'tokens now: bound to the last certificate')
})
