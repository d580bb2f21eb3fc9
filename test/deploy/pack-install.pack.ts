/**
 * What the Docker image does, without Docker: build, `npm pack`, install the packed package with
 * production dependencies only (`npm ci --omit=dev --ignore-scripts`) in a clean directory, and run
 * `node dist/bin/server.js` with AUTHZ_DEV=false and mounted-style material (TLS files, keys directory,
 * policy, each in its own directory). It must become ready, issue a token over mTLS, and exit 0 on
 * SIGTERM. And the SDK's own tarball (`npm pack -w @authz/sdk`) installs on its own into a fresh service
 * directory, pulling in jose and nothing else, and verifies a token there. Slow (it reaches the npm
 * registry): not part of `npm test`; `npm run test:pack` runs it, and so does .ci/run.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process'
import { copyFile, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { createLocalJWKSet, jwtVerify, type JSONWebKeySet } from 'jose'
import t, { type Test } from 'tap'
import { systemClock } from '../../src/clock.js'
import { initKeys } from '../../src/keys/admin.js'
import { ensureDevPki } from '../../src/pki/dev-files.js'
import { freePort, httpCall, httpsCall, type Response } from '../helpers/http.js'
import { ORPHAN_GUARD, track } from '../helpers/processes.js'

const run = promisify(execFile)
const repo = fileURLToPath(new URL('../../', import.meta.url))

t.setTimeout(600_000)

/**
 * The environment for npm and the server: only what locates tools, certificates and the npm cache. Not
 * the test runner's NODE_OPTIONS (coverage hooks), not the outer npm's npm_config_local_prefix (it would
 * point the inner npm at this repository), and no AUTHZ_* from the outside.
 */
function cleanEnv(extra: Record<string, string> = {}): Record<string, string> {
  const keep = /^(PATH|HOME|TMPDIR|LANG|NODE_EXTRA_CA_CERTS|SSL_CERT_FILE|SSL_CERT_DIR|https?_proxy|no_proxy|HTTPS?_PROXY|NO_PROXY)$/
  const keepNpm = /^npm_config_(cache|userconfig|globalconfig|cafile|registry|proxy|https_proxy|noproxy|strict_ssl)$/
  const env: Record<string, string> = {}
  for (const [name, value] of Object.entries(process.env)) {
    if (value !== undefined && (keep.test(name) || keepNpm.test(name))) env[name] = value
  }
  return { ...env, ...extra }
}


function exited(child: ChildProcess): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve({ code: child.exitCode, signal: child.signalCode })
  return new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })))
}

/** The processes a test starts (push them) are killed, and `dir` removed, when it ends. */
function cleanUp(t: Test, dir: string): ChildProcess[] {
  const started: ChildProcess[] = []
  t.teardown(async () => {
    for (const child of started) {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGKILL')
        await exited(child)
      }
    }
    await rm(dir, { recursive: true, force: true })
  })
  return started
}

t.test('the packed package installs with production dependencies only and serves tokens', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'authz-pack-'))
  const started = cleanUp(t, dir)

  // 1. build and pack, as the image's build stage does
  await run('npm', ['run', 'build', '--silent'], { cwd: repo, env: cleanEnv(), timeout: 120_000 })
  const packed = await run('npm', ['pack', '--json', '--pack-destination', dir], { cwd: repo, env: cleanEnv(), timeout: 60_000 })
  const [info] = JSON.parse(packed.stdout) as { filename: string; files: { path: string }[] }[]
  t.ok(info, 'npm pack reports the tarball')
  if (info === undefined) return
  const files = info.files.map((f) => f.path)
  // The issuer depends on the SDK (the scope grammar, the thumbprint, the clock): it ships the built
  // workspace package beside it, which `npm ci` links as node_modules/@authz/sdk.
  for (const needed of ['package.json', 'dist/bin/server.js', 'dist/bin/keys.js', 'dist/bin/pki.js', 'config/service-policy.json', 'openapi.yaml', 'packages/sdk/package.json', 'packages/sdk/dist/index.js']) {
    t.ok(files.includes(needed), `packed: ${needed}`)
  }
  t.same(
    files.filter((f) => /^(keys|src|test|examples|node_modules|packages\/sdk\/src)\//.test(f) || /\.pem$/.test(f)),
    [],
    'no keys, sources, tests or PEM files in the package',
  )

  // 2. unpack into a clean directory and install production dependencies from the lock file
  await run('tar', ['-xzf', join(dir, info.filename), '-C', dir])
  const app = join(dir, 'package')
  await copyFile(join(repo, 'package-lock.json'), join(app, 'package-lock.json'))
  await run('npm', ['ci', '--omit=dev', '--ignore-scripts', '--no-audit', '--no-fund', '--prefix', app], {
    cwd: app,
    env: cleanEnv(),
    timeout: 180_000,
  })
  const installed = JSON.parse(await readFile(join(app, 'node_modules', '.package-lock.json'), 'utf8')) as {
    packages: Record<string, { dev?: boolean }>
  }
  t.same(
    Object.entries(installed.packages)
      .filter(([, p]) => p.dev === true)
      .map(([name]) => name),
    [],
    'no dev dependency installed',
  )

  // 3. mounted-style material: TLS files, a keys directory, a policy, each in its own directory
  const { paths } = await ensureDevPki(join(dir, 'tls'), ['order-service'])
  const key = await initKeys({ dir: join(dir, 'keys'), timing: { tokenTtl: 600, jwksMaxAge: 600 }, clock: systemClock })
  await mkdir(join(dir, 'policy'))
  await copyFile(join(repo, 'config', 'service-policy.json'), join(dir, 'policy', 'service-policy.json'))
  const port = await freePort()
  const opsPort = await freePort()

  // 4. start it as the image does
  let output = ''
  const child = spawn(process.execPath, ['dist/bin/server.js'], {
    cwd: app,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: cleanEnv({
      AUTHZ_DEV: 'false',
      AUTHZ_HOST: '127.0.0.1',
      AUTHZ_PORT: String(port),
      AUTHZ_OPS_HOST: '127.0.0.1',
      AUTHZ_OPS_PORT: String(opsPort),
      AUTHZ_TLS_CERT: paths.serverCert,
      AUTHZ_TLS_KEY: paths.serverKey,
      AUTHZ_CLIENT_CA: paths.caCert,
      AUTHZ_KEYS_DIR: join(dir, 'keys'),
      AUTHZ_POLICY: join(dir, 'policy', 'service-policy.json'),
    }),
  })
  started.push(child)
  child.stdout?.on('data', (c: Buffer) => (output += c.toString()))
  child.stderr?.on('data', (c: Buffer) => (output += c.toString()))
  const exit = exited(child)

  let ready: Response | undefined
  for (let i = 0; i < 100 && child.exitCode === null && ready?.status !== 200; i++) {
    ready = await httpCall(opsPort, { path: '/readyz' }).catch(() => undefined)
    if (ready?.status !== 200) await new Promise((r) => setTimeout(r, 200))
  }
  t.equal(ready?.status, 200, ready?.status === 200 ? 'ready on the ops port' : `not ready; server output: ${output.slice(0, 2000)}`)
  if (ready?.status !== 200) return

  // 5. a token over mTLS, verified with the JWKS the same process publishes
  const ca = await readFile(paths.caCert, 'utf8')
  const client = { certPem: await readFile(paths.clientCert('order-service'), 'utf8'), keyPem: await readFile(paths.clientKey('order-service'), 'utf8') }
  const res = await httpsCall(port, {
    method: 'POST',
    path: '/token',
    ca,
    client,
    headers: { 'content-type': 'application/json' },
    body: '{"audience":"inventory-service","scope":"stock:read"}',
  })
  t.equal(res.status, 200, 'a token')
  const jwks = (await httpCall(opsPort, { path: '/.well-known/jwks.json' })).json<JSONWebKeySet>()
  const { payload, protectedHeader } = await jwtVerify(res.json<{ access_token: string }>().access_token, createLocalJWKSet(jwks), {
    issuer: 'https://authz.internal',
    audience: 'inventory-service',
    typ: 'at+jwt',
  })
  t.equal(protectedHeader.kid, key.kid, 'signed with the mounted key')
  t.match(payload, { sub: 'order-service', scope: 'stock:read' }, 'the certificate CN is the subject')

  // 6. SIGTERM drains and exits 0
  child.kill('SIGTERM')
  t.same(await exit, { code: 0, signal: null }, 'exit code 0 after SIGTERM')
  t.match(output, /shutting down/, 'it said it was draining')
  t.notMatch(output, /DEV MODE/, 'never dev mode')
})

t.test('the SDK tarball installs on its own into a fresh service, with jose as its only dependency', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'authz-sdk-pack-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  // npm pack runs the package's prepack: it builds dist/ with its declarations.
  const packed = await run('npm', ['pack', '-w', '@authz/sdk', '--json', '--pack-destination', dir], { cwd: repo, env: cleanEnv(), timeout: 120_000 })
  const [info] = JSON.parse(packed.stdout) as { filename: string; files: { path: string }[] }[]
  if (info === undefined) return t.fail('npm pack reports no tarball')
  const files = info.files.map((f) => f.path).sort()
  for (const needed of ['package.json', 'README.md', 'dist/index.js', 'dist/index.d.ts', 'dist/fastify.js', 'dist/fastify.d.ts', 'dist/grpc.js', 'dist/grpc.d.ts']) {
    t.ok(files.includes(needed), `packed: ${needed}`)
  }
  t.same(files.filter((f) => !/^(package\.json|README\.md|dist\/[a-z-]+\.(js|d\.ts))$/.test(f)), [], 'nothing but the manifest, the README and dist')

  const service = join(dir, 'service')
  await mkdir(service)
  await writeFile(join(service, 'package.json'), JSON.stringify({ name: 'some-service', version: '1.0.0', private: true, type: 'module' }))
  await run('npm', ['install', '--no-audit', '--no-fund', join(dir, info.filename)], { cwd: service, env: cleanEnv(), timeout: 180_000 })
  const installed = JSON.parse(await readFile(join(service, 'node_modules', '.package-lock.json'), 'utf8')) as { packages: Record<string, unknown> }
  t.same(Object.keys(installed.packages).sort(), ['node_modules/@authz/sdk', 'node_modules/jose'], 'the SDK and jose, nothing else (the peers are optional)')

  // A service that verifies a token with a static key set, and what the optional peers mean.
  await writeFile(
    join(service, 'check.mjs'),
    `import { createVerifier, VerifyError } from '@authz/sdk'
import { serviceAuth } from '@authz/sdk/fastify'
import { calculateJwkThumbprint, exportJWK, generateKeyPair, SignJWT } from 'jose'
const { privateKey, publicKey } = await generateKeyPair('RS256')
const jwk = await exportJWK(publicKey)
const kid = await calculateJwkThumbprint(jwk)
const now = Math.floor(Date.now() / 1000)
const peer = { peerThumbprint: 'A'.repeat(43) } // the certificate the token is bound to (a peer is required)
const token = await new SignJWT({ iss: 'https://authz.internal', sub: 'order-service', aud: 'inventory-service', iat: now, nbf: now, exp: now + 600, jti: 'j', scope: 'stock:read', cnf: { 'x5t#S256': peer.peerThumbprint } })
  .setProtectedHeader({ alg: 'RS256', typ: 'at+jwt', kid }).sign(privateKey)
const verifier = await createVerifier({ issuer: 'https://authz.internal', audience: 'inventory-service', keys: JSON.stringify({ keys: [{ ...jwk, kid, alg: 'RS256' }] }) })
const caller = await verifier.verify(token, peer)
const refused = await verifier.verify(token.slice(0, -4) + 'AAAA', peer).catch((e) => e instanceof VerifyError && e.code)
const grpc = await import('@authz/sdk/grpc').then(() => 'loaded', (e) => e.code)
console.log(JSON.stringify({ service: caller.service, scopes: caller.scopes, refused, plugin: typeof serviceAuth, grpc }))
`,
  )
  const out = await run(process.execPath, ['check.mjs'], { cwd: service, env: cleanEnv(), timeout: 30_000 })
  t.same(JSON.parse(out.stdout), {
    service: 'order-service',
    scopes: ['stock:read'],
    refused: 'ERR_TOKEN_SIGNATURE',
    plugin: 'function',
    grpc: 'ERR_MODULE_NOT_FOUND',
  }, 'verifies on its own; @authz/sdk/grpc needs its optional peer')
})

/** The shell block of the README between `<!-- runbook:production-install … -->` and `<!-- /runbook -->`. */
async function readmeRunbook(): Promise<string> {
  const readme = await readFile(join(repo, 'README.md'), 'utf8')
  const block = /<!-- runbook:production-install[^>]*-->\s*```sh\n([\s\S]*?)```\s*<!-- \/runbook -->/.exec(readme)?.[1]
  if (block === undefined) throw new Error('README.md has no runbook:production-install block')
  return block
}

t.test('the README runbook runs word for word through the bins of a production install (the two tarballs, --omit=dev, no TypeScript)', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'authz-prod-'))
  const started = cleanUp(t, dir)

  // 1. the two tarballs, as the README says (each pack builds first: prepare, prepack)
  const pack = async (...args: string[]) => {
    const { stdout } = await run('npm', ['pack', ...args, '--json', '--pack-destination', dir], { cwd: repo, env: cleanEnv(), timeout: 120_000 })
    return (JSON.parse(stdout) as { filename: string }[])[0]?.filename as string
  }
  const issuer = await pack()
  const sdk = await pack('-w', '@authz/sdk')

  // 2. a fresh directory, production dependencies only. --ignore-scripts: the optional PKCS#11 addon's
  // native build is not what this test is about (the image builds it in its own stage).
  const app = join(dir, 'app')
  await mkdir(app)
  await writeFile(join(app, 'package.json'), JSON.stringify({ name: 'authz-prod', version: '1.0.0', private: true }))
  await run('npm', ['install', '--omit=dev', '--ignore-scripts', '--no-audit', '--no-fund', join(dir, issuer), join(dir, sdk)], { cwd: app, env: cleanEnv(), timeout: 180_000 })
  const bin = join(app, 'node_modules', '.bin')
  const { readdir } = await import('node:fs/promises')
  t.same((await readdir(bin)).filter((b) => b.startsWith('authz')).sort(), ['authz', 'authz-keys', 'authz-pki', 'authz-server'], 'the four bins are installed')
  const modules = await readdir(join(app, 'node_modules'))
  t.notOk(modules.includes('typescript') || modules.includes('tap'), 'no TypeScript, no dev dependency')
  const shipped = (await readdir(join(app, 'node_modules', 'authz'), { recursive: true })) as string[]
  t.same(shipped.filter((f) => f.endsWith('.ts') && !f.endsWith('.d.ts')), [], 'no TypeScript source in the package')

  // 3. material made with the installed bins, in mounted-style directories
  const env = cleanEnv({
    PATH: `${bin}:${process.env.PATH ?? ''}`,
    // Only the orphan guard: a server left by a killed test process exits by itself.
    NODE_OPTIONS: ORPHAN_GUARD,
    AUTHZ_DEV: 'false',
    AUTHZ_HOST: '127.0.0.1',
    AUTHZ_OPS_HOST: '127.0.0.1',
    AUTHZ_PORT: String(await freePort()),
    AUTHZ_OPS_PORT: String(await freePort()),
    AUTHZ_TLS_CERT: join(dir, 'pki', 'server.pem'),
    AUTHZ_TLS_KEY: join(dir, 'pki', 'server-key.pem'),
    AUTHZ_CLIENT_CA: join(dir, 'pki', 'ca.pem'),
    AUTHZ_KEYS_DIR: join(dir, 'keys'),
    AUTHZ_POLICY: join(app, 'node_modules', 'authz', 'config', 'service-policy.json'),
  })
  const sh = (script: string) => run('sh', ['-c', script], { cwd: app, env, timeout: 60_000 })
  await sh(`authz-pki init --dir "${join(dir, 'pki')}" && authz-pki client order-service --dir "${join(dir, 'pki')}" && authz-keys init`)

  // 4. the server, from its bin
  let output = ''
  const child = track(spawn('authz-server', [], { cwd: app, env, stdio: ['ignore', 'pipe', 'pipe'] }))
  started.push(child)
  child.stdout?.on('data', (c: Buffer) => (output += c.toString()))
  child.stderr?.on('data', (c: Buffer) => (output += c.toString()))
  const exit = exited(child)
  const opsPort = Number(env.AUTHZ_OPS_PORT)
  let ready: Response | undefined
  for (let i = 0; i < 300 && child.exitCode === null && ready?.status !== 200; i++) {
    ready = await httpCall(opsPort, { path: '/readyz' }).catch(() => undefined)
    if (ready?.status !== 200) await new Promise((r) => setTimeout(r, 100))
  }
  t.equal(ready?.status, 200, ready?.status === 200 ? 'authz-server is ready' : `not ready: ${output.slice(0, 2000)}`)
  if (ready?.status !== 200) return
  const ca = await readFile(env.AUTHZ_CLIENT_CA as string, 'utf8')
  const client = { certPem: await readFile(join(dir, 'pki', 'clients', 'order-service.pem'), 'utf8'), keyPem: await readFile(join(dir, 'pki', 'clients', 'order-service-key.pem'), 'utf8') }
  const res = await httpsCall(Number(env.AUTHZ_PORT), { method: 'POST', path: '/token', ca, client, headers: { 'content-type': 'application/json' }, body: '{"audience":"inventory-service"}' })
  t.equal(res.status, 200, 'a token')
  const token = res.json<{ access_token: string }>().access_token
  const { decodeProtectedHeader } = await import('jose')
  const leaked = decodeProtectedHeader(token).kid as string

  // 5. the README's block, word for word (sh -e: every command must succeed), its transcript kept
  const runbook = await readmeRunbook()
  const started5 = Date.now()
  const result = await run('sh', ['-e', '-x', '-c', runbook], { cwd: app, env: { ...env, TOKEN: token, LEAKED_KID: leaked }, timeout: 120_000 }).then(
    (r) => ({ code: 0, ...r }),
    (e: { code?: number; stdout?: string; stderr?: string }) => ({ code: e.code ?? 1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' }),
  )
  const transcript = `${result.stderr}\n${result.stdout}`.replaceAll(token, '$TOKEN')
  t.equal(result.code, 0, `the runbook ran (${Date.now() - started5} ms); transcript:\n${transcript}`)
  t.comment(`runbook transcript (production install, ${Date.now() - started5} ms):\n${transcript}`)
  t.match(result.stdout, /^safe: publishing this directory unpublishes no key that may sign now$/m, 'check --against: safe')
  t.match(result.stdout, /^judged by the servers' clock/m, 'prune/revoke judged by the servers')
  t.match(result.stdout, /^result: ok$/m, 'token inspect: ok against the live JWKS')
  t.match(result.stdout, new RegExp(`^revoked ${leaked}`, 'm'))

  // 6. the running server unpublishes the revoked key by itself (directory watch, or its 5 s poll)
  let kids: string[] = [leaked]
  for (let i = 0; i < 150 && kids.includes(leaked); i++) {
    kids = (await httpCall(opsPort, { path: '/.well-known/jwks.json' })).json<JSONWebKeySet>().keys.map((k) => k.kid as string)
    if (kids.includes(leaked)) await new Promise((r) => setTimeout(r, 100))
  }
  t.notOk(kids.includes(leaked), 'the live JWKS no longer publishes the revoked key')
  const after = await httpsCall(Number(env.AUTHZ_PORT), { method: 'POST', path: '/token', ca, client, headers: { 'content-type': 'application/json' }, body: '{"audience":"inventory-service"}' })
  t.equal(after.status, 200, 'and tokens keep coming, from its heir')
  child.kill('SIGTERM')
  t.same(await exit, { code: 0, signal: null }, 'exit 0 after SIGTERM')
})
