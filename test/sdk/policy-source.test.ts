/**
 * Callee policies pulled from a configuration center: conformance/policy-sources.json's sources and
 * answers (the Go kit runs them in clients/go/policy_source_test.go), and the schedule, the start, mutual
 * TLS and the secrets of a URL source, against a local HTTPS server. Time is a ManualClock: the pulls, the
 * retries and the fetch timeout move with it; nothing waits on a sleep.
 */
import { once } from 'node:events'
import { writeFileSync } from 'node:fs'
import { createServer as createHttpServer } from 'node:http'
import { createServer, type Server } from 'node:https'
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import { join } from 'node:path'
import { gzipSync } from 'node:zlib'
import t, { type Test } from 'tap'
import { CalleeCounters } from '../../packages/sdk/src/callee-counters.js'
import { CalleePolicy, type CalleePolicyLoadOptions, type PolicyLogger } from '../../packages/sdk/src/callee-policy.js'
import { ManualClock } from '../../packages/sdk/src/clock.js'
import { CalleePolicyError } from '../../packages/sdk/src/errors.js'
import { isUrlSource, parseUrlSource, POLICY_FETCH_TIMEOUT_MS, POLICY_POLL_MS, POLICY_PULL_MS, urlSource } from '../../packages/sdk/src/policy-source.js'
import { readVectors } from '../helpers/conformance.js'
import { testPki } from '../helpers/pki.js'

interface Answer {
  readonly name?: string
  readonly status?: number
  readonly body?: 'a' | 'b'
  readonly text?: string
  readonly size?: number
  readonly etag?: null | string
  readonly chunked?: boolean
  readonly encoding?: 'gzip'
  readonly unconditional?: boolean
  readonly start?: { readonly etag: null | string }
  readonly headers?: Record<string, string>
  readonly mode?: 'reset' | 'hang' | 'trickle' | 'down'
  readonly expect?: 'applied' | 'unchanged' | { code: string }
}
interface SourceVectors {
  defaults: { filePollMs: number; urlPullMs: number; jitter: number; retryFirstMs: number; fetchTimeoutMs: number; maxBytes: number }
  sources: { source: string; allowHttp?: boolean; expect: { kind?: 'file' | 'url'; shown?: string; refused?: boolean } }[]
  documents: Record<'a' | 'b', unknown>
  answers: Answer[]
}
const vectors = readVectors<SourceVectors>('policy-sources.json')
const pki = testPki()
const client = pki.client('inventory-service')
const tls = { ca: pki.ca.certPem, cert: client.certPem, key: client.keyPem }

// ---- a configuration server ---------------------------------------------------------------------------

/** An HTTPS server (client certificates of the test CA required) answering what it is told. */
async function configServer(t: Test) {
  let answer: Answer = { status: 200, body: 'a' }
  const requests: IncomingMessage[] = []
  const waiting: (() => void)[] = []
  let received = 0
  const sockets = new Set<Socket>()
  const hung = new Set<ServerResponse>()
  const document = (name: 'a' | 'b', size?: number): string => {
    const text = JSON.stringify(vectors.documents[name])
    return size === undefined ? text : text.padEnd(size, ' ')
  }
  const serve = (req: IncomingMessage, res: ServerResponse): void => {
    requests.push(req)
    received++
    for (const wake of waiting.splice(0)) wake()
    const a: Answer = req.url === '/redirected.json' ? { status: 200, body: 'b' } : answer
    if (a.mode === 'reset') return void req.socket.destroy()
    if (a.mode === 'hang' || a.mode === 'trickle') {
      hung.add(res)
      if (a.mode === 'trickle') {
        res.writeHead(200, { 'content-length': 100 })
        res.write('{"routes": ')
      }
      return
    }
    const headers: Record<string, string> = {}
    for (const [k, v] of Object.entries(a.headers ?? {})) headers[k] = v.replace('{port}', String(port))
    let body = ''
    if (a.text !== undefined) body = a.text
    else if (a.body !== undefined) {
      body = document(a.body, a.size)
      if (a.etag !== null) headers.etag = a.etag ?? `"${a.body}"`
    }
    if (a.encoding === 'gzip') {
      headers['content-encoding'] = 'gzip'
      body = gzipSync(body).toString('latin1')
    }
    let status = a.status ?? 200
    // The client must ask with the ETag of what it holds.
    if (status === 304 && a.unconditional !== true && req.headers['if-none-match'] !== '"a"') status = 412
    if (a.chunked === true) {
      res.writeHead(status, headers)
      res.write(body.slice(0, 1))
      res.end(body.slice(1))
      return
    }
    const bytes = Buffer.from(body, a.encoding === undefined ? 'utf8' : 'latin1')
    if (status !== 304 && status !== 204) headers['content-length'] = String(bytes.length)
    res.writeHead(status, headers)
    res.end(status === 304 || status === 204 ? undefined : bytes)
  }
  let server: Server | undefined
  let port = 0
  const up = async (): Promise<void> => {
    server = createServer({ key: pki.server.keyPem, cert: pki.server.certPem, ca: pki.ca.certPem, requestCert: true, rejectUnauthorized: true }, serve)
    server.on('connection', (socket: Socket) => {
      sockets.add(socket)
      socket.on('close', () => sockets.delete(socket))
    })
    server.listen(port, '127.0.0.1')
    await once(server, 'listening')
    port = (server.address() as { port: number }).port
  }
  const down = async (): Promise<void> => {
    const s = server
    server = undefined
    if (s === undefined) return
    for (const socket of sockets) socket.destroy()
    await new Promise((resolve) => s.close(resolve))
  }
  await up()
  t.teardown(async () => {
    for (const res of hung) res.destroy()
    await down()
  })
  return {
    get port() {
      return port
    },
    url: (path: string) => `https://127.0.0.1:${port}${path}`,
    set: (a: Answer) => void (answer = a),
    requests,
    /** Resolves at the next request (or at once, for one received since the last `drain`). */
    async request(): Promise<void> {
      if (received === 0) await new Promise<void>((resolve) => waiting.push(resolve))
      received--
    },
    drain: () => void (received = 0),
    up,
    down,
  }
}
type ConfigServer = Awaited<ReturnType<typeof configServer>>

// ---- a policy on it ---------------------------------------------------------------------------------------

interface Pulled {
  readonly error: CalleePolicyError | undefined
  readonly nextMs: number
}

/** Log lines, as a pino logger would write them. */
function capture(): PolicyLogger & { lines: Record<string, unknown>[]; failures(): Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = []
  return {
    lines,
    error: (fields, msg) => void lines.push({ level: 'error', ...fields, msg }),
    warn: (fields, msg) => void lines.push({ level: 'warn', ...fields, msg }),
    failures: () => lines.filter((l) => l.event === 'policy_reload_failed'),
  }
}

async function loadRemote(t: Test, source: string, options: CalleePolicyLoadOptions = {}) {
  const clock = new ManualClock(Date.UTC(2026, 0, 1, 12))
  const logger = capture()
  const counters = new CalleeCounters()
  const pulls: Pulled[] = []
  const waiting: (() => void)[] = []
  const policy = await CalleePolicy.load(source, {
    clock,
    logger,
    counters,
    onPull: (error, nextMs) => {
      pulls.push({ error, nextMs })
      for (const wake of waiting.splice(0)) wake()
    },
    ...options,
  })
  t.teardown(() => policy.close())
  return {
    policy,
    clock,
    logger,
    counters,
    pulls,
    async nextPull(): Promise<Pulled> {
      while (pulls.length === 0) await new Promise<void>((resolve) => waiting.push(resolve))
      return pulls.shift() as Pulled
    },
    /** Moves the clock to the next pull and waits for it; a hung answer gets the fetch timeout. */
    async pull(server: ConfigServer, hangs = false): Promise<Pulled> {
      server.drain()
      clock.advance(clock.nextTimerMs ?? Number.NaN)
      if (hangs) {
        await server.request()
        clock.advance(POLICY_FETCH_TIMEOUT_MS)
      }
      return this.nextPull()
    },
  }
}

const caller = (scopes: string[]) => ({ service: 'order-service', scopes, audience: 'inventory-service', tokenId: 'j', expiresAt: 0, claims: {} })
/** Which document is in force: "a" lets stock:read read, "b" stock:deduct. */
function rules(policy: CalleePolicy): string {
  if (policy.decide('GET /stock/:sku', caller(['stock:read'])) === 'allow') return 'a'
  if (policy.decide('GET /stock/:sku', caller(['stock:deduct'])) === 'allow') return 'b'
  return '?'
}

// ---- the vectors -------------------------------------------------------------------------------------------

t.test('policy-sources.json: which sources are URLs, how a URL is shown, the defaults and the schedule', async (t) => {
  const d = vectors.defaults
  t.same([POLICY_POLL_MS, POLICY_PULL_MS, POLICY_FETCH_TIMEOUT_MS], [d.filePollMs, d.urlPullMs, d.fetchTimeoutMs])
  for (const c of vectors.sources) {
    const name = `${c.source} allowHttp ${c.allowHttp === true}`
    if (c.expect.kind === 'file') {
      t.notOk(isUrlSource(c.source), name)
      continue
    }
    t.ok(isUrlSource(c.source), `${name}: a URL`)
    if (c.expect.refused === true) {
      t.throws(() => parseUrlSource(c.source, c.allowHttp), TypeError, name)
      continue
    }
    t.equal(parseUrlSource(c.source, c.allowHttp).shown, c.expect.shown, name)
  }
  const source = urlSource('https://config.internal/p', { clock: new ManualClock() })
  t.teardown(() => source.close())
  for (const [failures, base] of [30_000, 1000, 2000, 4000, 8000, 16_000, 30_000, 30_000].entries()) {
    for (let i = 0; i < 20; i++) {
      const ms = source.after(30_000, failures)
      if (ms < base * 0.9 || ms > base * 1.1) t.fail(`after ${failures} failures: ${ms} ms, want ${base} ± 10 %`)
    }
  }
})

t.test('policy-sources.json: every answer of a configuration server, one pull each, on a policy holding document a', async (t) => {
  for (const a of vectors.answers) {
    await t.test(a.name ?? '', async (t) => {
      const server = await configServer(t)
      if (a.start !== undefined) server.set({ status: 200, body: 'a', ...a.start })
      const r = await loadRemote(t, server.url('/v1/kv/inventory/policy?raw'), { tls })
      t.equal(rules(r.policy), 'a', 'the first fetch is in force')
      server.set(a)
      if (a.mode === 'down') await server.down()
      const hangs = a.mode === 'hang' || a.mode === 'trickle'
      const got = await r.pull(server, hangs)
      if (a.mode === undefined) t.equal(server.requests.at(-1)?.headers['if-none-match'], a.start === undefined ? '"a"' : undefined, 'asked with the ETag of what it holds')
      if (a.expect === 'applied' || a.expect === 'unchanged') {
        t.equal(got.error, undefined)
        t.equal(rules(r.policy), a.expect === 'applied' ? a.body : 'a')
        t.same(r.logger.failures(), [], 'nothing logged')
        t.equal(r.counters.snapshot().policyReloadFailures, 0)
        t.ok(got.nextMs >= 27_000 && got.nextMs <= 33_000, `next pull in ${got.nextMs} ms: 30 s ± 10 %`)
        return
      }
      const code = (a.expect as { code: string }).code
      t.match(got.error, { code }, code)
      t.equal(rules(r.policy), 'a', 'the rules in force stay')
      t.match(r.logger.failures(), [{ code, source: `https://127.0.0.1:${server.port}/v1/kv/inventory/policy?redacted` }], 'one line')
      t.equal(r.logger.failures().length, 1)
      t.ok(got.nextMs >= 900 && got.nextMs <= 1100, `retried in ${got.nextMs} ms: 1 s ± 10 %`)
      t.match(r.counters.snapshot(), { policyReloadFailures: 1, policyReloadFailing: true })
      // Again: counted, not logged again; then the server answers "b" and the next pull applies it.
      server.drain()
      r.clock.advance(2000)
      if (hangs) {
        await server.request()
        r.clock.advance(POLICY_FETCH_TIMEOUT_MS)
      }
      t.match(await r.nextPull(), { error: { code } })
      t.equal(r.logger.failures().length, 1, 'the same failure is not logged again')
      t.equal(r.counters.snapshot().policyReloadFailures, 2, 'but counted')
      if (a.mode === 'down') await server.up()
      server.set({ status: 200, body: 'b' })
      r.clock.advance(3000)
      t.equal((await r.nextPull()).error, undefined)
      t.equal(rules(r.policy), 'b', 'recovered')
      t.equal(r.counters.snapshot().policyReloadFailing, false)
      t.equal(r.logger.lines.filter((l) => l.event === 'policy_reload_recovered').length, 1)
    })
  }
})

// ---- the pull schedule and what a pull must never do -------------------------------------------------

t.test('a change served is in force after the next pull (30 s ± 10 %); pulls are jittered; a hanging fetch delays no decision', async (t) => {
  const server = await configServer(t)
  const changes: (CalleePolicyError | undefined)[] = []
  const r = await loadRemote(t, server.url('/policy.json'), { tls, onReload: (e) => void changes.push(e) })
  server.set({ status: 200, body: 'b' })
  r.clock.advance(27_000 - 1)
  t.equal(rules(r.policy), 'a', 'no pull before 27 s')
  t.equal(server.requests.length, 1)
  r.clock.advance(6001)
  const got = await r.nextPull()
  t.equal(got.error, undefined)
  t.equal(rules(r.policy), 'b', 'in force after one pull')
  t.same(changes, [undefined], 'onReload heard of the change')
  const delays = new Set([got.nextMs])
  for (let i = 0; i < 4; i++) {
    r.clock.advance(33_000)
    delays.add((await r.nextPull()).nextMs)
  }
  t.ok(delays.size >= 3, `pull delays ${[...delays].join(', ')}: jittered`)

  server.set({ mode: 'hang' })
  server.drain()
  r.clock.advance(33_000)
  await server.request()
  const started = performance.now()
  for (let i = 0; i < 1000; i++) if (r.policy.decide('GET /stock/:sku', caller(['stock:deduct'])) !== 'allow') t.fail('decided otherwise during a fetch')
  t.equal(r.pulls.length, 0, 'the fetch still hangs')
  t.comment(`1000 decisions in ${(performance.now() - started).toFixed(2)} ms while a fetch hung`)
  r.clock.advance(POLICY_FETCH_TIMEOUT_MS)
  t.match(await r.nextPull(), { error: { code: 'ERR_POLICY_READ', message: /no complete answer within 10000 ms/ } })
  t.equal(rules(r.policy), 'b')
})

t.test('while the server is down: retries back off 1 s, 2 s, 4 s … to the interval; one line for the outage, one when it ends', async (t) => {
  const server = await configServer(t)
  const r = await loadRemote(t, server.url('/policy.json'), { tls })
  await server.down()
  r.clock.advance(33_000)
  const delays: number[] = []
  for (let i = 0; i < 7; i++) {
    if (i > 0) r.clock.advance(delays[i - 1] as number)
    const got = await r.nextPull()
    t.match(got.error, { code: 'ERR_POLICY_READ', message: /unreachable: ECONNREFUSED/ })
    delays.push(got.nextMs)
  }
  ;[1, 2, 4, 8, 16, 30, 30].forEach((base, i) => t.ok(Math.abs((delays[i] as number) - base * 1000) <= base * 100, `retry ${i + 1} after ${delays[i]} ms: ${base} s ± 10 %`))
  t.equal(r.logger.failures().length, 1)
  t.match(r.counters.snapshot(), { policyReloadFailures: 7, policyReloadFailing: true })
  t.equal(rules(r.policy), 'a')
  await server.up()
  server.set({ status: 200, body: 'b' })
  r.clock.advance(33_000)
  t.equal((await r.nextPull()).error, undefined)
  t.equal(rules(r.policy), 'b')
  t.equal(r.logger.lines.filter((l) => l.event === 'policy_reload_recovered').length, 1)
})

// ---- the start ----------------------------------------------------------------------------------------------

t.test('the start: from the source, or from a bundled file when the source fails; a broken bundled file fails it', async (t) => {
  const server = await configServer(t)
  const dir = t.testdir({ 'bundled.json': JSON.stringify(vectors.documents.b) })
  const bundled = join(dir, 'bundled.json')
  for (const a of [{ status: 503 }, { status: 200, text: '<html>' }, { mode: 'down' }] as Answer[]) {
    server.set(a)
    if (a.mode === 'down') await server.down()
    await t.rejects(loadRemote(t, server.url('/policy.json'), { tls }), CalleePolicyError, `${JSON.stringify(a)}: no policy, no start`)
    const r = await loadRemote(t, server.url('/policy.json'), { tls, bundled })
    t.equal(rules(r.policy), 'b', 'the bundled file is in force')
    t.match(r.logger.failures(), [{ msg: /bundled/ }])
    t.equal(r.counters.snapshot().policyReloadFailing, true)
    if (a.mode === 'down') await server.up()
    server.set({ status: 200, body: 'a' })
    r.clock.advance(1100)
    t.equal((await r.nextPull()).error, undefined, 'the first retry')
    t.equal(rules(r.policy), 'a', "the source's rules replace the bundled ones")
    t.equal(r.counters.snapshot().policyReloadFailing, false)
  }
  writeFileSync(bundled, '{"routes": {"HEAD /x": {"scopes": []}}}')
  await t.rejects(loadRemote(t, server.url('/policy.json'), { tls, bundled }), { code: 'ERR_POLICY_ROUTE_KEY', source: bundled }, 'a broken bundled file fails the start, the source answering')
})

t.test('mutual TLS to the configuration server; plain http only when allowed', async (t) => {
  const server = await configServer(t)
  const stranger = pki.foreign
  for (const [name, options] of [
    ['no client certificate', { ca: pki.ca.certPem }],
    ['a client certificate of another CA', { ca: pki.ca.certPem, cert: stranger.certPem, key: stranger.keyPem }],
    ['a server of another CA', { ca: pki.otherCa.certPem, cert: client.certPem, key: client.keyPem }],
  ] as const) {
    await t.rejects(loadRemote(t, server.url('/policy.json'), { tls: options }), { code: 'ERR_POLICY_READ' }, name)
  }
  const plain = createHttpServer((_req, res) => res.end(JSON.stringify(vectors.documents.a)))
  plain.listen(0, '127.0.0.1')
  await once(plain, 'listening')
  t.teardown(() => plain.close())
  const url = `http://127.0.0.1:${(plain.address() as { port: number }).port}/policy.json`
  await t.rejects(loadRemote(t, url), TypeError, 'http:// without allowHttp')
  const r = await loadRemote(t, url, { allowHttp: true })
  t.equal(rules(r.policy), 'a', 'http:// with allowHttp')
})

t.test('user information, query and headers are sent; none reaches an error or a log line', async (t) => {
  const server = await configServer(t)
  const source = `https://inventory:s3cret-pw@127.0.0.1:${server.port}/v1/kv/policy?raw&token=s3cret-q`
  const r = await loadRemote(t, source, { tls, headers: { 'x-consul-token': 's3cret-h' } })
  const first = server.requests[0] as IncomingMessage
  t.equal(first.headers.authorization, `Basic ${Buffer.from('inventory:s3cret-pw').toString('base64')}`)
  t.equal(first.headers['x-consul-token'], 's3cret-h')
  t.equal(first.url, '/v1/kv/policy?raw&token=s3cret-q')
  const errors: string[] = []
  for (const a of [{ status: 500 }, { mode: 'reset' }, { mode: 'hang' }, { status: 302, headers: { location: source } }, { mode: 'down' }] as Answer[]) {
    server.set(a)
    if (a.mode === 'down') await server.down()
    errors.push(String((await r.pull(server, a.mode === 'hang')).error?.message))
  }
  t.equal(r.logger.failures().length, 5, 'each failure logged once')
  const text = JSON.stringify(r.logger.lines) + errors.join('\n')
  t.notMatch(text, /s3cret/, 'no secret in a log line or an error')
  const err = await loadRemote(t, source, { tls }).catch((e: unknown) => e)
  t.type(err, CalleePolicyError)
  t.notMatch(String((err as Error).message), /s3cret/, 'nor in the start error')
})

t.test('close() during a fetch that hangs abandons it and logs nothing', async (t) => {
  const server = await configServer(t)
  const r = await loadRemote(t, server.url('/policy.json'), { tls })
  server.set({ mode: 'hang' })
  server.drain()
  r.clock.advance(33_000)
  await server.request()
  r.policy.close()
  // The fetch ends (its socket destroyed); no line, no count, no further pull.
  await new Promise<void>((resolve) => setImmediate(resolve))
  r.clock.advance(3_600_000)
  t.equal(r.clock.pendingTimers, 0, 'nothing scheduled after close()')
  t.same(r.logger.failures(), [])
  t.equal(r.counters.snapshot().policyReloadFailures, 0)
})

t.test("hooks and a logger that throw stop nothing: the rules change, the next pull comes (regression: an unhandled rejection)", async (t) => {
  const server = await configServer(t)
  const pulls: (CalleePolicyError | undefined)[] = []
  const boom = (): never => {
    throw new Error("a user's bug")
  }
  const r = await loadRemote(t, server.url('/policy.json'), {
    tls,
    onReload: boom,
    logger: { error: boom, warn: boom },
    onPull: (error) => {
      pulls.push(error)
      boom()
    },
  })
  server.set({ status: 500 })
  r.clock.advance(r.clock.nextTimerMs ?? Number.NaN)
  await t.resolveMatch(waitFor(() => pulls.length === 1), true)
  server.set({ status: 200, body: 'b' })
  r.clock.advance(r.clock.nextTimerMs ?? Number.NaN)
  await waitFor(() => pulls.length === 2)
  t.match(pulls, [{ code: 'ERR_POLICY_READ' }, undefined])
  t.equal(rules(r.policy), 'b')
  t.equal(r.clock.pendingTimers, 1, 'the next pull is scheduled')
})

/** Resolves once `done()` holds, checking after each turn of the event loop (I/O in flight). */
async function waitFor(done: () => boolean): Promise<true> {
  while (!done()) await new Promise((resolve) => setImmediate(resolve))
  return true
}
