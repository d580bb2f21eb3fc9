// What the SDK costs a receiving service, measured in one run (after `npm run build`):
//   node bench/sdk.mjs [--rounds 3] [--seconds 5] [--connections 16]
// 1. CPU per request of a minimal Fastify mTLS route (keep-alive, the same load from bench/load.mjs in a
//    process of its own), bare and with serviceAuth — verified-token cache on, and off. The server's CPU
//    (all its threads, from /proc/<pid>/stat) divided by the requests it answered; rounds interleave the
//    variants; medians. One token, bound to the caller's certificate, as a caller that reuses its token.
// 2. Verification cost per token in the SDK, cache off: RS256 vs ES256, in this process (verify-cost.mjs).
// Linux only (/proc). The server listens on 127.0.0.1:BENCH_SDK_PORT (default 28643).
import { spawn } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { thumbprintOf } from '@authz/sdk'
import { ensureDevPki } from '../dist/pki/dev-files.js'
import { key, tokenClaims, verifyCosts } from './verify-cost.mjs'

const arg = (name, fallback) => (process.argv.includes(name) ? Number(process.argv[process.argv.indexOf(name) + 1]) : fallback)
const rounds = arg('--rounds', 3)
const seconds = arg('--seconds', 5)
const connections = arg('--connections', 16)
const port = Number(process.env.BENCH_SDK_PORT ?? 28643)
const here = new URL('.', import.meta.url).pathname

const dir = mkdtempSync(join(tmpdir(), 'authz-sdk-bench-'))
const { paths } = await ensureDevPki(join(dir, 'pki'), ['order-service'])

const rsa = await key('RS256')
const ec = await key('ES256')
const thumbprint = thumbprintOf(readFileSync(paths.clientCert('order-service'), 'utf8'))
const claims = () => tokenClaims(thumbprint)
const jwks = JSON.stringify({ keys: [rsa.jwk, ec.jwk] })
const token = await rsa.sign(claims())

const cpuOf = (pid) => {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ')
  return (Number(f[11]) + Number(f[12])) / 100 // utime + stime, clock ticks of 10 ms
}

async function measure(variant) {
  const server = spawn(process.execPath, [join(here, 'sdk-server.mjs'), JSON.stringify({ variant, port, ca: paths.caCert, cert: paths.serverCert, key: paths.serverKey, jwks })], {
    stdio: ['ignore', 'pipe', 'inherit'],
  })
  await new Promise((resolve, reject) => {
    server.stdout.on('data', (d) => String(d).includes('ready') && resolve())
    server.once('exit', () => reject(new Error(`${variant} server exited`)))
  })
  const load = (secs, warmup) =>
    new Promise((resolve) => {
      const child = spawn(
        process.execPath,
        [
          join(here, 'load.mjs'),
          JSON.stringify({
            mode: 'http',
            origin: `https://127.0.0.1:${port}`,
            tls: { ca: paths.caCert, cert: paths.clientCert('order-service'), key: paths.clientKey('order-service') },
            path: '/stock/sku-1',
            headers: { 'x-service-token': token },
            connections,
            seconds: secs,
            warmupSeconds: warmup,
          }),
        ],
        { stdio: ['ignore', 'pipe', 'inherit'] },
      )
      let out = ''
      child.stdout.on('data', (d) => (out += d))
      child.once('exit', () => resolve(JSON.parse(out)))
    })
  await load(1, 0) // warm up: JIT, TLS sessions
  const before = cpuOf(server.pid)
  const result = await load(seconds, 0)
  const cpu = cpuOf(server.pid) - before
  server.kill('SIGTERM')
  await new Promise((r) => server.once('exit', r))
  if (result.errors > 0) throw new Error(`${variant}: ${result.errors} errors (${JSON.stringify(result.statuses)})`)
  return { rps: result.rps, usPerRequest: (cpu / result.ok) * 1e6, p50: result.p50, p99: result.p99 }
}

const variants = ['bare', 'cache', 'no-cache']
const samples = Object.fromEntries(variants.map((v) => [v, []]))
for (let r = 0; r < rounds; r++) for (const v of variants) samples[v].push(await measure(v))
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]
const med = (v, field) => median(samples[v].map((s) => s[field]))

// Verification per token, cache off, in this process (bench/verify-cost.mjs).
const verification = await verifyCosts({ n: 3000, thumbprint })
const n = verification.n
const costs = ['RS256', 'ES256'].map((alg) => ({ alg, ...verification[alg] }))
const cachedHit = verification.cachedUs
rmSync(dir, { recursive: true, force: true })

const fmt = (x, d = 0) => x.toLocaleString('en-US', { maximumFractionDigits: d, minimumFractionDigits: d })
const bare = med('bare', 'usPerRequest')
console.log(`SDK benchmark — node ${process.version}, ${rounds} round(s) × ${seconds} s, ${connections} keep-alive mTLS connections, medians`)
console.log('| GET /stock/:sku, Fastify over mTLS | server CPU µs/request | added vs bare | requests/s | p50 ms | p99 ms |')
console.log('|---|---:|---:|---:|---:|---:|')
for (const [v, label] of [['bare', 'bare route'], ['cache', 'serviceAuth, verified-token cache on (default)'], ['no-cache', 'serviceAuth, cache off']]) {
  const us = med(v, 'usPerRequest')
  console.log(`| ${label} | ${fmt(us)} | ${v === 'bare' ? '—' : `+${fmt(((us - bare) / bare) * 100, 1)} %`} | ${fmt(med(v, 'rps'))} | ${fmt(med(v, 'p50'), 2)} | ${fmt(med(v, 'p99'), 2)} |`)
}
console.log()
console.log(`| verify one token in the SDK (${n} distinct tokens, one at a time) | CPU µs/token | wall µs/token |`)
console.log('|---|---:|---:|')
for (const c of costs) console.log(`| ${c.alg}, cache off | ${fmt(c.cpuUs, 1)} | ${fmt(c.wallUs, 1)} |`)
console.log(`| RS256, cached token (binding still checked) | ${fmt(cachedHit, 1)} | |`)
