// Shared by the bench scripts: a production-style install in a temp directory (dev PKI, a signing key, the
// sample policy) and the real server started from dist/ as a separate process, waited on until ready.
import { spawn } from 'node:child_process'
import { mkdtempSync, openSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { systemClock } from '../dist/clock.js'
import { initKeys } from '../dist/keys/admin.js'
import { ensureDevPki } from '../dist/pki/dev-files.js'

const here = new URL('.', import.meta.url).pathname

/** Ports of the benchmarked server: BENCH_PORT / BENCH_OPS_PORT, or the script's defaults. */
export function benchPorts(main, ops) {
  return { main: Number(process.env.BENCH_PORT ?? main), ops: Number(process.env.BENCH_OPS_PORT ?? ops) }
}

/** The sample policy, plus extra callers granted stock:read on inventory-service. */
export function samplePolicy(extraCallers = []) {
  const policy = JSON.parse(readFileSync(new URL('../config/service-policy.json', import.meta.url), 'utf8'))
  for (const name of extraCallers) policy.grants[name] = { 'inventory-service': ['stock:read'] }
  return policy
}

/** A temp install: returns its directory, the dev PKI paths and the AUTHZ_* environment for it. */
export async function prepareInstall({ prefix = 'authz-bench-', callers = ['order-service'], tokenTtl = 600, jwksMaxAge = 600, ports }) {
  const dir = mkdtempSync(join(tmpdir(), prefix))
  const keysDir = join(dir, 'keys')
  const policyPath = join(dir, 'policy.json')
  writeFileSync(policyPath, JSON.stringify(samplePolicy(callers.filter((c) => c !== 'order-service' && c !== 'payment-service'))))
  const { paths } = await ensureDevPki(join(dir, 'pki'), callers)
  await initKeys({ dir: keysDir, timing: { tokenTtl, jwksMaxAge }, clock: systemClock })
  const env = {
    PATH: process.env.PATH,
    AUTHZ_DEV: 'false',
    AUTHZ_TLS_CERT: paths.serverCert,
    AUTHZ_TLS_KEY: paths.serverKey,
    AUTHZ_CLIENT_CA: paths.caCert,
    AUTHZ_KEYS_DIR: keysDir,
    AUTHZ_POLICY: policyPath,
    AUTHZ_HOST: '127.0.0.1',
    AUTHZ_PORT: String(ports.main),
    AUTHZ_OPS_PORT: String(ports.ops),
    AUTHZ_TOKEN_TTL: String(tokenTtl),
    AUTHZ_JWKS_MAX_AGE: String(jwksMaxAge),
  }
  const client = (name = callers[0]) => ({ ca: paths.caCert, cert: paths.clientCert(name), key: paths.clientKey(name) })
  return { dir, keysDir, policyPath, paths, env, client }
}

/** Starts dist/bin/server.js with `env`, logging to <dir>/server.log; resolves once /readyz is 200. */
export async function startServerProcess(dir, env) {
  const started = performance.now()
  const log = openSync(join(dir, 'server.log'), 'a')
  const child = spawn(process.execPath, [join(here, '..', 'dist', 'bin', 'server.js')], { env, stdio: ['ignore', log, log] })
  const ops = `http://127.0.0.1:${env.AUTHZ_OPS_PORT}`
  for (;;) {
    try {
      if ((await fetch(`${ops}/readyz`)).status === 200) break
    } catch {
      // not listening yet
    }
    if (performance.now() - started > 20_000) throw new Error('server did not become ready')
    await new Promise((r) => setTimeout(r, 5))
  }
  return {
    child,
    ops,
    readyMs: performance.now() - started,
    async stop() {
      child.kill('SIGTERM')
      await new Promise((r) => child.once('exit', r))
    },
  }
}
