// Where the CPU goes per issued token: the server's and the load generator's CPU seconds (from
// /proc/<pid>/stat, all threads) divided by the tokens issued, plus the server's per-thread split
// (main thread vs libuv pool threads that run the signatures, and the PKCS#11 worker). Linux only.
//   node bench/cpu-split.mjs [connections=32] [seconds=4] [alg=RS256] [store=file] [pkcs11 sessions=1]
//   (after `npm run build`; store pkcs11 makes a SoftHSM2 token of its own)
import { spawn } from 'node:child_process'
import { readdirSync, readFileSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { benchPorts, prepareInstall, startServerProcess } from './lib.mjs'

const connections = Number(process.argv[2] ?? 32)
const seconds = Number(process.argv[3] ?? 4)
const alg = process.argv[4] ?? 'RS256'
const store = process.argv[5] ?? 'file'
const here = new URL('.', import.meta.url).pathname
const install = await prepareInstall({ prefix: 'authz-cpu-', ports: benchPorts(28443, 29464), keys: { alg, store } })
const { dir, paths } = install
const running = await startServerProcess(dir, {
  ...install.env,
  AUTHZ_RATE_LIMIT: '1000000',
  ...(store === 'pkcs11' ? { AUTHZ_PKCS11_SESSIONS: process.argv[6] ?? '1' } : {}),
})
const server = running.child
const cpuOf = (stat) => {
  const f = stat.split(') ')[1].split(' ')
  return (Number(f[11]) + Number(f[12])) / 100
}
const names = {}
const threads = () => {
  const out = {}
  for (const t of readdirSync(`/proc/${server.pid}/task`)) {
    try {
      names[t] ??= readFileSync(`/proc/${server.pid}/task/${t}/comm`, 'utf8').trim()
      out[t] = cpuOf(readFileSync(`/proc/${server.pid}/task/${t}/stat`, 'utf8'))
    } catch {
      // thread ended
    }
  }
  return out
}
const before = threads()
const started = performance.now()
const load = spawn(
  process.execPath,
  [
    join(here, 'load.mjs'),
    JSON.stringify({
      mode: 'http',
      origin: `https://127.0.0.1:${install.env.AUTHZ_PORT}`,
      tls: { ca: paths.caCert, cert: paths.clientCert('order-service'), key: paths.clientKey('order-service') },
      method: 'POST',
      path: '/token',
      headers: { 'content-type': 'application/json' },
      body: '{"audience":"inventory-service","scope":"stock:read"}',
      connections,
      seconds,
      warmupSeconds: 0,
    }),
  ],
  { stdio: ['ignore', 'pipe', 'inherit'] },
)
let out = ''
load.stdout.on('data', (d) => (out += d))
let loadCpu = 0
const poll = setInterval(() => {
  try {
    loadCpu = cpuOf(readFileSync(`/proc/${load.pid}/stat`, 'utf8'))
  } catch {
    // exited
  }
}, 100)
await new Promise((r) => load.once('exit', r))
clearInterval(poll)
const wall = (performance.now() - started) / 1000
const after = threads()
const result = JSON.parse(out)
const mainTid = String(server.pid)
const perThread = Object.keys(after).map((t) => [t === mainTid ? 'main' : `${t} ${names[t]}`, after[t] - (before[t] ?? 0)])
const serverCpu = perThread.reduce((a, [, v]) => a + v, 0)
console.log(
  JSON.stringify({
    key: `${alg} ${store}`,
    connections,
    tokensPerSecond: Math.round(result.rps),
    p50ms: +result.p50.toFixed(2),
    p99ms: +result.p99.toFixed(2),
    errors: result.errors,
    serverCpuUsPerToken: Math.round((serverCpu / result.ok) * 1e6),
    loadGeneratorCpuUsPerToken: Math.round((loadCpu / result.ok) * 1e6),
    coresBusy: { server: +(serverCpu / wall).toFixed(2), loadGenerator: +(loadCpu / wall).toFixed(2) },
    serverThreadsCores: Object.fromEntries(perThread.filter(([, v]) => v > 0.05).map(([k, v]) => [k, +(v / wall).toFixed(2)])),
  }),
)
await running.stop()
rmSync(dir, { recursive: true, force: true })
