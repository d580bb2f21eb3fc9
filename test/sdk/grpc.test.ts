/**
 * The gRPC receiving edge over real mTLS: every kind of handler runs only for an allowed caller, and a
 * handler that throws (synchronously or by rejecting) answers UNKNOWN and never reaches the process as an
 * unhandled rejection.
 */
import { createServer } from 'node:net'
import grpc from '@grpc/grpc-js'
import t, { type Test } from 'tap'
import { CalleePolicy, parseCalleePolicy } from '../../packages/sdk/src/callee-policy.js'
import {
  authorizeBidiStreaming,
  authorizeClientStreaming,
  authorizeServerStreaming,
  authorizeUnary,
  serviceCallCredentials,
  serviceChannelCredentials,
  type GrpcAuthOptions,
} from '../../packages/sdk/src/grpc.js'
import { CalleeCounters } from '../../packages/sdk/src/callee-counters.js'
import { TokenClient } from '../../packages/sdk/src/token-client.js'
import { createVerifier } from '../../packages/sdk/src/verifier.js'
import { startHarness, type Harness } from '../helpers/harness.js'

const json = {
  serialize: (value: unknown) => Buffer.from(JSON.stringify(value)),
  deserialize: (bytes: Buffer) => JSON.parse(bytes.toString('utf8')) as never,
}
const method = (name: string, requestStream: boolean, responseStream: boolean): grpc.MethodDefinition<unknown, unknown> => ({
  path: `/test.Svc/${name}`,
  requestStream,
  responseStream,
  requestSerialize: json.serialize,
  requestDeserialize: json.deserialize,
  responseSerialize: json.serialize,
  responseDeserialize: json.deserialize,
})
const definition: grpc.ServiceDefinition = {
  Echo: method('Echo', false, false),
  Throws: method('Throws', false, false),
  Rejects: method('Rejects', false, false),
  AnswersThenThrows: method('AnswersThenThrows', false, false),
  List: method('List', false, true),
  ListThrows: method('ListThrows', false, true),
  Upload: method('Upload', true, false),
  UploadThrows: method('UploadThrows', true, false),
  Chat: method('Chat', true, true),
  ChatThrows: method('ChatThrows', true, true),
}
const policyText = JSON.stringify({
  routes: Object.fromEntries(Object.keys(definition).map((name) => [`/test.Svc/${name}`, { scopes: ['stock:read'] }])),
})

/** The test service, its clients, and what its options saw. `verifyClients: false` makes a server that does not check client certificates. */
async function start(t: Test, h: Harness, extra: Partial<GrpcAuthOptions> = {}, verifyClients = true) {
  const verifier = await createVerifier({
    issuer: 'https://authz.internal',
    audience: 'inventory-service',
    jwksUrl: `http://127.0.0.1:${h.opsPort}/.well-known/jwks.json`,
    clock: h.clock,
  })
  const handlerErrors: string[] = []
  const denied: Parameters<NonNullable<GrpcAuthOptions['onDenied']>>[0][] = []
  const counters = new CalleeCounters()
  const auth: GrpcAuthOptions = {
    verifier,
    policy: new CalleePolicy(parseCalleePolicy(policyText)),
    onHandlerError: (err, info) => handlerErrors.push(`${info.path} ${(err as Error).message}`),
    onDenied: (info) => denied.push(info),
    onDecision: counters.observe,
    ...extra,
  }
  const boom = (): never => {
    throw new Error('a call missing a field')
  }
  const server = new grpc.Server()
  server.addService(definition, {
    Echo: authorizeUnary((call, callback, caller) => callback(null, { echo: call.request, caller: caller.service }), auth),
    Throws: authorizeUnary(() => boom(), auth),
    Rejects: authorizeUnary(async () => boom(), auth),
    AnswersThenThrows: authorizeUnary((_call, callback) => {
      callback(null, { ok: true })
      boom()
    }, auth),
    List: authorizeServerStreaming((call, caller) => {
      call.write({ n: 1, caller: caller.service })
      call.write({ n: 2 })
      call.end()
    }, auth),
    ListThrows: authorizeServerStreaming(() => boom(), auth),
    Upload: authorizeClientStreaming((call, callback) => {
      let n = 0
      call.on('data', () => n++)
      call.on('end', () => callback(null, { received: n }))
    }, auth),
    UploadThrows: authorizeClientStreaming(async () => boom(), auth),
    Chat: authorizeBidiStreaming((call) => {
      call.on('data', (m: unknown) => call.write({ echo: m }))
      call.on('end', () => call.end())
    }, auth),
    ChatThrows: authorizeBidiStreaming(() => boom(), auth),
  })
  const tls = h.pki.server
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(
      '127.0.0.1:0',
      grpc.ServerCredentials.createSsl(Buffer.from(h.pki.ca.certPem), [{ private_key: Buffer.from(tls.keyPem), cert_chain: Buffer.from(tls.certPem) }], verifyClients),
      (err, bound) => (err === null ? resolve(bound) : reject(err)),
    ),
  )
  const order = h.pki.client('order-service')
  const identity = { ca: Buffer.from(h.pki.ca.certPem), cert: Buffer.from(order.certPem), key: Buffer.from(order.keyPem) }
  const tokens = new TokenClient({ tokenUrl: `https://localhost:${h.port}/token`, ...identity, clock: h.clock, backgroundRefresh: false })
  const Client = grpc.makeGenericClientConstructor(definition, 'Svc')
  const clientWith = (creds: grpc.ChannelCredentials) => new Client(`localhost:${port}`, creds) as unknown as Record<string, (...args: unknown[]) => unknown> & grpc.Client
  const allowed = clientWith(serviceChannelCredentials(identity, tokens, 'inventory-service', 'stock:read'))
  const noScope = clientWith(serviceChannelCredentials(identity, tokens, 'inventory-service', 'stock:deduct'))
  const noToken = clientWith(grpc.credentials.createSsl(identity.ca, identity.key, identity.cert))
  // order-service's token, sent over payment-service's certificate: a replay.
  const payment = h.pki.client('payment-service')
  const replayed = clientWith(
    grpc.credentials.combineChannelCredentials(
      grpc.credentials.createSsl(identity.ca, Buffer.from(payment.keyPem), Buffer.from(payment.certPem)),
      serviceCallCredentials(tokens, 'inventory-service', 'stock:read'),
    ),
  )
  t.teardown(async () => {
    for (const c of [allowed, noScope, noToken, replayed]) c.close()
    tokens.close()
    verifier.close()
    await new Promise<void>((resolve) => server.tryShutdown(() => resolve()))
  })
  return { allowed, noScope, noToken, replayed, handlerErrors, denied, counters, identity, clientWith, tokens }
}

type Client = Awaited<ReturnType<typeof start>>['allowed']

const unary = (client: Client, name: string): Promise<string> =>
  new Promise((resolve) =>
    client[name]?.call(client, { sku: 'sku-1' }, (err: grpc.ServiceError | null, res: unknown) =>
      resolve(err === null ? `OK ${JSON.stringify(res)}` : `${grpc.status[err.code]} ${err.details}`),
    ),
  )

/** Runs a streaming call to its end: the messages received, then the status. */
function stream(client: Client, name: string, send: unknown[] = []): Promise<string> {
  return new Promise((resolve) => {
    const out: string[] = []
    const done = (err: grpc.ServiceError | null, res?: unknown) =>
      resolve([...out, err === null ? `OK${res === undefined ? '' : ` ${JSON.stringify(res)}`}` : `${grpc.status[err.code]} ${err.details}`].join(' | '))
    const fn = client[name] as (...args: unknown[]) => grpc.ClientWritableStream<unknown> & grpc.ClientReadableStream<unknown>
    const kind = definition[name] as grpc.MethodDefinition<unknown, unknown>
    const call = kind.requestStream ? (kind.responseStream ? fn.call(client) : fn.call(client, done)) : fn.call(client, { sku: 'sku-1' })
    if (kind.responseStream) {
      call.on('data', (m: unknown) => out.push(JSON.stringify(m)))
      call.on('error', (err: grpc.ServiceError) => done(err))
      call.on('status', (s: grpc.StatusObject) => s.code === grpc.status.OK && done(null))
    }
    if (kind.requestStream) {
      for (const m of send) call.write(m)
      call.end()
    }
  })
}

t.test('gRPC handlers that throw answer UNKNOWN; the process lives on', async (t) => {
  const rejections: unknown[] = []
  const onRejection = (reason: unknown) => rejections.push(reason)
  process.on('unhandledRejection', onRejection)
  t.teardown(() => process.off('unhandledRejection', onRejection))
  const h = await startHarness(t)
  const { allowed, handlerErrors } = await start(t, h)

  t.match(await unary(allowed, 'Echo'), /^OK .*"caller":"order-service"/, 'a unary call')
  t.equal(await unary(allowed, 'Throws'), 'UNKNOWN Unknown error', 'a handler that throws synchronously (a call missing a field)')
  t.equal(await unary(allowed, 'Rejects'), 'UNKNOWN Unknown error', 'an async handler that rejects')
  t.match(await unary(allowed, 'AnswersThenThrows'), /^OK/, 'answered, then threw: the answer stands, one answer only')
  t.equal(await stream(allowed, 'ListThrows'), 'UNKNOWN Unknown error', 'a server-streaming handler that throws')
  t.equal(await stream(allowed, 'UploadThrows', [{ a: 1 }]), 'UNKNOWN Unknown error', 'a client-streaming handler that rejects')
  t.equal(await stream(allowed, 'ChatThrows', [{ a: 1 }]), 'UNKNOWN Unknown error', 'a bidi handler that throws')
  t.match(await unary(allowed, 'Echo'), /^OK/, 'and the server still answers')
  await new Promise((r) => setImmediate(r))
  t.same(rejections, [], 'no unhandled rejection')
  t.equal(handlerErrors.length, 6, 'each reported to onHandlerError')
  t.notMatch(await unary(allowed, 'Throws'), /missing a field/, 'the error message never reaches the caller')
})

t.test('gRPC streaming handlers are guarded like unary ones', async (t) => {
  const h = await startHarness(t)
  const { allowed, noScope, noToken } = await start(t, h)
  t.equal(await stream(allowed, 'List'), '{"n":1,"caller":"order-service"} | {"n":2} | OK', 'server streaming')
  t.equal(await stream(allowed, 'Upload', [{ a: 1 }, { a: 2 }, { a: 3 }]), 'OK {"received":3}', 'client streaming')
  t.equal(await stream(allowed, 'Chat', [{ a: 1 }, { a: 2 }]), '{"echo":{"a":1}} | {"echo":{"a":2}} | OK', 'bidi streaming')
  for (const name of ['Echo', 'List', 'Upload', 'Chat']) {
    const run = (c: Client) => (name === 'Echo' ? unary(c, name) : stream(c, name, [{ a: 1 }]))
    t.equal(await run(noToken), 'UNAUTHENTICATED unauthenticated', `${name} without a token`)
    t.equal(await run(noScope), 'PERMISSION_DENIED permission denied', `${name} without the scope`)
  }
})

t.test('gRPC denials carry the shared reason codes; a replayed token says whose it was; counters count', async (t) => {
  const h = await startHarness(t)
  const { allowed, noScope, noToken, replayed, denied, counters } = await start(t, h)
  t.match(await unary(allowed, 'Echo'), /^OK/)
  t.equal(await unary(noToken, 'Echo'), 'UNAUTHENTICATED unauthenticated')
  t.equal(await unary(noScope, 'Echo'), 'PERMISSION_DENIED permission denied')
  t.equal(await unary(replayed, 'Echo'), 'UNAUTHENTICATED unauthenticated', 'a token replayed over another certificate')
  t.same(
    denied.map(({ code, reason, sub, aud }) => ({ code: grpc.status[code], reason, sub, aud })),
    [
      { code: 'UNAUTHENTICATED', reason: 'ERR_TOKEN_MISSING', sub: undefined, aud: undefined },
      { code: 'PERMISSION_DENIED', reason: 'ERR_ROUTE_FORBIDDEN', sub: 'order-service', aud: 'inventory-service' },
      // before: reason "ERR_BINDING_MISMATCH" without sub or aud
      { code: 'UNAUTHENTICATED', reason: 'ERR_BINDING_MISMATCH', sub: 'order-service', aud: 'inventory-service' },
    ],
  )
  const { verified, denied: byReason } = counters.snapshot()
  t.equal(verified, 1)
  t.match(byReason, { ERR_TOKEN_MISSING: 1, ERR_ROUTE_FORBIDDEN: 1, ERR_BINDING_MISMATCH: 1, ERR_TOKEN_EXPIRED: 0 })
})

t.test('call credentials: authz refusing is UNAUTHENTICATED, authz unreachable or overloaded is UNAVAILABLE (as grpc-go; before: UNKNOWN)', async (t) => {
  const h = await startHarness(t)
  const { identity, clientWith } = await start(t, h)
  const toAuthz = new TokenClient({ tokenUrl: `https://localhost:${h.port}/token`, ...identity, clock: h.clock })
  const refused = clientWith(serviceChannelCredentials(identity, toAuthz, 'no-such-service'))
  const closedPort = await new Promise<number>((resolve) => {
    const probe = createServer().listen(0, '127.0.0.1', () => {
      const { port } = probe.address() as { port: number }
      probe.close(() => resolve(port))
    })
  })
  const toNowhere = new TokenClient({ tokenUrl: `https://127.0.0.1:${closedPort}/token`, ...identity, clock: h.clock })
  const unreachable = clientWith(serviceChannelCredentials(identity, toNowhere, 'inventory-service'))
  t.teardown(() => {
    for (const c of [refused, unreachable]) c.close()
    for (const c of [toAuthz, toNowhere]) c.close()
  })
  t.match(await unary(refused, 'Echo'), /^UNAUTHENTICATED .*invalid_target/, 'a refusal names the OAuth error')
  t.match(await unary(unreachable, 'Echo'), /^UNAVAILABLE /, 'authz unreachable: try again later')
})

t.test('callbacks that throw (onDenied, onDecision, onHandlerError) change no answer and end no process (regression)', async (t) => {
  const rejections: unknown[] = []
  const onRejection = (reason: unknown) => rejections.push(reason)
  process.on('unhandledRejection', onRejection)
  t.teardown(() => process.off('unhandledRejection', onRejection))
  const h = await startHarness(t)
  const throwing = (): never => {
    throw new Error('a logging bug')
  }
  const { allowed, noToken, noScope } = await start(t, h, { onDenied: throwing, onDecision: throwing, onHandlerError: throwing })
  t.equal(await unary(noToken, 'Echo'), 'UNAUTHENTICATED unauthenticated')
  t.equal(await unary(noScope, 'Echo'), 'PERMISSION_DENIED permission denied')
  t.match(await unary(allowed, 'Echo'), /^OK/)
  t.equal(await unary(allowed, 'Throws'), 'UNKNOWN Unknown error')
  await new Promise((r) => setImmediate(r))
  t.same(rejections, [], 'no unhandled rejection (before: a throwing onDenied rejected a promise nobody caught)')
})

t.test('a server that does not verify client certificates: a call without one is refused ERR_PEER_UNVERIFIED', async (t) => {
  const h = await startHarness(t)
  // checkClientCertificate false: grpc-js reports the missing peer certificate as {}
  const { denied, identity, clientWith, tokens } = await start(t, h, {}, false)
  const anonymous = clientWith(grpc.credentials.combineChannelCredentials(grpc.credentials.createSsl(identity.ca), serviceCallCredentials(tokens, 'inventory-service', 'stock:read')))
  t.teardown(() => anonymous.close())
  t.equal(await unary(anonymous, 'Echo'), 'UNAUTHENTICATED unauthenticated', 'a token without the certificate it is bound to')
  t.same(
    denied.map((d) => d.reason),
    ['ERR_PEER_UNVERIFIED'],
  )
})
