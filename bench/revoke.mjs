// `npm run bench:revoke`: the README's emergency revoke under traffic, with both kits, over HTTP and gRPC.
// The real authz (dist/, production configuration, AUTHZ_TOKEN_TTL=300, AUTHZ_JWKS_MAX_AGE=30) signs;
// inventory-service runs once guarded by @authz/sdk (Fastify + gRPC wrappers) and once by the Go kit
// (net/http + grpcauth), each called by --callers callers per protocol at --rate requests per second.
// --revoke-at seconds in, the built keys CLI revokes the signing key (`keys revoke <kid>`, as the README's
// runbook); the run ends --seconds in. It prints, per kit and protocol, the 401s (UNAUTHENTICATED) the
// callers saw, when, the requests the callee refused (a retried request is refused once), and the token
// requests. Bounded: it stops by itself.
//
//   npm run bench:revoke                                   # the kits of this checkout, with their helpers
//   npm run bench:revoke -- --kits /tmp/authz-main --before  # an older checkout's kits, as its README used them
//
// --before calls as the kits' READMEs did before the retrying helpers: getToken + node:https and
// serviceChannelCredentials (TypeScript), a base transport and PerRPCCredentials (Go). --kits names the
// checkout the SDK (packages/sdk/dist, built) and the Go kit (clients/go) are taken from.
import { execFileSync, spawn } from 'node:child_process'
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync } from 'node:fs'
import { request } from 'node:https'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { parseArgs } from 'node:util'
import grpc from '@grpc/grpc-js'
import Fastify from 'fastify'
import { benchPorts, prepareInstall, startServerProcess } from './lib.mjs'

const { values } = parseArgs({
  options: {
    seconds: { type: 'string', default: '190' },
    'revoke-at': { type: 'string', default: '15' },
    callers: { type: 'string', default: '4' },
    rate: { type: 'string', default: '5' },
    kits: { type: 'string' },
    before: { type: 'boolean', default: false },
  },
})
const seconds = Math.min(Number(values.seconds), 600)
const revokeAt = Number(values['revoke-at'])
const callerCount = Number(values.callers)
const rate = Number(values.rate)
const root = resolve(new URL('..', import.meta.url).pathname)
const kits = resolve(values.kits ?? root)
const before = values.before
const GO = process.env.GO ?? '/usr/lib/go-1.22/bin/go'

const sdk = await import(join(kits, 'packages/sdk/dist/index.js'))
const sdkGrpc = await import(join(kits, 'packages/sdk/dist/grpc.js'))
const sdkFastify = await import(join(kits, 'packages/sdk/dist/fastify.js'))

const names = (kit) => Array.from({ length: callerCount }, (_, i) => `${kit}-caller-${i + 1}`)
const install = await prepareInstall({ prefix: 'authz-revoke-', callers: [...names('ts'), ...names('go')], tokenTtl: 300, jwksMaxAge: 30, ports: benchPorts(18643, 19664) })
const { dir, paths, env } = install
const server = await startServerProcess(dir, { ...env, AUTHZ_RATE_LIMIT: '0' })
const tokenUrl = `https://localhost:${env.AUTHZ_PORT}/token`
const jwksUrl = `${server.ops}/.well-known/jwks.json`
const read = (path) => readFileSync(path)
const now = () => Date.now()

/** What the callers of one kit and protocol saw. */
const lane = () => ({ requests: 0, ok: 0, unauthenticated: 0, other_errors: 0, errors: {}, first_401_ms: 0, last_401_ms: 0, token_requests: 0, callee_refused: 0 })
const refused = (l) => {
  l.unauthenticated++
  l.first_401_ms ||= now()
  l.last_401_ms = now()
}
const failed = (l, why) => {
  l.other_errors++
  l.errors[why] = (l.errors[why] ?? 0) + 1
}

// --- TypeScript: inventory-service and its callers -------------------------------------------------------
const ts = { http: lane(), grpc: lane() }
const verifier = await sdk.createVerifier({ issuer: 'https://authz.internal', audience: 'inventory-service', jwksUrl })
const calleeCounters = { http: new sdk.CalleeCounters(), grpc: new sdk.CalleeCounters() }
const app = Fastify({ https: { ca: read(paths.caCert), cert: read(paths.serverCert), key: read(paths.serverKey), requestCert: true, rejectUnauthorized: true } })
await app.register(sdkFastify.serviceAuth, { verifier, allowUnlisted: true, onDecision: calleeCounters.http.observe })
app.get('/stock/:sku', async () => 'ok')
await app.listen({ host: '127.0.0.1', port: 0 })
const httpPort = app.server.address().port
const codec = { serialize: (v) => Buffer.from(JSON.stringify(v)), deserialize: (b) => JSON.parse(b.toString()) }
const definition = {
  GetStock: { path: '/demo.Inventory/GetStock', requestStream: false, responseStream: false, requestSerialize: codec.serialize, requestDeserialize: codec.deserialize, responseSerialize: codec.serialize, responseDeserialize: codec.deserialize },
}
const grpcServer = new grpc.Server()
grpcServer.addService(definition, { GetStock: sdkGrpc.authorizeUnary((call, callback) => callback(null, call.request), { verifier, allowUnlisted: true, onDecision: calleeCounters.grpc.observe }) })
const grpcPort = await new Promise((ok, ko) =>
  grpcServer.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createSsl(read(paths.caCert), [{ private_key: read(paths.serverKey), cert_chain: read(paths.serverCert) }], true), (e, p) => (e ? ko(e) : ok(p))),
)
const Inventory = grpc.makeGenericClientConstructor(definition, 'Inventory')

const timers = []
const every = (f) => {
  // Each caller steady, starting at a random phase.
  const start = setTimeout(() => timers.push(setInterval(f, 1000 / rate)), Math.random() * (1000 / rate))
  timers.push(start)
}
const closers = []
for (const name of names('ts')) {
  const tls = { ca: read(paths.caCert), cert: read(paths.clientCert(name)), key: read(paths.clientKey(name)) }
  const tokens = new sdk.TokenClient({ tokenUrl, ...tls, onRefresh: (e) => (e.scopes.length > 0 ? ts.http : ts.grpc).token_requests++ })
  closers.push(() => tokens.close())
  let get
  let client
  if (before) {
    // The README's calling code before serviceFetch: a token from getToken, sent with node:https.
    get = async () => {
      const token = await tokens.getToken('inventory-service', 'stock:read')
      return new Promise((ok, ko) => {
        const req = request(`https://localhost:${httpPort}/stock/sku-1`, { ...tls, agent: false, headers: { 'x-service-token': token } }, (res) => {
          res.resume()
          res.on('end', () => ok(res.statusCode))
        })
        req.on('error', ko)
        req.end()
      })
    }
    client = new Inventory(`localhost:${grpcPort}`, sdkGrpc.serviceChannelCredentials(tls, tokens, 'inventory-service'))
  } else {
    const inventory = sdk.serviceFetch(tokens, 'inventory-service', 'stock:read')
    get = async () => {
      const res = await inventory(`https://localhost:${httpPort}/stock/sku-1`)
      await res.arrayBuffer()
      return res.status
    }
    client = sdkGrpc.serviceClient(Inventory, `localhost:${grpcPort}`, tokens, 'inventory-service')
  }
  closers.push(() => client.close())
  every(() => {
    ts.http.requests++
    get().then(
      (status) => (status === 200 ? ts.http.ok++ : status === 401 ? refused(ts.http) : failed(ts.http, String(status))),
      (err) => failed(ts.http, err.code ?? err.message),
    )
  })
  every(() => {
    ts.grpc.requests++
    client.GetStock({ sku: 'sku-1' }, { deadline: Date.now() + 10_000 }, (err) => {
      if (err === null) ts.grpc.ok++
      else if (err.code === grpc.status.UNAUTHENTICATED) refused(ts.grpc)
      else failed(ts.grpc, grpc.status[err.code])
    })
  })
}

// --- Go: inventory-service and its callers, in one process built against the Go kit of --kits -----------
const gopath = mkdtempSync(join(tmpdir(), 'authz-revoke-gopath-'))
mkdirSync(join(gopath, 'src', 'authz.internal', 'clients'), { recursive: true })
mkdirSync(join(gopath, 'src', 'authz.internal', 'bench'), { recursive: true })
symlinkSync(join(kits, 'clients', 'go'), join(gopath, 'src', 'authz.internal', 'clients', 'go'))
symlinkSync(join(root, 'bench', 'revoke'), join(gopath, 'src', 'authz.internal', 'bench', 'revoke'))
const goEnv = { ...process.env, GO111MODULE: 'off', GOPATH: `${gopath}:/usr/share/gocode`, GOPROXY: 'off', GOFLAGS: '', GOTOOLCHAIN: 'local', CGO_ENABLED: '0' }
const binary = join(gopath, 'revoke-go')
execFileSync(GO, ['build', '-o', binary, ...(before ? ['-tags', 'before'] : []), '.'], { cwd: join(gopath, 'src', 'authz.internal', 'bench', 'revoke'), env: goEnv, stdio: 'inherit' })
const goCallers = names('go')
const goProcess = spawn(
  binary,
  [
    `-token-url=${tokenUrl}`,
    `-jwks-url=${jwksUrl}`,
    `-ca=${paths.caCert}`,
    `-certs=${goCallers.map((n) => paths.clientCert(n)).join(',')}`,
    `-keys=${goCallers.map((n) => paths.clientKey(n)).join(',')}`,
    `-server-cert=${paths.serverCert}`,
    `-server-key=${paths.serverKey}`,
    `-rate=${rate}`,
  ],
  { stdio: ['pipe', 'pipe', 'inherit'] },
)
let goOut = ''
goProcess.stdout.on('data', (c) => (goOut += c))
const goDone = new Promise((ok) => goProcess.once('exit', ok))

// --- The revoke, as the runbook says: the built keys CLI on the directory the server reads ---------------
const started = now()
const keysCli = (...args) => execFileSync(process.execPath, [join(root, 'dist', 'bin', 'keys.js'), ...args], { env, encoding: 'utf8' })
console.error(`revoke bench: ${before ? 'before (no retrying helpers)' : 'with the kits’ helpers'}, kits of ${kits}; ${callerCount} callers × 2 protocols × 2 kits at ${rate}/s; revoke at ${revokeAt}s, end at ${seconds}s`)
await new Promise((r) => setTimeout(r, revokeAt * 1000))
const active = JSON.parse(keysCli('list', '--json')).keys.find((k) => k.state === 'active')
keysCli('revoke', active.kid)
const revokedAt = now()
console.error(`revoked ${active.kid} at ${((revokedAt - started) / 1000).toFixed(1)}s`)
await new Promise((r) => setTimeout(r, (seconds - revokeAt) * 1000))

// --- Stop, collect, report ---------------------------------------------------------------------------------
for (const timer of timers) clearInterval(timer)
goProcess.stdin.end()
await goDone
await new Promise((r) => setTimeout(r, 1000)) // calls in flight settle (10 s deadline at most: none that slow here)
const go = JSON.parse(goOut)
ts.http.callee_refused = calleeCounters.http.snapshot().denied.ERR_TOKEN_UNKNOWN_KID
ts.grpc.callee_refused = calleeCounters.grpc.snapshot().denied.ERR_TOKEN_UNKNOWN_KID
for (const close of closers) close()
verifier.close()
await app.close()
grpcServer.forceShutdown()
await server.stop()

const span = (l) => (l.unauthenticated === 0 ? '—' : `${((l.first_401_ms - revokedAt) / 1000).toFixed(1)}–${((l.last_401_ms - revokedAt) / 1000).toFixed(1)} s`)
const rows = [
  ['TypeScript', 'HTTP', ts.http],
  ['TypeScript', 'gRPC', ts.grpc],
  ['Go', 'HTTP', go.http],
  ['Go', 'gRPC', go.grpc],
]
console.log(`\n${before ? 'before' : 'after'}: keys revoke under traffic, ${callerCount} callers per kit and protocol at ${rate}/s each, ${seconds} s (revoke at ${revokeAt} s), AUTHZ_TOKEN_TTL=300, AUTHZ_JWKS_MAX_AGE=30`)
console.log('| kit | protocol | requests | 401 / UNAUTHENTICATED seen by callers | when (after the revoke) | refused at the callee | other errors | token requests |')
console.log('|---|---|---:|---:|---|---:|---:|---:|')
for (const [kit, protocol, l] of rows) {
  const other = l.other_errors === 0 ? '0' : `${l.other_errors} ${JSON.stringify(l.errors)}`
  console.log(`| ${kit} | ${protocol} | ${l.requests} | ${l.unauthenticated} | ${span(l)} | ${l.callee_refused} | ${other} | ${l.token_requests} |`)
}
rmSync(gopath, { recursive: true, force: true })
rmSync(dir, { recursive: true, force: true })
