/**
 * The dashboard and the rules against the real thing (`npm run test:prom`): a real Prometheus (Debian
 * package prometheus; a missing binary fails, it never skips) scrapes two real authz replicas every second
 * while the test drives them through a start with no active key (503s), issuance for two audiences,
 * denials (unknown audience, ungranted scope, unknown caller, rate limit), a refused handshake, a key
 * rotation and a failed policy reload. Then every query of every panel runs through Prometheus's HTTP API
 * and must return data; every metric the rules and the dashboard use must exist in /metrics; every rule
 * must evaluate without error; and the rotation must show in the key timeline, both replicas switching
 * together. The replicas run with a SoftHSM2 token configured (their keys are files), so the PKCS#11
 * series exists as it does where a token is used.
 */
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { connect as tlsConnect } from 'node:tls'
import t, { type Test } from 'tap'
import { systemClock, type Clock } from '../../src/clock.js'
import { initKeys, rotateKeys } from '../../src/keys/admin.js'
import { memoryLimitBytes } from '../../src/metrics.js'
import { createCrl } from '../../src/pki/dev-pki.js'
import type { RunningServer } from '../../src/server.js'
import { SAMPLE_POLICY } from '../helpers/harness.js'
import { freePort, httpCall, httpsCall, type Response } from '../helpers/http.js'
import { install, startInstalled } from '../helpers/install.js'
import { pooledKey } from '../helpers/material.js'
import { alertRules, dashboardTargets, metricNamesIn } from '../helpers/operations.js'
import { testPki } from '../helpers/pki.js'
import { track } from '../helpers/processes.js'
import { familiesOf } from '../helpers/prom-text.js'
import { softHsm } from '../helpers/softhsm.js'

const timing = { tokenTtl: 600, jwksMaxAge: 600 }
const root = new URL('../../', import.meta.url).pathname
/** Metrics the rules use that a replica has only in some environments. */
const ONLY_WHERE = {
  up: 'set by Prometheus, not by authz (checked in Prometheus below)',
  authz_memory_limit_bytes: 'present only under a cgroup memory limit (a container); this machine has none',
} as const

const aheadBy = (ms: number): Clock => ({ now: () => Date.now() + ms })

interface PromSeries {
  readonly metric: Record<string, string>
  readonly values?: [number, string][]
  readonly value?: [number, string]
}

/** Starts Prometheus on a free port, scraping `targets` every second with the rule file; killed at teardown. */
async function startPrometheus(t: Test, dir: string, targets: string[]): Promise<{ port: number; startedAt: number }> {
  const config = join(dir, 'prometheus.yml')
  await writeFile(
    config,
    [
      'global: { scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s }',
      `rule_files: ['${join(root, 'deploy/prometheus/authz-rules.yaml')}']`,
      'scrape_configs:',
      '  - job_name: authz',
      `    static_configs: [{ targets: [${targets.map((x) => `'${x}'`).join(', ')}] }]`,
      '',
    ].join('\n'),
  )
  const port = await freePort()
  // Tracked: killed with this test process, even at tap's timeout.
  const child = track(
    spawn('prometheus', [`--config.file=${config}`, `--storage.tsdb.path=${join(dir, 'tsdb')}`, `--web.listen-address=127.0.0.1:${port}`, '--log.level=info'], {
      stdio: ['ignore', 'ignore', 'pipe'],
    }),
  )
  let log = ''
  const exited = once(child, 'exit')
  t.teardown(async () => {
    if (child.exitCode !== null || child.signalCode !== null) return
    child.kill('SIGTERM')
    const timer = setTimeout(() => child.kill('SIGKILL'), 5000)
    await exited
    clearTimeout(timer)
  })
  await new Promise<void>((resolve, reject) => {
    child.on('error', (err: NodeJS.ErrnoException) =>
      reject(err.code === 'ENOENT' ? new Error('prometheus is not installed (Debian package prometheus: apt-get install prometheus)') : err),
    )
    child.on('exit', (code) => reject(new Error(`prometheus exited (${code}) before it was ready:\n${log}`)))
    child.stderr.setEncoding('utf8')
    child.stderr.on('data', (chunk: string) => {
      log += chunk
      if (log.includes('Server is ready to receive web requests')) resolve()
    })
  })
  return { port, startedAt: Date.now() / 1000 }
}

async function api<T>(port: number, path: string): Promise<T> {
  const res = await httpCall(port, { path })
  const body = res.json<{ status: string; data: T; error?: string }>()
  if (body.status !== 'success') throw new Error(`${path}: ${body.error ?? res.text}`)
  return body.data
}

const rangeQuery = (port: number, expr: string, start: number, end: number): Promise<{ result: PromSeries[] }> =>
  api(port, `/api/v1/query_range?query=${encodeURIComponent(expr)}&start=${start}&end=${end}&step=1`)
const instantQuery = (port: number, expr: string): Promise<{ result: PromSeries[] }> => api(port, `/api/v1/query?query=${encodeURIComponent(expr)}`)

/** Polls Prometheus until `expr` returns a series (bounded: a scrape is a second away). */
async function untilPrometheusSees(port: number, expr: string, what: string, deadlineMs = 30_000): Promise<PromSeries[]> {
  const until = Date.now() + deadlineMs
  for (;;) {
    const { result } = await instantQuery(port, expr)
    if (result.length > 0) return result
    if (Date.now() > until) throw new Error(`Prometheus did not see ${what} (${expr}) within ${deadlineMs} ms`)
    await new Promise((resolve) => setTimeout(resolve, 250))
  }
}

/** Resolves when `server` signs with `kid` (at once if it already does). */
function signsWith(server: RunningServer, kid: string): Promise<void> {
  if (server.keys.signingKey()?.kid === kid) return Promise.resolve()
  return new Promise((resolve) => {
    const stop = server.keys.onChange(() => {
      if (server.keys.signingKey()?.kid !== kid) return
      stop()
      resolve()
    })
  })
}

/** Grafana's variables, as the dashboard is used: every replica of job authz. */
const substitute = (expr: string): string => expr.replaceAll('$job', 'authz').replaceAll('$instance', '.+').replaceAll('$__rate_interval', '4s')

t.test('every panel query returns data from a real Prometheus scraping real authz replicas', async (t) => {
  const pki = testPki()
  const { dir, env: installed } = await install(t, { noKey: true, crl: createCrl(pki.ca, []) })
  const hsm = softHsm(t, dir)
  const env = { ...installed, ...hsm.env, AUTHZ_RATE_LIMIT: '5' }
  // The only key activates in an hour: the replicas start with no key signing (503s).
  await initKeys({ dir: env.AUTHZ_KEYS_DIR, timing, clock: aheadBy(3_600_000), newKey: pooledKey })
  const replicas = [await startInstalled(t, env, { pollMs: 200 }), await startInstalled(t, env, { pollMs: 200 })]
  const prometheus = await startPrometheus(t, dir, replicas.map((r) => `127.0.0.1:${r.opsPort}`))
  const prom = prometheus.port

  const token = (replica: number, audience: string, caller = 'order-service', scope?: string): Promise<Response> =>
    httpsCall((replicas[replica] as (typeof replicas)[number]).port, {
      method: 'POST',
      path: '/token',
      ca: pki.ca.certPem,
      client: pki.client(caller),
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ audience, ...(scope === undefined ? {} : { scope }) }),
    })
  /** A round of traffic on both replicas: issuance for two audiences and three kinds of denial. */
  const traffic = async (): Promise<number[]> => {
    const statuses: number[] = []
    for (const replica of [0, 1]) {
      statuses.push((await token(replica, 'inventory-service')).status)
      statuses.push((await token(replica, 'order-service', 'payment-service')).status)
      statuses.push((await token(replica, 'nope-service')).status)
      statuses.push((await token(replica, 'inventory-service', 'order-service', 'stock:write')).status)
      statuses.push((await token(replica, 'inventory-service', 'billing-service')).status)
    }
    return statuses
  }

  // 1. No key signs yet.
  const early = await token(0, 'inventory-service')
  t.same([early.status, early.headers['retry-after'] !== undefined], [503, true], 'no key yet: 503 with Retry-After')
  await untilPrometheusSees(prom, 'authz_token_requests_unavailable_total{reason="no_active_key"} > 0', 'the 503s')
  // The operator's fix: a key active now (the hour-away key stays next).
  const { key: first } = await rotateKeys({ dir: env.AUTHZ_KEYS_DIR, timing, clock: systemClock, newKey: pooledKey }, { activateInMs: 0, force: true })
  await Promise.all(replicas.map((r) => signsWith(r.server, first.kid)))

  // 2. Issuance and denials; a burst over the rate limit; a handshake without a certificate.
  const statuses = [...(await traffic()), ...(await traffic())]
  t.ok(statuses.includes(200) && statuses.includes(400) && statuses.includes(401), `issued and denied: ${statuses.join(' ')}`)
  const burst = await Promise.all(Array.from({ length: 12 }, () => token(0, 'inventory-service')))
  t.ok(burst.some((r) => r.status === 429), 'the burst meets the rate limit')
  for (const replica of replicas) {
    const socket = tlsConnect({ host: '127.0.0.1', port: replica.port, servername: 'localhost', ca: pki.ca.certPem })
    // (events.once would reject on the 'error' the refusal is)
    await new Promise<void>((resolve) => {
      socket.on('error', () => undefined)
      socket.on('close', () => resolve())
    })
  }

  // 3. A rotation, active 3 s after it is published; traffic goes on meanwhile.
  const { key: second } = await rotateKeys({ dir: env.AUTHZ_KEYS_DIR, timing, clock: systemClock, newKey: pooledKey }, { activateInMs: 3000, force: true })
  const switched = Promise.all(replicas.map((r) => signsWith(r.server, second.kid)))
  let rotating = true
  void switched.then(() => (rotating = false))
  while (rotating) await traffic()
  await traffic()
  await untilPrometheusSees(prom, `count(authz_signing_key_info{kid="${second.kid}"}) == 2`, 'both replicas signing with the new key')

  // 4. A policy that does not load, then the good one again.
  await writeFile(env.AUTHZ_POLICY, '{"audiences": [')
  await untilPrometheusSees(prom, 'count(authz_reload_failing{what="policy"} == 1) == 2', 'the failed reload on both replicas')
  await writeFile(env.AUTHZ_POLICY, JSON.stringify(SAMPLE_POLICY))
  await untilPrometheusSees(prom, 'count(authz_reload_failing{what="policy"} == 0) == 2', 'the recovery')
  await traffic()
  await untilPrometheusSees(prom, 'sum(authz_token_request_duration_seconds_count{outcome="issued"}) > 0', 'the last round')
  const end = Date.now() / 1000 + 1

  t.test('every query of every panel returns data', async (t) => {
    for (const { panel, expr, instant } of dashboardTargets()) {
      const query = substitute(expr)
      const { result } = instant ? await instantQuery(prom, query) : await rangeQuery(prom, query, prometheus.startedAt, end)
      const points = result.reduce((n, s) => n + (s.values?.length ?? (s.value === undefined ? 0 : 1)), 0)
      t.ok(points > 0, `${panel}: ${query} → ${result.length} series, ${points} points`)
    }
  })

  t.test("the dashboard's variables find the job and both replicas", async (t) => {
    t.same(await api<string[]>(prom, `/api/v1/label/job/values?match[]=authz_build_info`), ['authz'])
    t.equal((await api<string[]>(prom, `/api/v1/label/instance/values?match[]=${encodeURIComponent('authz_build_info{job="authz"}')}`)).length, 2)
  })

  t.test('every metric the rules and the dashboard use exists in /metrics', async (t) => {
    const used = new Set([...alertRules().flatMap((r) => metricNamesIn(r.expr)), ...dashboardTargets().flatMap((q) => metricNamesIn(q.expr))])
    for (const replica of replicas) {
      const families = familiesOf((await httpCall(replica.opsPort, { path: '/metrics' })).text)
      const missing = [...used].filter((name) => !families.has(name) && !(name in ONLY_WHERE)).sort()
      t.same(missing, [], `replica :${replica.opsPort}: every name exists (missing: ${missing.join(', ') || 'none'})`)
      t.equal(families.has('authz_memory_limit_bytes'), memoryLimitBytes() !== undefined, `authz_memory_limit_bytes: ${ONLY_WHERE.authz_memory_limit_bytes}`)
      t.ok(families.has('authz_pkcs11_available'), 'authz_pkcs11_available: a token is configured')
    }
    t.equal((await instantQuery(prom, 'up{job="authz"} == 1')).result.length, 2, 'up: both replicas scraped')
  })

  t.test('every rule evaluates without error in Prometheus', async (t) => {
    const { groups } = await api<{ groups: { rules: { name: string; health: string; lastError?: string }[] }[] }>(prom, '/api/v1/rules')
    const rules = groups.flatMap((g) => g.rules)
    t.equal(rules.length, alertRules().length, 'every rule loaded')
    for (const rule of rules) t.equal(rule.health, 'ok', `${rule.name}: ${rule.lastError ?? 'ok'}`)
  })

  t.test('the key timeline shows the rotation: each replica switches from the first kid to the second, together', async (t) => {
    const { result } = await rangeQuery(prom, 'max by (instance, kid) (authz_signing_key_info{job="authz"})', prometheus.startedAt, end)
    const timeline = new Map<string, { kid: string; from: number; to: number }[]>()
    for (const series of result) {
      const times = (series.values ?? []).map(([at]) => at)
      const instance = series.metric.instance as string
      timeline.set(instance, [...(timeline.get(instance) ?? []), { kid: series.metric.kid as string, from: Math.min(...times), to: Math.max(...times) }])
    }
    t.equal(timeline.size, 2, 'two replicas')
    const switches: number[] = []
    for (const [instance, segments] of timeline) {
      segments.sort((a, b) => a.from - b.from)
      t.same(segments.map((s) => s.kid), [first.kid, second.kid], `${instance}: the first kid, then the second`)
      switches.push((segments[1] as { from: number }).from)
      t.comment(`${instance}: ${segments.map((s) => `${s.kid.slice(0, 8)}… from +${(s.from - prometheus.startedAt).toFixed(0)} s to +${(s.to - prometheus.startedAt).toFixed(0)} s`).join(', then ')}`)
    }
    t.ok(Math.abs((switches[0] as number) - (switches[1] as number)) <= 2, `the replicas switch within 2 s of each other (${Math.abs((switches[0] as number) - (switches[1] as number))} s, 1 s scrapes)`)
    const activeAge = await rangeQuery(prom, 'time() - authz_signing_key_activation_timestamp_seconds{job="authz"}', prometheus.startedAt, end)
    const ages = (activeAge.result[0]?.values ?? []).map(([, v]) => Number(v))
    t.ok(ages.some((a, i) => i > 0 && a < (ages[i - 1] as number)), 'the active key age drops back at the switch')
    const next = await rangeQuery(prom, 'authz_next_key_activation_timestamp_seconds{job="authz"} - time()', prometheus.startedAt, end)
    t.ok(next.result.length > 0, 'the next activation was visible before the switch')
    t.comment(`next key activation, seconds to go on one replica: ${(next.result[0]?.values ?? []).map(([, v]) => Number(v).toFixed(0)).join(' ')}`)
  })
})
