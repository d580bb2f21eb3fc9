/**
 * An authz instance for a test: a temp keys directory with a real key, the sample policy (or one given),
 * a manual clock, log capture, and both apps listening on port 0 over real sockets.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import type { FastifyInstance } from 'fastify'
import type { Test } from 'tap'
import { buildApp, buildOpsApp, MAIN_LISTEN_BACKLOG, type ConnectionLimits } from '../../src/app.js'
import { ManualClock } from '../../src/clock.js'
import { loadConfig, type Config } from '../../src/config.js'
import { initKeys } from '../../src/keys/admin.js'
import { KeyStore } from '../../src/keys/store.js'
import { createLogger } from '../../src/logger.js'
import { createMetrics, type Metrics } from '../../src/metrics.js'
import type { KeyPairPem } from '../../src/pki/dev-pki.js'
import { PolicyStore } from '../../src/policy/store.js'
import { httpCall, httpsCall, type RequestOptions, type Response } from './http.js'
import { pooledKey } from './material.js'
import { testPki, type TestPki } from './pki.js'

export const SAMPLE_POLICY = {
  audiences: ['inventory-service', 'order-service', 'payment-service'],
  grants: {
    'order-service': { 'inventory-service': ['stock:read', 'stock:deduct'] },
    'payment-service': { 'order-service': ['order:read'] },
  },
}

export class LogCapture extends Writable {
  readonly lines: string[] = []
  readonly #waiters = new Set<{ test(record: Record<string, unknown>): boolean; resolve(record: Record<string, unknown>): void }>()
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: () => void): void {
    for (const line of chunk.toString('utf8').split('\n')) {
      if (line === '') continue
      this.lines.push(line)
      for (const waiter of this.#waiters) {
        const record = JSON.parse(line) as Record<string, unknown>
        if (waiter.test(record)) {
          this.#waiters.delete(waiter)
          waiter.resolve(record)
        }
      }
    }
    cb()
  }
  /** Resolves with the next log record that `test` accepts (logged from now on). */
  next(test: (record: Record<string, unknown>) => boolean): Promise<Record<string, unknown>> {
    return new Promise((resolve) => this.#waiters.add({ test, resolve }))
  }
  get text(): string {
    return this.lines.join('\n')
  }
  records(): Record<string, unknown>[] {
    return this.lines.map((l) => JSON.parse(l) as Record<string, unknown>)
  }
}

export interface Harness {
  readonly dir: string
  readonly config: Config
  readonly clock: ManualClock
  readonly pki: TestPki
  readonly main: FastifyInstance
  readonly ops: FastifyInstance
  readonly keys: KeyStore
  readonly policy: PolicyStore
  readonly metrics: Metrics
  readonly logs: LogCapture
  readonly port: number
  readonly opsPort: number
  /** POST /token as `client` (default: order-service) with a JSON body. */
  token(body: unknown, client?: KeyPairPem, headers?: Record<string, string>): Promise<Response>
  call(options: RequestOptions): Promise<Response>
  opsCall(path: string, headers?: Record<string, string>): Promise<Response>
}

export interface HarnessOptions {
  readonly env?: Record<string, string>
  readonly policy?: unknown
  /** Skip `keys init` (no signing key). */
  readonly noKey?: boolean
  readonly start?: number
  /** Share an existing keys directory (another replica's); no key is created. */
  readonly keysDir?: string
  /** Share a clock with another replica. */
  readonly clock?: ManualClock
  /** Watch the keys directory and policy file like the server does (poll interval, ms). */
  readonly watchMs?: number
  /** A CRL (PEM) for the main listener. */
  readonly crl?: string
  /** Connection limits of the main listener. */
  readonly limits?: Partial<ConnectionLimits>
  /** Interval of the summary lines of repeated denials, ms. */
  readonly logSummaryMs?: number
}

export async function startHarness(t: Test, options: HarnessOptions = {}): Promise<Harness> {
  // One temp directory per instance (t.testdir is one per test, and a test may run two replicas).
  const dir = mkdtempSync(join(tmpdir(), 'authz-test-'))
  mkdirSync(join(dir, 'keys'), { mode: 0o700 })
  writeFileSync(join(dir, 'policy.json'), JSON.stringify(options.policy ?? SAMPLE_POLICY))
  const pki = testPki()
  const config = loadConfig(
    {
      AUTHZ_KEYS_DIR: options.keysDir ?? join(dir, 'keys'),
      AUTHZ_POLICY: join(dir, 'policy.json'),
      AUTHZ_DEV: 'true',
      AUTHZ_LOG_LEVEL: 'debug',
      ...options.env,
    },
    dir,
  )
  const clock = options.clock ?? new ManualClock(options.start ?? Date.UTC(2026, 0, 1, 12))
  const timing = { tokenTtl: config.tokenTtl, jwksMaxAge: config.jwksMaxAge }
  if (options.keysDir === undefined) {
    if (options.noKey !== true) await initKeys({ dir: config.keysDir, timing, clock, newKey: pooledKey })
    else writeFileSync(join(config.keysDir, 'manifest.json'), JSON.stringify({ version: 1, keys: [] }))
  }
  const keys = await KeyStore.open({ dir: config.keysDir, timing, clock })
  const policy = await PolicyStore.load(config.policyPath, config.identity)
  const metrics = createMetrics({ defaults: false })
  const logs = new LogCapture()
  const logger = createLogger(config.logLevel, logs)
  const deps = {
    keys,
    policy,
    metrics,
    clock,
    logger,
    ...(options.limits === undefined ? {} : { limits: options.limits }),
    ...(options.logSummaryMs === undefined ? {} : { logSummaryMs: options.logSummaryMs }),
  }
  const tls = { cert: pki.server.certPem, key: pki.server.keyPem, clientCa: pki.ca.certPem, crl: options.crl }
  const main = await buildApp(config, tls, deps)
  const ops = await buildOpsApp(config, deps)
  if (options.watchMs !== undefined) {
    keys.watch(() => undefined, options.watchMs)
    policy.watch(() => undefined, options.watchMs)
  }
  await main.listen({ host: '127.0.0.1', port: 0, backlog: MAIN_LISTEN_BACKLOG })
  await ops.listen({ host: '127.0.0.1', port: 0 })
  t.teardown(async () => {
    keys.close()
    policy.close()
    await Promise.all([main.close(), ops.close()])
    rmSync(dir, { recursive: true, force: true })
  })
  const port = (main.server.address() as { port: number }).port
  const opsPort = (ops.server.address() as { port: number }).port
  const call = (o: RequestOptions): Promise<Response> => httpsCall(port, { ca: pki.ca.certPem, ...o })
  return {
    dir,
    config,
    clock,
    pki,
    main,
    ops,
    keys,
    policy,
    metrics,
    logs,
    port,
    opsPort,
    call,
    token: (body, client = pki.client('order-service'), headers = {}) =>
      call({
        method: 'POST',
        path: '/token',
        client,
        headers: { 'content-type': 'application/json', ...headers },
        body: typeof body === 'string' ? body : JSON.stringify(body),
      }),
    opsCall: (path, headers = {}) => httpCall(opsPort, { path, headers }),
  }
}
