// Load generator: a separate process so the server's figures are not muddied by the client's event loop.
// Usage: node bench/load.mjs '<json options>'  — prints one JSON line with the result.
//   mode "http":      keep-alive requests (undici Pool) for `seconds` at `connections`, optional mTLS
//   mode "handshake": new TLS connections, optionally resuming the previous session
// With `cpuPid` (mode http, Linux), the result also has the CPU of that process (all its threads, from
// /proc/<pid>/stat) over the measurement window, per answer completed in the same window: `cpuUsPerOk`.
import { readFileSync } from 'node:fs'
import { connect } from 'node:tls'
import { Pool } from 'undici'

const opts = JSON.parse(process.argv[2])
const tlsFiles = opts.tls
  ? {
      ca: readFileSync(opts.tls.ca),
      cert: readFileSync(opts.tls.cert),
      key: readFileSync(opts.tls.key),
      servername: 'localhost',
    }
  : undefined

/** CPU seconds (user + system, every thread) of a process, from /proc/<pid>/stat; NaN once it is gone. */
function cpuOf(pid) {
  try {
    const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ')
    return (Number(f[11]) + Number(f[12])) / 100 // utime + stime, clock ticks of 10 ms
  } catch {
    return Number.NaN
  }
}

function percentile(sorted, p) {
  if (sorted.length === 0) return 0
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]
}

async function http() {
  const pool = new Pool(opts.origin, {
    connections: opts.connections,
    pipelining: 1,
    keepAliveTimeout: 60_000,
    ...(tlsFiles ? { connect: tlsFiles } : {}),
  })
  const latencies = []
  let errors = 0
  let ok = 0
  // Successful answers by completion time, whenever they started: what the CPU window is divided by.
  let completed = 0
  const statuses = {}
  const warmupUntil = performance.now() + (opts.warmupSeconds ?? 0.5) * 1000
  const deadline = warmupUntil + opts.seconds * 1000
  const snapshot = () => ({ cpu: cpuOf(opts.cpuPid), completed })
  let windowStart
  let windowEnd
  const timers = opts.cpuPid
    ? [setTimeout(() => (windowStart = snapshot()), warmupUntil - performance.now()), setTimeout(() => (windowEnd = snapshot()), deadline - performance.now())]
    : []
  const loop = async () => {
    while (performance.now() < deadline) {
      const started = performance.now()
      try {
        const res = await pool.request({
          method: opts.method ?? 'GET',
          path: opts.path,
          headers: opts.headers ?? {},
          body: opts.body,
        })
        await res.body.text()
        if (res.statusCode === (opts.expect ?? 200)) completed++
        const measured = started >= warmupUntil
        if (measured) {
          statuses[res.statusCode] = (statuses[res.statusCode] ?? 0) + 1
          if (res.statusCode === (opts.expect ?? 200)) {
            ok++
            latencies.push(performance.now() - started)
          } else errors++
        }
      } catch {
        if (started >= warmupUntil) errors++
      }
    }
  }
  await Promise.all(Array.from({ length: opts.connections }, loop))
  // The last answers can all arrive before the deadline's timer runs: then the window ends now.
  for (const t of timers) clearTimeout(t)
  if (opts.cpuPid && windowStart !== undefined) windowEnd ??= snapshot()
  await pool.close()
  latencies.sort((a, b) => a - b)
  const cpu =
    windowStart !== undefined && windowEnd !== undefined
      ? { cpuUsPerOk: ((windowEnd.cpu - windowStart.cpu) / Math.max(1, windowEnd.completed - windowStart.completed)) * 1e6, cpuCores: (windowEnd.cpu - windowStart.cpu) / opts.seconds }
      : {}
  return {
    rps: ok / opts.seconds,
    ok,
    errors,
    statuses,
    p50: percentile(latencies, 50),
    p99: percentile(latencies, 99),
    ...cpu,
  }
}

async function handshakes() {
  let done = 0
  let resumed = 0
  let errors = 0
  let session
  const deadline = performance.now() + opts.seconds * 1000
  const one = () =>
    new Promise((resolve) => {
      const socket = connect({ host: '127.0.0.1', port: opts.port, ...tlsFiles, ...(opts.resume && session ? { session } : {}) })
      socket.once('session', (s) => {
        if (opts.resume) session = s
      })
      socket.once('secureConnect', () => {
        done++
        if (socket.isSessionReused()) resumed++
        // TLS 1.3 tickets arrive just after the handshake: give the session event a tick, then close.
        setImmediate(() => {
          socket.end()
          resolve()
        })
      })
      socket.once('error', () => {
        errors++
        socket.destroy()
        resolve()
      })
    })
  const loop = async () => {
    while (performance.now() < deadline) await one()
  }
  await Promise.all(Array.from({ length: opts.concurrency ?? 4 }, loop))
  return { rps: done / opts.seconds, done, resumed, errors }
}

const result = opts.mode === 'handshake' ? await handshakes() : await http()
process.stdout.write(`${JSON.stringify(result)}\n`)
