// Operator commands, timed from outside: `keys list`, `keys rotate`, `authz status` and the server's start
// to ready (its /readyz answering 200), in a checkout (the README's `npm run …` commands, built once,
// nothing changed since) and in a production install (the two tarballs installed with --omit=dev: the
// bins, no TypeScript). Medians of --runs runs (default 5). See bench/README.md#operator-commands.
//
//   node bench/operator.mjs [--runs 5] [--checkout <dir>] [--install <dir>] [--no-install]
//
// --checkout times another checkout (e.g. an older commit, for a before/after); --install reuses a
// production install made as the README says (otherwise one is made in a temp dir: npm pack both
// packages, npm install --omit=dev --ignore-scripts; not timed).
import { execFile, spawn } from 'node:child_process'
import { mkdtemp, readdir, rm, writeFile, mkdir } from 'node:fs/promises'
import { request } from 'node:http'
import { createServer } from 'node:net'
import { loadavg, tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs, promisify } from 'node:util'

const run = promisify(execFile)
const { values } = parseArgs({ options: { runs: { type: 'string', default: '5' }, checkout: { type: 'string' }, install: { type: 'string' }, 'no-install': { type: 'boolean' } } })
const runs = Number(values.runs)
const checkout = resolve(values.checkout ?? fileURLToPath(new URL('..', import.meta.url)))
const work = await mkdtemp(join(tmpdir(), 'authz-operator-bench-'))
const base = { PATH: process.env.PATH, HOME: process.env.HOME, AUTHZ_HOST: '127.0.0.1', AUTHZ_OPS_HOST: '127.0.0.1', AUTHZ_LOG_LEVEL: 'warn' }

const freePort = () =>
  new Promise((res) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address()
      s.close(() => res(port))
    })
  })

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]

/** Wall time of one command, start to exit (ms); it must exit 0. */
async function timed(command, args, options) {
  const t0 = performance.now()
  await run(command, args, { ...options, maxBuffer: 16 << 20 })
  return performance.now() - t0
}

const ready = (port) =>
  new Promise((res) => {
    const req = request({ host: '127.0.0.1', port, path: '/readyz' }, (r) => {
      r.resume()
      res(r.statusCode === 200)
    })
    req.on('error', () => res(false))
    req.end()
  })

/** Wall time from spawn to /readyz 200 (polled every 10 ms); the process group is then stopped. */
async function toReady(command, args, options, opsPort) {
  const t0 = performance.now()
  const child = spawn(command, args, { ...options, stdio: 'ignore', detached: true })
  try {
    for (;;) {
      if (child.exitCode !== null) throw new Error(`${command} exited ${child.exitCode}`)
      if (await ready(opsPort)) return performance.now() - t0
      if (performance.now() - t0 > 60_000) throw new Error(`${command}: not ready in 60 s`)
      await new Promise((r) => setTimeout(r, 10))
    }
  } finally {
    process.kill(-child.pid, 'SIGTERM')
    await new Promise((r) => (child.exitCode !== null ? r() : child.once('exit', r)))
  }
}

async function measure(label, commands) {
  const rows = []
  for (const [name, once] of commands) {
    const times = []
    for (let i = 0; i < runs; i++) times.push(await once())
    rows.push({ where: label, command: name, median_s: +(median(times) / 1000).toFixed(2), min_s: +(Math.min(...times) / 1000).toFixed(2), max_s: +(Math.max(...times) / 1000).toFixed(2) })
  }
  return rows
}

const rows = []
try {
  // --- a checkout: npm run …, nothing changed since the last build ------------------------------------
  {
    const keysDir = join(work, 'checkout-keys')
    const env = { ...base, AUTHZ_KEYS_DIR: keysDir, AUTHZ_PORT: String(await freePort()), AUTHZ_OPS_PORT: String(await freePort()) }
    const o = { cwd: checkout, env }
    await run('npm', ['run', '-s', 'keys', '--', 'init'], o) // builds first if anything changed: not timed
    await toReady('npm', ['start'], o, Number(env.AUTHZ_OPS_PORT)) // makes the dev PKI once: not timed
    rows.push(
      ...(await measure('checkout (npm run)', [
        ['keys list', () => timed('npm', ['run', '-s', 'keys', '--', 'list'], o)],
        ['keys rotate', () => timed('npm', ['run', '-s', 'keys', '--', 'rotate', '--activate-in', '1h'], o)],
        ['authz status', () => timed('npm', ['run', '-s', 'authz', '--', 'status'], o)],
        ['npm start → ready', () => toReady('npm', ['start'], o, Number(env.AUTHZ_OPS_PORT))],
      ])),
    )
  }
  // --- a production install: the bins ---------------------------------------------------------------
  if (values['no-install'] !== true) {
    let app = values.install === undefined ? undefined : resolve(values.install)
    if (app === undefined) {
      await run('npm', ['pack', '--pack-destination', work], { cwd: checkout })
      await run('npm', ['pack', '-w', '@authz/sdk', '--pack-destination', work], { cwd: checkout })
      const tarballs = (await readdir(work)).filter((f) => f.endsWith('.tgz')).map((f) => join(work, f))
      app = join(work, 'app')
      await mkdir(app)
      await writeFile(join(app, 'package.json'), JSON.stringify({ name: 'authz-prod', version: '1.0.0', private: true }))
      await run('npm', ['install', '--omit=dev', '--ignore-scripts', '--no-audit', '--no-fund', ...tarballs], { cwd: app })
    }
    const bin = join(app, 'node_modules', '.bin')
    const pki = join(work, 'prod-pki')
    const env = {
      ...base,
      PATH: `${bin}:${process.env.PATH}`,
      AUTHZ_DEV: 'false',
      AUTHZ_KEYS_DIR: join(work, 'prod-keys'),
      AUTHZ_TLS_CERT: join(pki, 'server.pem'),
      AUTHZ_TLS_KEY: join(pki, 'server-key.pem'),
      AUTHZ_CLIENT_CA: join(pki, 'ca.pem'),
      AUTHZ_POLICY: join(app, 'node_modules', 'authz', 'config', 'service-policy.json'),
      AUTHZ_PORT: String(await freePort()),
      AUTHZ_OPS_PORT: String(await freePort()),
    }
    const o = { cwd: app, env }
    await run('sh', ['-c', `authz-pki init --dir "${pki}" && authz-keys init`], o)
    rows.push(
      ...(await measure('production install (bins)', [
        ['authz-keys list', () => timed(join(bin, 'authz-keys'), ['list'], o)],
        ['authz-keys rotate', () => timed(join(bin, 'authz-keys'), ['rotate', '--activate-in', '1h'], o)],
        ['authz status', () => timed(join(bin, 'authz'), ['status'], o)],
        ['authz-server → ready', () => toReady(join(bin, 'authz-server'), [], o, Number(env.AUTHZ_OPS_PORT))],
      ])),
    )
  }
} finally {
  await rm(work, { recursive: true, force: true })
}
console.log(`operator commands, ${runs} runs each, ${checkout}; load average ${loadavg().map((l) => l.toFixed(2)).join(' ')}`)
console.table(rows)
