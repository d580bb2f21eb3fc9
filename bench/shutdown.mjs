// Time from SIGTERM to exit of the real server (dist/), worst of N runs in each state that has kept a
// process alive before: a reload has met a FIFO at a watched path (AUTHZ_POLICY); a request whose body
// trickles in past the deadline; a keep-alive connection held after its answer; a TCP connection that never
// speaks. The promise: exit 0 within AUTHZ_SHUTDOWN_TIMEOUT + 1 s in every state.
// Usage: npm run build && node bench/shutdown.mjs [runs=20] [AUTHZ_SHUTDOWN_TIMEOUT seconds=2] [states, e.g. fifo,trickle]
import { execFileSync } from 'node:child_process'
import { closeSync, constants, existsSync, openSync, readFileSync, renameSync } from 'node:fs'
import { connect, createServer } from 'node:net'
import { join } from 'node:path'
import { connect as tlsConnect } from 'node:tls'
import { prepareInstall, startServerProcess } from './lib.mjs'

const runs = Number(process.argv[2] ?? 20)
const timeoutS = Number(process.argv[3] ?? 2)
const only = process.argv[4]?.split(',')

/** A port free a moment ago (other processes on this machine use the usual ones). */
async function freePort() {
  const server = createServer()
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address()
  await new Promise((resolve) => server.close(resolve))
  return port
}

const until = async (check, ms = 5000) => {
  const end = performance.now() + ms
  while (!check() && performance.now() < end) await new Promise((r) => setTimeout(r, 20))
  return check()
}

/** A client TLS connection to the server; resolves once it is up. */
function tlsClient(install, port) {
  const { ca, cert, key } = install.client()
  const socket = tlsConnect({ host: '127.0.0.1', port, servername: 'localhost', ca: readFileSync(ca), cert: readFileSync(cert), key: readFileSync(key) })
  socket.on('error', () => undefined)
  return new Promise((resolve) => socket.once('secureConnect', () => resolve(socket)))
}

const body = '{"audience":"inventory-service"}'
const head = `POST /token HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n`

/** Each state: prepares it on a running server, returns what to clean up after the exit. */
const STATES = {
  async fifo(install, server) {
    const policy = install.policyPath
    renameSync(policy, `${policy}.away`)
    execFileSync('mkfifo', [policy])
    server.child.kill('SIGHUP')
    const log = join(install.dir, 'server.log')
    await until(() => existsSync(log) && readFileSync(log, 'utf8').includes('a FIFO, not a regular file'))
    return () => {
      try {
        closeSync(openSync(policy, constants.O_WRONLY | constants.O_NONBLOCK))
      } catch {
        // no reader was blocked on it
      }
      execFileSync('rm', ['-f', policy])
      renameSync(`${policy}.away`, policy)
    }
  },
  async trickle(install, server, port) {
    const socket = await tlsClient(install, port)
    socket.write(head)
    let sent = 0
    const drip = setInterval(() => sent < body.length - 1 && socket.write(body[sent++]), 250)
    await new Promise((r) => setTimeout(r, 300)) // the headers reach the server
    return () => {
      clearInterval(drip)
      socket.destroy()
    }
  },
  async 'keep-alive'(install, server, port) {
    const socket = await tlsClient(install, port)
    socket.write(head + body)
    await new Promise((resolve) => socket.once('data', resolve))
    return () => socket.destroy()
  },
  async silent(install, server, port) {
    const socket = connect(port, '127.0.0.1')
    socket.on('error', () => undefined)
    await new Promise((resolve) => socket.once('connect', resolve))
    return () => socket.destroy()
  },
}

const results = {}
for (const [state, prepare] of Object.entries(STATES)) {
  if (only !== undefined && !only.includes(state)) continue
  const ports = { main: await freePort(), ops: await freePort() }
  const install = await prepareInstall({ prefix: 'authz-shutdown-', ports })
  const env = { ...install.env, AUTHZ_SHUTDOWN_TIMEOUT: String(timeoutS), AUTHZ_PORT: String(ports.main), AUTHZ_OPS_PORT: String(ports.ops) }
  const times = []
  for (let i = 0; i < runs; i++) {
    const server = await startServerProcess(install.dir, env)
    const cleanup = await prepare(install, server, ports.main)
    const exit = new Promise((resolve) => server.child.once('exit', (code, signal) => resolve({ code, signal, at: performance.now() })))
    const signalled = performance.now()
    server.child.kill('SIGTERM')
    // Past the bound by far: a hung process is killed so the next run can start, and reported.
    const hung = setTimeout(() => server.child.kill('SIGKILL'), (timeoutS + 10) * 1000)
    const { code, signal, at } = await exit
    clearTimeout(hung)
    cleanup()
    times.push({ ms: at - signalled, code, signal })
  }
  const worst = Math.max(...times.map((t) => t.ms))
  const failures = times.filter((t) => t.code !== 0 || t.ms > (timeoutS + 1) * 1000).length
  results[state] = { runs, worstMs: Math.round(worst), medianMs: Math.round(times.map((t) => t.ms).sort((a, b) => a - b)[Math.floor(runs / 2)]), failures }
  console.log(`${state.padEnd(10)} worst ${(worst / 1000).toFixed(2)} s, median ${(results[state].medianMs / 1000).toFixed(2)} s over ${runs} runs; ${failures} outside exit 0 within ${timeoutS + 1} s`)
}
process.stdout.write(`${JSON.stringify({ timeoutS, results })}\n`)
process.exit(Object.values(results).some((r) => r.failures > 0) ? 1 : 0)
