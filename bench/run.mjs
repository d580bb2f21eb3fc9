// `npm run bench` — two tables from one run, medians of several rounds:
// 1. The raw RS256 limit of this machine, measured in the same run, and what the real server (production
//    configuration: policy checks, info-level logging to a file, metrics on, AUTHZ_DEV=false) delivers over
//    mTLS with an RS256 file key, as ratios of that limit.
// 2. The signing keys side by side: RS256 and ES256, each in a PKCS#8 file and in a SoftHSM2 token — POST
//    /token at 32 keep-alive connections, the server's CPU per token, latency, beside the raw signing rate
//    of the same key store and algorithm (same round), and what one verification of such a token costs a
//    receiving service in @authz/sdk (cache off).
//   --quick             one short round of everything (~1 minute)
//   --rounds N          rounds per figure (default 5; a full run takes ~6 minutes on 2 cores)
//   --seconds S         seconds per measurement (default 4)
//   --connections L     comma list of keep-alive connection counts of table 1 (default 1,8,32,128)
//   --hsm-sessions N    AUTHZ_PKCS11_SESSIONS of the SoftHSM2 servers, and sessions of their raw rate
//                       (default 1: see bench/README.md, "Signing keys")
//   --no-hsm            leave the SoftHSM2 rows out (they are left out anyway without SoftHSM2 or pkcs11js)
//   --keep              keep the temp directories (material, tokens, server logs)
//   --json FILE         also write every round's figures to FILE (to see the spread behind the medians)
import { execFileSync } from 'node:child_process'
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { availableParallelism, loadavg } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { benchPorts, prepareInstall, SOFTHSM_MODULE, startServerProcess } from './lib.mjs'

const { values } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    rounds: { type: 'string' },
    seconds: { type: 'string' },
    connections: { type: 'string' },
    'hsm-sessions': { type: 'string' },
    'no-hsm': { type: 'boolean', default: false },
    keep: { type: 'boolean', default: false },
    json: { type: 'string' },
  },
})
const quick = values.quick
const rounds = Number(values.rounds ?? (quick ? 1 : 5))
const seconds = Number(values.seconds ?? (quick ? 2 : 4))
const levels = (values.connections ?? '1,8,32,128').split(',').map(Number)
const hsmSessions = Number(values['hsm-sessions'] ?? 4) // AUTHZ_PKCS11_SESSIONS' default
const cores = availableParallelism()
// The machine's 1-minute load average when the run starts and ends: other work on it shows here.
const loadAtStart = loadavg()[0]
const here = new URL('.', import.meta.url).pathname
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b)
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2
}

function node(args, env) {
  return JSON.parse(execFileSync(process.execPath, args, { encoding: 'utf8', maxBuffer: 1 << 24, env: env ?? process.env }).trim().split('\n').pop())
}
const rawSeconds = String(Math.min(seconds, 3))
const signRate = (alg) => node([join(here, 'sign-rate.mjs'), rawSeconds, String(cores), alg])
const load = (options) => node([join(here, 'load.mjs'), JSON.stringify(options)])

// --- the signing keys: one install and one server each, as it runs in production --------------------
let hsmMissing = values['no-hsm'] ? '--no-hsm' : undefined
if (hsmMissing === undefined && !existsSync(SOFTHSM_MODULE)) hsmMissing = `SoftHSM2 is not installed (${SOFTHSM_MODULE})`
if (hsmMissing === undefined) {
  try {
    await import('pkcs11js')
  } catch {
    hsmMissing = 'the optional pkcs11js package is not installed'
  }
}
const configs = [
  { id: 'rs-file', label: 'RS256, PKCS#8 file', alg: 'RS256', store: 'file' },
  { id: 'es-file', label: 'ES256, PKCS#8 file', alg: 'ES256', store: 'file' },
  ...(hsmMissing === undefined
    ? [
        { id: 'rs-hsm', label: 'RS256, SoftHSM2 token', alg: 'RS256', store: 'pkcs11' },
        { id: 'es-hsm', label: 'ES256, SoftHSM2 token', alg: 'ES256', store: 'pkcs11' },
      ]
    : []),
]
const base = benchPorts(18443, 19464)
for (const [i, config] of configs.entries()) {
  // One caller drives the whole load: its per-caller limit is lifted (the limiter still runs per request).
  config.install = await prepareInstall({ ports: { main: base.main + i, ops: base.ops + i }, keys: { alg: config.alg, store: config.store } })
  config.env = {
    ...config.install.env,
    AUTHZ_LOG_LEVEL: 'info',
    AUTHZ_RATE_LIMIT: '1000000',
    ...(config.store === 'pkcs11' ? { AUTHZ_PKCS11_SESSIONS: String(hsmSessions) } : {}),
  }
  config.running = await startServerProcess(config.install.dir, config.env)
  config.origin = `https://127.0.0.1:${config.env.AUTHZ_PORT}`
}
const [rsFile] = configs
const server = rsFile.running.child
const peakRss = () => {
  const status = readFileSync(`/proc/${server.pid}/status`, 'utf8')
  return Number(/VmHWM:\s+(\d+)/.exec(status)?.[1] ?? 0) / 1024
}
const hsmRate = (config) =>
  node(
    [
      join(here, 'hsm-sign-rate.mjs'),
      JSON.stringify({
        module: config.install.hsm.module,
        token: config.install.hsm.label,
        pinFile: config.env.AUTHZ_PKCS11_PIN_FILE,
        key: config.install.keyLabel,
        alg: config.alg,
        seconds: Number(rawSeconds),
        sessions: hsmSessions,
      }),
    ],
    { ...process.env, SOFTHSM2_CONF: config.env.SOFTHSM2_CONF },
  )

const client = rsFile.install.client()
const opsOrigin = `http://127.0.0.1:${rsFile.env.AUTHZ_OPS_PORT}`
const mainPort = Number(rsFile.env.AUTHZ_PORT)
const tokenReq = (config) => ({
  mode: 'http',
  origin: config.origin,
  tls: config.install.client(),
  method: 'POST',
  path: '/token',
  headers: { 'content-type': 'application/json' },
  body: '{"audience":"inventory-service","scope":"stock:read"}',
  cpuPid: config.running.child.pid,
})
/**
 * Whether the server of `config` has ended. The loads run synchronously (execFileSync), so the child's exit
 * event may not have been delivered yet: a zombie or vanished process counts, and its exit event is
 * awaited (for the signal).
 */
async function ended(config) {
  let state
  try {
    state = readFileSync(`/proc/${config.running.child.pid}/stat`, 'utf8').split(') ')[1][0]
  } catch {
    state = 'gone'
  }
  if (config.running.exited === null && (state === 'Z' || state === 'gone')) {
    await new Promise((resolve) => {
      const timer = setTimeout(resolve, 2000)
      config.running.child.once('exit', () => setImmediate(() => resolve(clearTimeout(timer))))
    })
  }
  return config.running.exited !== null || state === 'Z' || state === 'gone'
}
const crashOf = (config) => config.running.exited ?? { code: null, signal: 'unknown' }
/** A /token load against one configuration; a server that has crashed is not loaded again. */
async function tokenLoad(config, connections) {
  if (await ended(config)) return { crashed: crashOf(config) }
  const result = load({ ...tokenReq(config), connections, seconds })
  // Figures of a load the server did not survive mean nothing: only its errors are kept.
  return (await ended(config)) ? { errors: result.errors, crashed: crashOf(config) } : result
}
const results = new Map()
const push = (key, value) => results.set(key, [...(results.get(key) ?? []), value])

for (let r = 0; r < rounds; r++) {
  for (const config of configs) {
    try {
      push(`raw:${config.id}`, config.store === 'file' ? signRate(config.alg) : hsmRate(config))
    } catch (err) {
      push(`raw:${config.id}`, { rps: Number.NaN, cpuUsPerSign: Number.NaN, error: String(err.message).split('\n')[0] })
    }
  }
  for (const connections of levels) push(`token:${connections}`, await tokenLoad(rsFile, connections))
  for (const config of configs) push(`keys:${config.id}`, config === rsFile && levels.includes(32) ? results.get('token:32').at(-1) : await tokenLoad(config, 32))
  push('hs:full', load({ mode: 'handshake', port: mainPort, tls: client, seconds: Math.min(seconds, 3), resume: false }))
  push('hs:resumed', load({ mode: 'handshake', port: mainPort, tls: client, seconds: Math.min(seconds, 3), resume: true }))
  push('jwks', load({ mode: 'http', origin: opsOrigin, path: '/.well-known/jwks.json', connections: 32, seconds: Math.min(seconds, 3) }))
  push('jwks304', load({ mode: 'http', origin: opsOrigin, path: '/.well-known/jwks.json', connections: 32, seconds: Math.min(seconds, 3), headers: { 'if-none-match': '*' }, expect: 304 }))
  push('discovery', load({ mode: 'http', origin: rsFile.origin, tls: client, path: '/.well-known/openid-configuration', connections: 32, seconds: Math.min(seconds, 3) }))
  // Verification in a receiving service, in a process of its own; the algorithms take turns going first.
  push('verify', node([join(here, 'verify-cost.mjs'), '--n', quick ? '1000' : '3000', '--first', r % 2 === 0 ? 'RS256' : 'ES256']))
}
const rss = peakRss()
if (values.json !== undefined) writeFileSync(values.json, `${JSON.stringify({ rounds, seconds, hsmSessions, results: Object.fromEntries(results) }, null, 1)}\n`)
const crashed = []
for (const config of configs) if (await ended(config)) crashed.push(config)
for (const config of configs) await config.running.stop()

// --- table 1: the RS256 file key against the raw limit, as before -------------------------------------
const fmt = (n, d = 0) => (Number.isFinite(n) ? n.toLocaleString('en-US', { maximumFractionDigits: d, minimumFractionDigits: d }) : '—')
const finite = (xs) => xs.filter((x) => Number.isFinite(x))
const med = (xs) => (finite(xs).length === 0 ? Number.NaN : median(finite(xs)))
const errorsOf = (rs) => {
  const crash = rs.find((x) => x.crashed !== undefined)?.crashed
  const errors = String(rs.reduce((a, x) => a + (x.errors ?? 0), 0))
  return crash === undefined ? errors : `${errors}, server crashed (${crash.signal ?? `exit ${crash.code}`})`
}
const rawRs = results.get('raw:rs-file')
const rawLimit = med(rawRs.map((x) => x.rps))
/** ÷ raw: the ratio of each round (tokens/s over the raw rate measured in the same round), then the median. */
const ratio = (rs, raw) => med(rs.map((x, i) => x.rps / raw[i].rps))
const rows = []
rows.push(['raw RS256 signs/s, node:crypto, all cores', fmt(rawLimit), '', '', '', '1.00'])
for (const connections of levels) {
  const rs = results.get(`token:${connections}`)
  rows.push([
    `POST /token, mTLS keep-alive, ${connections} conn`,
    fmt(med(rs.map((x) => x.rps))),
    fmt(med(rs.map((x) => x.p50)), 2),
    fmt(med(rs.map((x) => x.p99)), 2),
    errorsOf(rs),
    fmt(ratio(rs, rawRs), 2),
  ])
}
for (const [key, label] of [
  ['hs:full', 'new mTLS connections/s, full handshake'],
  ['hs:resumed', 'new mTLS connections/s, resumed session'],
]) {
  const rs = results.get(key)
  const extra = key === 'hs:resumed' ? ` (${fmt(100 * median(rs.map((x) => x.resumed / Math.max(1, x.done))))}% resumed)` : ''
  rows.push([label + extra, fmt(median(rs.map((x) => x.rps))), '', '', String(rs.reduce((a, x) => a + x.errors, 0)), ''])
}
for (const [key, label] of [
  ['jwks', 'GET /.well-known/jwks.json (ops, 32 conn)'],
  ['jwks304', 'GET /.well-known/jwks.json If-None-Match → 304'],
  ['discovery', 'GET openid-configuration (mTLS, 32 conn)'],
]) {
  const rs = results.get(key)
  rows.push([label, fmt(median(rs.map((x) => x.rps))), fmt(median(rs.map((x) => x.p50)), 2), fmt(median(rs.map((x) => x.p99)), 2), String(rs.reduce((a, x) => a + x.errors, 0)), ''])
}
rows.push(['start to ready (existing keyset), ms', fmt(rsFile.running.readyMs), '', '', '', ''])
rows.push(['server peak RSS under load, MB', fmt(rss), '', '', '', ''])

function table(header, body, leftColumns = 1) {
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((r) => r[i].length)))
  const line = (r) => `| ${r.map((c, i) => (i < leftColumns ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join(' | ')} |`
  return [line(header), `|${widths.map((w, i) => (i < leftColumns ? '-'.repeat(w + 2) : '-'.repeat(w + 1) + ':')).join('|')}|`, ...body.map(line)].join('\n')
}
console.log(
  `authz benchmark — node ${process.version}, ${cores} cores, ${rounds} round(s) × ${seconds} s, medians; load average ${loadAtStart.toFixed(1)} at the start, ${loadavg()[0].toFixed(1)} at the end`,
)
console.log(table(['measure', 'per second / value', 'p50 ms', 'p99 ms', 'errors', '÷ raw'], rows))

// --- table 2: the signing keys side by side --------------------------------------------------------
const verify = results.get('verify')
const verifyUs = (alg) => med(verify.map((x) => x[alg].cpuUs))
const keyRows = configs.map((config) => {
  const rs = results.get(`keys:${config.id}`)
  const raw = results.get(`raw:${config.id}`)
  return [
    config.label,
    fmt(med(rs.map((x) => x.rps))),
    fmt(med(rs.map((x) => x.cpuUsPerOk))),
    fmt(med(rs.map((x) => x.p50)), 2),
    fmt(med(rs.map((x) => x.p99)), 2),
    errorsOf(rs),
    fmt(med(raw.map((x) => x.rps))),
    fmt(med(raw.map((x) => x.cpuUsPerSign))),
    fmt(ratio(rs, raw), 2),
    fmt(verifyUs(config.alg)),
    fmt(config.running.readyMs),
  ]
})
console.log()
console.log(`signing keys — POST /token at 32 keep-alive mTLS connections, ${rounds} round(s) × ${seconds} s, medians`)
console.log(
  table(
    ['signing key', 'tokens/s', 'server CPU µs/token', 'p50 ms', 'p99 ms', 'errors', 'raw signs/s', 'raw CPU µs/sign', '÷ raw', 'SDK verify CPU µs/token', 'start to ready ms'],
    keyRows,
  ),
)
const notes = [
  `raw, file: node:crypto on ${cores} worker threads (all cores), synchronous signs`,
  ...(hsmMissing === undefined
    ? [
        `raw, SoftHSM2: C_SignInit + C_Sign (pkcs11js, async) on ${hsmSessions} session(s) in a process of its own, the server's token and key; the servers run with AUTHZ_PKCS11_SESSIONS=${hsmSessions}`,
      ]
    : [`SoftHSM2 rows left out: ${hsmMissing}`]),
  `÷ raw: tokens/s over the raw rate of the same round (median of the rounds); server CPU: every thread of the server process (/proc/<pid>/stat) over the window, per token`,
  ...(levels.includes(32) ? ['the RS256 file row is the 32-connection row of the first table (the same measurements)'] : []),
  `SDK verify: @authz/sdk, verified-token cache off, ${verify[0].n} distinct tokens one at a time, CPU of every thread; a cached token costs ${fmt(med(verify.map((x) => x.cachedUs)), 1)} µs`,
]
for (const note of notes) console.log(`  ${note}`)
for (const config of configs) {
  const failed = results.get(`raw:${config.id}`).find((x) => x.error !== undefined)
  if (failed !== undefined) console.log(`  raw rate of ${config.label} failed: ${failed.error}`)
}

for (const config of crashed) console.log(`${config.label}: the server crashed under load (${crashOf(config).signal ?? `exit ${crashOf(config).code}`}); log: ${join(config.install.dir, 'server.log')}`)
if (crashed.length > 0) process.exitCode = 1
if (!values.keep && crashed.length === 0) for (const config of configs) rmSync(config.install.dir, { recursive: true, force: true })
else console.log(`material, tokens and server logs kept in ${configs.map((c) => c.install.dir).join(' ')}`)
