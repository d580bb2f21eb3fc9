// `npm run soak -- --minutes N`: steady token load on the real server in production configuration, with a
// key rotation every --rotate-every seconds (activating shortly after, like an operator with --force) and
// a policy rewrite every --policy-every seconds. Every token is verified against the JWKS served at that
// moment. Reports RSS, heap, open handles, event-loop delay and errors at the start and the end, and fails
// when any request or verification failed or memory kept growing. Bounded: it stops by itself.
import { execFileSync } from 'node:child_process'
import { readFileSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { createLocalJWKSet, jwtVerify } from 'jose'
import { Pool } from 'undici'
import { benchPorts, prepareInstall, startServerProcess } from './lib.mjs'

const { values } = parseArgs({
  options: {
    minutes: { type: 'string', default: '2' },
    rate: { type: 'string', default: '150' },
    'rotate-every': { type: 'string', default: '60' },
    'policy-every': { type: 'string', default: '20' },
  },
})
const minutes = Math.min(Number(values.minutes), 120)
const rate = Number(values.rate)
const here = new URL('.', import.meta.url).pathname
const callers = ['soak-client-1', 'soak-client-2']
const install = await prepareInstall({ prefix: 'authz-soak-', callers, tokenTtl: 300, jwksMaxAge: 30, ports: benchPorts(18543, 19564) })
const { dir, paths, env, policyPath } = install
const basePolicy = JSON.parse(readFileSync(policyPath, 'utf8'))
const running = await startServerProcess(dir, env)
const ops = running.ops
const metric = (text, name) => Number(new RegExp(`^${name}(?:\\{[^}]*\\})? ([0-9.e+-]+)$`, 'm').exec(text)?.[1] ?? NaN)
const samples = []
async function sample(label) {
  const text = await (await fetch(`${ops}/metrics`)).text()
  const s = {
    label,
    minute: +((performance.now() - t0) / 60000).toFixed(1),
    rssMB: +(metric(text, 'process_resident_memory_bytes') / 2 ** 20).toFixed(1),
    heapMB: +(metric(text, 'nodejs_heap_size_used_bytes') / 2 ** 20).toFixed(1),
    handles: metric(text, 'nodejs_active_handles_total'),
    loopP99ms: +(metric(text, 'nodejs_eventloop_lag_p99_seconds') * 1000).toFixed(2),
    keys: metric(text, 'authz_keys_published'),
    issued: stats.ok,
    errors: stats.errors,
    verifyFailures: stats.verifyFailures,
  }
  samples.push(s)
  console.log(JSON.stringify(s))
}

const pools = callers.map(
  (name) =>
    new Pool(`https://127.0.0.1:${env.AUTHZ_PORT}`, {
      connections: 4,
      connect: { ca: readFileSync(paths.caCert), cert: readFileSync(paths.clientCert(name)), key: readFileSync(paths.clientKey(name)), servername: 'localhost' },
    }),
)
const stats = { ok: 0, errors: 0, verifyFailures: 0, rotations: 0, policyReloads: 0 }
let jwks = createLocalJWKSet(await (await fetch(`${ops}/.well-known/jwks.json`)).json())
async function one(i) {
  try {
    const res = await pools[i % pools.length].request({
      method: 'POST',
      path: '/token',
      headers: { 'content-type': 'application/json' },
      body: '{"audience":"inventory-service"}',
    })
    const body = await res.body.json()
    if (res.statusCode !== 200) {
      stats.errors++
      return
    }
    stats.ok++
    if (i % 10 === 0) {
      // Verify against the JWKS served right now (refetched after each rotation below).
      try {
        await jwtVerify(body.access_token, jwks, { issuer: 'https://authz.internal', audience: 'inventory-service', algorithms: ['RS256'] })
      } catch {
        jwks = createLocalJWKSet(await (await fetch(`${ops}/.well-known/jwks.json`)).json())
        await jwtVerify(body.access_token, jwks, { issuer: 'https://authz.internal', audience: 'inventory-service', algorithms: ['RS256'] }).catch(() => stats.verifyFailures++)
      }
    }
  } catch {
    stats.errors++
  }
}

const t0 = performance.now()
const end = t0 + minutes * 60_000
await sample('start')
let n = 0
const load = setInterval(() => {
  for (let k = 0; k < rate / 20; k++) void one(n++)
}, 50)
const keysCli = join(here, '..', 'dist', 'bin', 'keys.js')
const keyEnv = { ...env }
const rotation = setInterval(() => {
  execFileSync(process.execPath, [keysCli, 'rotate', '--activate-in', '10s', '--force'], { env: keyEnv, stdio: 'ignore' })
  execFileSync(process.execPath, [keysCli, 'prune'], { env: keyEnv, stdio: 'ignore' })
  stats.rotations++
}, Number(values['rotate-every']) * 1000)
let flip = false
const policyTimer = setInterval(() => {
  flip = !flip
  const next = structuredClone(basePolicy)
  if (flip) next.grants['soak-extra'] = { 'order-service': ['order:read'] }
  writeFileSync(policyPath, JSON.stringify(next))
  stats.policyReloads++
}, Number(values['policy-every']) * 1000)
const sampler = setInterval(() => void sample('during'), 30_000)
await new Promise((r) => setTimeout(r, Math.max(0, end - performance.now())))
clearInterval(load)
clearInterval(rotation)
clearInterval(policyTimer)
clearInterval(sampler)
await new Promise((r) => setTimeout(r, 2000))
await sample('end')
for (const p of pools) await p.close()
await running.stop()

// Memory must level off: the last third of the run may not sit far above the middle third.
const during = samples.filter((s) => s.minute > 0)
const third = Math.max(1, Math.floor(during.length / 3))
const avg = (xs) => xs.reduce((a, s) => a + s.rssMB, 0) / xs.length
const middle = avg(during.slice(third, 2 * third).length ? during.slice(third, 2 * third) : during)
const last = avg(during.slice(-third))
const first = samples[0]
const final = samples.at(-1)
console.log(`\nsoak: ${minutes} min at ~${rate} tokens/s, ${stats.rotations} rotations, ${stats.policyReloads} policy rewrites`)
console.log('| | start | end |')
console.log('|---|---:|---:|')
for (const [k, label] of [
  ['rssMB', 'RSS, MB'],
  ['heapMB', 'heap used, MB'],
  ['handles', 'active handles'],
  ['loopP99ms', 'event-loop delay p99, ms'],
  ['keys', 'keys published'],
  ['issued', 'tokens issued'],
  ['errors', 'request errors'],
  ['verifyFailures', 'tokens that did not verify'],
])
  console.log(`| ${label} | ${first[k]} | ${final[k]} |`)
const growth = last / middle
console.log(`RSS last third vs middle third: ×${growth.toFixed(2)}`)
rmSync(dir, { recursive: true, force: true })
const failed = stats.errors > 0 || stats.verifyFailures > 0 || growth > 1.25
console.log(failed ? 'SOAK FAILED' : 'soak passed')
process.exitCode = failed ? 1 : 0
