// Shared by the bench scripts: a production-style install in a temp directory (dev PKI, a signing key, the
// sample policy) and the real server started from dist/ as a separate process, waited on until ready.
// The signing key is an RS256 PKCS#8 file by default; `keys: { alg: 'ES256', store: 'pkcs11' }` makes it
// an ES256 key, or a key pair inside a SoftHSM2 token of the install's own (made with the built keys CLI).
import { execFileSync, spawn } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, writeFileSync } from 'node:fs'
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

export const SOFTHSM_MODULE = process.env.BENCH_SOFTHSM_MODULE ?? '/usr/lib/softhsm/libsofthsm2.so'

/**
 * A SoftHSM2 token in `dir` (its own config file and token directory, one initialized token, the user PIN
 * in a file): the variables that point authz at it, and what bench/hsm-sign-rate.mjs needs.
 */
export function softHsmToken(dir, label = 'authz-bench') {
  if (!existsSync(SOFTHSM_MODULE)) throw new Error(`SoftHSM2 is not installed (${SOFTHSM_MODULE} missing): apt-get install softhsm2`)
  const tokenDir = join(dir, 'softhsm-tokens')
  mkdirSync(tokenDir, { recursive: true })
  const conf = join(dir, 'softhsm2.conf')
  writeFileSync(conf, `directories.tokendir = ${tokenDir}\nobjectstore.backend = file\nlog.level = ERROR\n`)
  const pin = '246810'
  execFileSync('softhsm2-util', ['--init-token', '--free', '--label', label, '--pin', pin, '--so-pin', '13579111'], {
    env: { ...process.env, SOFTHSM2_CONF: conf },
    stdio: 'ignore',
  })
  const pinFile = join(dir, 'pkcs11-pin')
  writeFileSync(pinFile, `${pin}\n`, { mode: 0o600 })
  return {
    module: SOFTHSM_MODULE,
    label,
    pin,
    env: { SOFTHSM2_CONF: conf, AUTHZ_PKCS11_MODULE: SOFTHSM_MODULE, AUTHZ_PKCS11_TOKEN: label, AUTHZ_PKCS11_PIN_FILE: pinFile },
  }
}

/**
 * A temp install: returns its directory, the dev PKI paths and the AUTHZ_* environment for it.
 * `keys.alg` is RS256 (default) or ES256; `keys.store` is file (default) or pkcs11 (a SoftHSM2 token in
 * the install's directory; `hsm` in the result, its variables in `env`, the key label in `keyLabel`).
 */
export async function prepareInstall({ prefix = 'authz-bench-', callers = ['order-service'], tokenTtl = 600, jwksMaxAge = 600, ports, keys = {} }) {
  const { alg = 'RS256', store = 'file' } = keys
  const dir = mkdtempSync(join(tmpdir(), prefix))
  const keysDir = join(dir, 'keys')
  const policyPath = join(dir, 'policy.json')
  writeFileSync(policyPath, JSON.stringify(samplePolicy(callers.filter((c) => c !== 'order-service' && c !== 'payment-service'))))
  const { paths } = await ensureDevPki(join(dir, 'pki'), callers)
  let hsm
  let keyLabel
  if (store === 'pkcs11') {
    hsm = softHsmToken(dir)
    // As an operator makes it: the built keys CLI, in its own process, generates the pair in the token.
    const out = execFileSync(process.execPath, [join(here, '..', 'dist', 'bin', 'keys.js'), 'init', '--alg', alg, '--store', 'pkcs11'], {
      env: { PATH: process.env.PATH, AUTHZ_KEYS_DIR: keysDir, AUTHZ_TOKEN_TTL: String(tokenTtl), AUTHZ_JWKS_MAX_AGE: String(jwksMaxAge), ...hsm.env },
      encoding: 'utf8',
    })
    keyLabel = /in the PKCS#11 token as (\S+?)\)/.exec(out)?.[1]
    if (keyLabel === undefined) throw new Error(`keys init --store pkcs11: unexpected output: ${out}`)
  } else {
    await initKeys({ dir: keysDir, timing: { tokenTtl, jwksMaxAge }, clock: systemClock }, { alg })
  }
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
    ...hsm?.env,
  }
  const client = (name = callers[0]) => ({ ca: paths.caCert, cert: paths.clientCert(name), key: paths.clientKey(name) })
  return { dir, keysDir, policyPath, paths, env, client, hsm, keyLabel }
}

/** Starts dist/bin/server.js with `env`, logging to <dir>/server.log; resolves once /readyz is 200. */
export async function startServerProcess(dir, env) {
  const started = performance.now()
  const log = openSync(join(dir, 'server.log'), 'a')
  const child = spawn(process.execPath, [join(here, '..', 'dist', 'bin', 'server.js')], { env, stdio: ['ignore', log, log] })
  const ops = `http://127.0.0.1:${env.AUTHZ_OPS_PORT}`
  // How the process ended, once it has (a crash under load shows here: { code: null, signal: 'SIGSEGV' }).
  let exited = null
  child.once('exit', (code, signal) => (exited = { code, signal }))
  for (;;) {
    if (exited !== null) throw new Error(`server exited before it was ready (${exited.signal ?? `code ${exited.code}`}); see ${join(dir, 'server.log')}`)
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
    get exited() {
      return exited
    },
    async stop() {
      if (exited !== null) return
      child.kill('SIGTERM')
      await new Promise((r) => child.once('exit', r))
    },
  }
}
