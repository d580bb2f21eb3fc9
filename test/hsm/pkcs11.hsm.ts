/**
 * Signing keys that never leave a PKCS#11 token, against a real SoftHSM2 token (`npm run test:hsm`, run by
 * .ci/run; it needs the softhsm2 package and fails without it). Keys are generated in the token as
 * non-extractable, the server signs through the module on its own thread, the lifecycle works as for
 * files, a token missing at start names its variable, and one that fails later makes /token answer 503
 * and /readyz fail until it recovers by itself.
 */
import { readdir, rename, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { createLocalJWKSet, jwtVerify, type JSONWebKeySet } from 'jose'
import t, { type Test } from 'tap'
import { ManualClock } from '../../src/clock.js'
import { readManifest } from '../../src/keys/manifest.js'
import { startServer } from '../../src/server.js'
import { LogCapture } from '../helpers/harness.js'
import { httpCall, httpsCall } from '../helpers/http.js'
import { install, startInstalled } from '../helpers/install.js'
import { testPki } from '../helpers/pki.js'
import { keysCli, runTs } from '../helpers/processes.js'
import { softHsm, SOFTHSM_MODULE, TOKEN_LABEL, USER_PIN } from '../helpers/softhsm.js'

const tokenRequest = { method: 'POST', path: '/token', headers: { 'content-type': 'application/json' }, body: '{"audience":"inventory-service"}' }

async function setup(t: Test) {
  const pki = testPki()
  const installed = await install(t, { noKey: true })
  const dir = installed.dir
  const hsm = softHsm(t, dir)
  const clock = new ManualClock(Date.now())
  const env: Record<string, string> = { ...installed.env, AUTHZ_RATE_LIMIT: '0', AUTHZ_JWKS_MAX_AGE: '60', ...hsm.env }
  env.SOFTHSM2_CONF = process.env.SOFTHSM2_CONF as string
  // The keys CLI runs in its own process, as operators run it (one module init per process).
  const keys = (...argv: string[]) => keysCli(env, ...argv)
  return { pki, dir, hsm, clock, env, keys }
}

const start = (t: Test, env: Record<string, string>, clock: ManualClock) => startInstalled(t, env, { clock, pollMs: 3_600_000 })

/**
 * The keys CLI runs in its own process, on the real clock: every instant it wrote (a key's creation, an
 * activation "now") is at most the real time after it exited. The test's manual clock catches up with that,
 * however long the CLI took (regression: a fixed `clock.advance(5000)` fell short on a slow machine).
 */
function catchUp(clock: ManualClock): void {
  clock.set(Math.max(clock.now(), Date.now()))
}

/** Moves the test's clock to the instant the manifest says `kid` activates (the CLI computed it on its clock). */
async function moveToActivation(clock: ManualClock, dir: string, kid: string | undefined): Promise<void> {
  const key = (await readManifest(join(dir, 'keys'))).keys.find((k) => k.kid === kid)
  if (key === undefined) throw new Error(`no key ${kid} in the manifest`)
  clock.set(Math.max(clock.now(), key.activatesAt))
}

/** What the token holds under `label` (inspected from another process, as an auditor would). */
async function inToken(env: Record<string, string>, label: string): Promise<{ count: number; extractable?: boolean; sensitive?: boolean }> {
  const res = await runTs(new URL('../helpers/p11-inspect.ts', import.meta.url), [SOFTHSM_MODULE, TOKEN_LABEL, USER_PIN, label], { SOFTHSM2_CONF: env.SOFTHSM2_CONF })
  if (res.code !== 0) throw new Error(res.err)
  return JSON.parse(res.out) as { count: number }
}

async function verified(port: number, opsPort: number, ca: string, client: { certPem: string; keyPem: string }, at: number) {
  const res = await httpsCall(port, { ...tokenRequest, ca, client })
  if (res.status !== 200) return { status: res.status }
  const token = res.json<{ access_token: string }>().access_token
  const jwks = (await httpCall(opsPort, { path: '/.well-known/jwks.json' })).json<JSONWebKeySet>()
  const { protectedHeader } = await jwtVerify(token, createLocalJWKSet(jwks), {
    issuer: 'https://authz.internal',
    audience: 'inventory-service',
    algorithms: ['RS256', 'ES256'],
    currentDate: new Date(at),
  })
  return { status: 200, alg: protectedHeader.alg, kid: protectedHeader.kid }
}

t.test('keys made in the token never leave it; the server signs RS256 and ES256 through it; revoke destroys', async (t) => {
  const { pki, dir, clock, env, keys } = await setup(t)
  const init = await keys('init', '--store', 'pkcs11')
  t.equal(init.code, 0, init.err)
  t.match(init.out, /created key \S+ \(in the PKCS#11 token as authz-\S+\), active now/)
  const [first] = (await readManifest(join(dir, 'keys'))).keys
  t.match(first, { store: 'pkcs11', alg: 'RS256', label: `authz-${first?.kid}` }, 'the manifest records kid, label and store')
  t.same((await readdir(join(dir, 'keys'))).filter((f) => f.endsWith('.pem')), [], 'no key file')
  const status = await runTs(new URL('../../src/bin/authz.ts', import.meta.url), ['status', '--json'], env)
  t.match(JSON.parse(status.out), { keys: { ok: true, active: first?.kid } }, 'authz status reads a directory whose keys are in the token (regression: CANNOT READ)')
  t.match(await inToken(env, `authz-${first?.kid}`), { count: 2, extractable: false, sensitive: true }, 'a non-extractable, sensitive key pair in the token')

  catchUp(clock)
  const { server, port, opsPort } = await start(t, env, clock)
  const client = pki.client('order-service')
  t.match(await verified(port, opsPort, pki.ca.certPem, client, clock.now()), { status: 200, alg: 'RS256', kid: first?.kid }, 'an RS256 token signed in the token verifies')
  // Many at once: the session pool signs in parallel.
  const burst = await Promise.all(Array.from({ length: 20 }, () => verified(port, opsPort, pki.ca.certPem, client, clock.now())))
  t.same(burst.filter((r) => r.status !== 200), [], '20 concurrent tokens, all verified')

  // Active at once (the CLI's process has the real clock, this test a manual one).
  const rotated = await keys('rotate', '--store', 'pkcs11', '--alg', 'ES256', '--activate-in', '0s', '--force')
  t.equal(rotated.code, 0, rotated.err)
  const second = (await readManifest(join(dir, 'keys'))).keys[1]
  // The running server picks the new key up (watch + poll in production; here at once), and it signs
  // from its activation instant.
  await server.reload()
  t.ok(server.keys.jwks().kids.includes(second?.kid as string), 'published')
  await moveToActivation(clock, dir, second?.kid)
  t.match(await verified(port, opsPort, pki.ca.certPem, client, clock.now()), { status: 200, alg: 'ES256', kid: second?.kid }, 'an ES256 token signed in the token verifies')

  const revoked = await keys('revoke', second?.kid as string)
  t.equal(revoked.code, 0, revoked.err)
  t.equal((await inToken(env, `authz-${second?.kid}`)).count, 0, 'revoke destroyed the key pair in the token')
  const third = (await readManifest(join(dir, 'keys'))).keys.find((k) => k.kid !== first?.kid)
  t.match(third, { store: 'pkcs11', alg: 'ES256' }, 'its replacement is made like it: ES256, in the token')
})

t.test('a module or token that cannot be used at start is a start-up error naming the variable', async (t) => {
  const { dir, env, keys, hsm } = await setup(t)
  t.equal((await keys('init', '--store', 'pkcs11')).code, 0)
  const attempt = (extra: Record<string, string>) => startServer({ ...env, ...extra }, { logDestination: new LogCapture() }).then((s) => s.close().then(() => 'started'), (err: unknown) => err)
  t.match(await attempt({ AUTHZ_PKCS11_MODULE: join(dir, 'no-such-module.so') }), { code: 'ERR_CONFIG', variable: 'AUTHZ_PKCS11_MODULE' })
  t.match(await attempt({ AUTHZ_PKCS11_TOKEN: 'no-such-token' }), { code: 'ERR_CONFIG', variable: 'AUTHZ_PKCS11_TOKEN' })
  await writeFile(join(dir, 'wrong-pin'), '000000\n')
  t.match(await attempt({ AUTHZ_PKCS11_PIN_FILE: join(dir, 'wrong-pin') }), { code: 'ERR_CONFIG', variable: 'AUTHZ_PKCS11_PIN_FILE' })
  t.match(await attempt({ AUTHZ_PKCS11_PIN_FILE: join(dir, 'missing-pin') }), { code: 'ERR_CONFIG', variable: 'AUTHZ_PKCS11_PIN_FILE' })
  const logs = new LogCapture()
  const wrong = await startServer({ ...env, AUTHZ_PKCS11_PIN_FILE: join(dir, 'wrong-pin') }, { logDestination: logs }).catch((e: unknown) => e as Error)
  t.notMatch(String((wrong as Error).message), /000000|246810/, 'no PIN in the message')
  t.equal(await attempt({}), 'started', 'and with the right settings it starts')
  t.ok(hsm.tokenDir.length > 0)
})

t.test('a token that fails later: /token answers 503 and /readyz fails, then it recovers by itself', async (t) => {
  const { pki, clock, env, keys, hsm } = await setup(t)
  t.equal((await keys('init', '--store', 'pkcs11', '--alg', 'ES256')).code, 0)
  catchUp(clock)
  const { port, opsPort, logs } = await start(t, env, clock)
  const client = pki.client('order-service')
  t.match(await verified(port, opsPort, pki.ca.certPem, client, clock.now()), { status: 200, alg: 'ES256' })
  t.equal((await httpCall(opsPort, { path: '/readyz' })).status, 200)

  // The token's storage disappears under the running server (a network HSM unreachable, a card pulled).
  const down = logs.next((r) => r.event === 'pkcs11_unavailable')
  await rename(hsm.tokenDir, `${hsm.tokenDir}.away`)
  const refused = await httpsCall(port, { ...tokenRequest, ca: pki.ca.certPem, client })
  t.match({ status: refused.status, body: refused.text }, { status: 503, body: '{"error":"temporarily_unavailable"}' }, '503 temporarily_unavailable')
  t.equal(refused.headers['retry-after'], '5', 'with Retry-After: the module reconnects within seconds')
  await down
  const ready = await httpCall(opsPort, { path: '/readyz' })
  t.match({ status: ready.status, body: ready.json() }, { status: 503, body: { status: 'not_ready', checks: { signing_key: false } } }, '/readyz fails')
  t.equal((await httpCall(opsPort, { path: '/.well-known/jwks.json' })).status, 200, 'and the JWKS is still served')
  const metrics = (await httpCall(opsPort, { path: '/metrics' })).text
  t.match(metrics, /authz_pkcs11_available 0/)
  t.match(metrics, /authz_token_requests_unavailable_total\{reason="signer_unavailable"\} [1-9]/, 'the 503 counted by reason')
  t.match(metrics, /authz_ready 0/)
  t.notMatch(logs.text, /246810/, 'the PIN never reaches a log')

  // It comes back: the server reloads the module by itself, with no restart and no SIGHUP.
  const up = logs.next((r) => r.event === 'pkcs11_available')
  await rename(`${hsm.tokenDir}.away`, hsm.tokenDir)
  await up
  t.equal((await httpCall(opsPort, { path: '/readyz' })).status, 200, 'ready again')
  t.match(await verified(port, opsPort, pki.ca.certPem, client, clock.now()), { status: 200, alg: 'ES256' }, 'tokens again')
  t.match((await httpCall(opsPort, { path: '/metrics' })).text, /authz_pkcs11_available 1/)
})

t.test('many concurrent signatures on a pool of sessions, RS256 and ES256 (regression: the module crashed)', async (t) => {
  const { pki, dir, clock, env, keys } = await setup(t)
  t.equal((await keys('init', '--store', 'pkcs11')).code, 0)
  t.equal((await keys('rotate', '--store', 'pkcs11', '--alg', 'ES256', '--activate-in', '1h')).code, 0)
  const es256 = (await readManifest(join(dir, 'keys'))).keys.find((k) => k.alg === 'ES256')?.kid
  catchUp(clock)
  const { server, port, opsPort } = await start(t, { ...env, AUTHZ_PKCS11_SESSIONS: '4' }, clock)
  const client = pki.client('order-service')
  // 32 keep-alive clients in a loop: the sessions sign in parallel, on several threads at once.
  const { Agent } = await import('node:https')
  const agents = Array.from({ length: 32 }, () => new Agent({ keepAlive: true, maxSockets: 1, ca: pki.ca.certPem, cert: client.certPem, key: client.keyPem }))
  t.teardown(() => agents.forEach((a) => a.destroy()))
  const load = async (): Promise<Record<string, number>> => {
    const statuses: Record<string, number> = {}
    await Promise.all(
      agents.map(async (agent) => {
        for (let i = 0; i < 40; i++) {
          const res = await httpsCall(port, { ...tokenRequest, agent })
          statuses[res.status] = (statuses[res.status] ?? 0) + 1
        }
      }),
    )
    return statuses
  }
  t.same(await load(), { 200: 1280 }, '1,280 RS256 tokens from 32 clients at once, all signed')
  t.match(await verified(port, opsPort, pki.ca.certPem, client, clock.now()), { status: 200, alg: 'RS256' })
  // The ES256 key activates an hour after the rotate ran, by the CLI's clock: the instant is read from the
  // manifest (regression: `clock.advance(3_600_000)` from a clock made before the CLI ran fell short).
  await moveToActivation(clock, dir, es256)
  t.same(await load(), { 200: 1280 }, '1,280 ES256 tokens from 32 clients at once, all signed')
  t.match(await verified(port, opsPort, pki.ca.certPem, client, clock.now()), { status: 200, alg: 'ES256' })
  t.equal((await httpCall(opsPort, { path: '/readyz' })).status, 200, 'and the server is still ready')
  t.ok(server.keys.signingAvailable())
})

t.test('a token replaced under the running server by one with other keys under the same labels stays down (regression)', async (t) => {
  const { pki, clock, env, keys, hsm, dir } = await setup(t)
  t.equal((await keys('init', '--store', 'pkcs11', '--alg', 'ES256')).code, 0)
  const label = ((await readManifest(join(dir, 'keys'))).keys[0] as { label: string }).label
  catchUp(clock)
  const { port, opsPort, logs } = await start(t, env, clock)
  const client = pki.client('order-service')
  t.match(await verified(port, opsPort, pki.ca.certPem, client, clock.now()), { status: 200 })
  // The token goes away; a new token with the same label and PIN appears, holding another key pair under
  // the active key's label.
  const down = logs.next((r) => r.event === 'pkcs11_unavailable')
  await rename(hsm.tokenDir, `${hsm.tokenDir}.real`)
  t.equal((await httpsCall(port, { ...tokenRequest, ca: pki.ca.certPem, client })).status, 503)
  await down
  const refused = logs.next((r) => r.event === 'pkcs11_unavailable' && /no longer key/.test(String(r.detail)))
  const { mkdir } = await import('node:fs/promises')
  const { execFileSync } = await import('node:child_process')
  await mkdir(hsm.tokenDir)
  execFileSync('softhsm2-util', ['--init-token', '--free', '--label', TOKEN_LABEL, '--pin', USER_PIN, '--so-pin', '13579111'], { stdio: 'ignore' })
  const impostor = await runTs(new URL('../helpers/p11-impostor.ts', import.meta.url), [SOFTHSM_MODULE, TOKEN_LABEL, USER_PIN, label], { SOFTHSM2_CONF: env.SOFTHSM2_CONF })
  t.equal(impostor.code, 0, impostor.err)
  await refused
  t.equal((await httpCall(opsPort, { path: '/readyz' })).status, 503, 'not ready: the token holds another key (before: ready, and every token failed verification)')
  t.equal((await httpsCall(port, { ...tokenRequest, ca: pki.ca.certPem, client })).status, 503, 'no token signed by the wrong key')
  // The real token comes back: the server recovers by itself.
  const up = logs.next((r) => r.event === 'pkcs11_available')
  const { rm } = await import('node:fs/promises')
  await rm(hsm.tokenDir, { recursive: true })
  await rename(`${hsm.tokenDir}.real`, hsm.tokenDir)
  await up
  t.match(await verified(port, opsPort, pki.ca.certPem, client, clock.now()), { status: 200, alg: 'ES256' })
})
