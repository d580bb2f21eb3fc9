// `npm run bench` — one table: the raw RS256 limit of this machine, measured in the same run, and what the
// real server (production configuration: policy checks, info-level logging to a file, metrics on,
// AUTHZ_DEV=false) delivers over mTLS, as ratios of that limit. Medians of several rounds.
//   --quick           one short round of everything (~30 s)
//   --rounds N        rounds per figure (default 3)
//   --seconds S       seconds per measurement (default 4)
//   --connections L   comma list of keep-alive connection counts (default 1,8,32,128)
import { execFileSync } from 'node:child_process'
import { readFileSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { benchPorts, prepareInstall, startServerProcess } from './lib.mjs'

const { values } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    rounds: { type: 'string' },
    seconds: { type: 'string' },
    connections: { type: 'string' },
    keep: { type: 'boolean', default: false },
  },
})
const quick = values.quick
const rounds = Number(values.rounds ?? (quick ? 1 : 3))
const seconds = Number(values.seconds ?? (quick ? 2 : 4))
const levels = (values.connections ?? '1,8,32,128').split(',').map(Number)
const here = new URL('.', import.meta.url).pathname
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b)
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2
}

function node(args) {
  return JSON.parse(execFileSync(process.execPath, args, { encoding: 'utf8', maxBuffer: 1 << 24 }).trim().split('\n').pop())
}
const signRate = () => node([join(here, 'sign-rate.mjs'), String(Math.min(seconds, 3))]).rps
const load = (options) => node([join(here, 'load.mjs'), JSON.stringify(options)])

// --- material and the server, as it runs in production -------------------------------------------
// One caller drives the whole load: its per-caller limit is lifted (the limiter still runs per request).
const install = await prepareInstall({ ports: benchPorts(18443, 19464) })
const { dir } = install
const client = install.client()
const env = { ...install.env, AUTHZ_LOG_LEVEL: 'info', AUTHZ_RATE_LIMIT: '1000000' }
const running = await startServerProcess(dir, env)
const server = running.child
const readyMs = running.readyMs
const peakRss = () => {
  const status = readFileSync(`/proc/${server.pid}/status`, 'utf8')
  return Number(/VmHWM:\s+(\d+)/.exec(status)?.[1] ?? 0) / 1024
}

const main = `https://127.0.0.1:${env.AUTHZ_PORT}`
const opsOrigin = `http://127.0.0.1:${env.AUTHZ_OPS_PORT}`
const mainPort = Number(env.AUTHZ_PORT)
const tokenReq = {
  mode: 'http',
  origin: main,
  tls: client,
  method: 'POST',
  path: '/token',
  headers: { 'content-type': 'application/json' },
  body: '{"audience":"inventory-service","scope":"stock:read"}',
}
const rows = []
const raw = []
const results = new Map()
const push = (key, value) => results.set(key, [...(results.get(key) ?? []), value])

for (let r = 0; r < rounds; r++) {
  raw.push(signRate())
  for (const connections of levels) push(`token:${connections}`, load({ ...tokenReq, connections, seconds }))
  push('hs:full', load({ mode: 'handshake', port: mainPort, tls: client, seconds: Math.min(seconds, 3), resume: false }))
  push('hs:resumed', load({ mode: 'handshake', port: mainPort, tls: client, seconds: Math.min(seconds, 3), resume: true }))
  push('jwks', load({ mode: 'http', origin: opsOrigin, path: '/.well-known/jwks.json', connections: 32, seconds: Math.min(seconds, 3) }))
  push('jwks304', load({ mode: 'http', origin: opsOrigin, path: '/.well-known/jwks.json', connections: 32, seconds: Math.min(seconds, 3), headers: { 'if-none-match': '*' }, expect: 304 }))
  push('discovery', load({ mode: 'http', origin: main, tls: client, path: '/.well-known/openid-configuration', connections: 32, seconds: Math.min(seconds, 3) }))
}
const rss = peakRss()
await running.stop()

const rawLimit = median(raw)
const fmt = (n, d = 0) => n.toLocaleString('en-US', { maximumFractionDigits: d, minimumFractionDigits: d })
rows.push(['raw RS256 signs/s, node:crypto, all cores', fmt(rawLimit), '', '', '', '1.00'])
for (const connections of levels) {
  const rs = results.get(`token:${connections}`)
  const rps = median(rs.map((x) => x.rps))
  rows.push([
    `POST /token, mTLS keep-alive, ${connections} conn`,
    fmt(rps),
    fmt(median(rs.map((x) => x.p50)), 2),
    fmt(median(rs.map((x) => x.p99)), 2),
    String(rs.reduce((a, x) => a + x.errors, 0)),
    fmt(rps / rawLimit, 2),
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
rows.push(['start to ready (existing keyset), ms', fmt(readyMs), '', '', '', ''])
rows.push(['server peak RSS under load, MB', fmt(rss), '', '', '', ''])

const header = ['measure', 'per second / value', 'p50 ms', 'p99 ms', 'errors', '÷ raw']
const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)))
const line = (r) => `| ${r.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join(' | ')} |`
console.log(`authz benchmark — node ${process.version}, ${(await import('node:os')).availableParallelism()} cores, ${rounds} round(s) × ${seconds} s, medians`)
console.log(line(header))
console.log(`|${widths.map((w, i) => (i === 0 ? '-'.repeat(w + 2) : '-'.repeat(w + 1) + ':')).join('|')}|`)
for (const r of rows) console.log(line(r))
if (!values.keep) rmSync(dir, { recursive: true, force: true })
else console.log(`material and server log kept in ${dir}`)
