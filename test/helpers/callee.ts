/**
 * A receiving service for the calling-side tests, guarded by the SDK over real mTLS: inventory-service over
 * HTTPS (Fastify + serviceAuth) and gRPC (authorize* wrappers), verifying tokens against a harness's JWKS
 * on the harness's clock. It records, for every call it let through, the thumbprint of the certificate the
 * call came over — what a rotation test compares with the token's binding.
 */
import { decodeJwt } from 'jose'
import grpc from '@grpc/grpc-js'
import Fastify from 'fastify'
import type { TLSSocket } from 'node:tls'
import type { Test } from 'tap'
import { CalleeCounters } from '../../packages/sdk/src/callee-counters.js'
import { CalleePolicy, parseCalleePolicy } from '../../packages/sdk/src/callee-policy.js'
import { thumbprintOf } from '../../packages/sdk/src/certificate.js'
import { serviceAuth } from '../../packages/sdk/src/fastify.js'
import { authorizeClientStreaming, authorizeServerStreaming, authorizeUnary, type GrpcAuthOptions } from '../../packages/sdk/src/grpc.js'
import { createVerifier, type Verifier, type VerifiedCaller } from '../../packages/sdk/src/verifier.js'
import { createServerCert } from '../../src/pki/dev-pki.js'
import { createLogger } from '../../src/logger.js'
import { LogCapture, type Harness } from './harness.js'

const json = {
  serialize: (value: unknown) => Buffer.from(JSON.stringify(value)),
  deserialize: (bytes: Buffer) => JSON.parse(bytes.toString('utf8')) as never,
}
const method = (name: string, requestStream: boolean, responseStream: boolean): grpc.MethodDefinition<unknown, unknown> => ({
  path: `/demo.Inventory/${name}`,
  requestStream,
  responseStream,
  requestSerialize: json.serialize,
  requestDeserialize: json.deserialize,
  responseSerialize: json.serialize,
  responseDeserialize: json.deserialize,
})

/** The gRPC service: a unary read, a server-streaming watch, a client-streaming upload, and a method nobody may call. */
export const INVENTORY_GRPC: grpc.ServiceDefinition = {
  GetStock: method('GetStock', false, false),
  Watch: method('Watch', false, true),
  Upload: method('Upload', true, false),
  Admin: method('Admin', false, false),
}

/** A client of INVENTORY_GRPC with its methods callable by name. */
export type InventoryClient = grpc.Client & Record<string, (...args: unknown[]) => unknown>
export const InventoryClient = grpc.makeGenericClientConstructor(INVENTORY_GRPC, 'Inventory') as unknown as new (
  address: string,
  credentials: grpc.ChannelCredentials,
  options?: grpc.ClientOptions,
) => InventoryClient

export const CALLEE_POLICY = {
  service: 'inventory-service',
  routes: {
    'GET /stock/:sku': { scopes: ['stock:read'] },
    'POST /echo': { scopes: ['stock:read'] },
    'GET /admin': { scopes: ['admin'] },
    '/demo.Inventory/GetStock': { scopes: ['stock:read'] },
    '/demo.Inventory/Watch': { scopes: ['stock:read'] },
    '/demo.Inventory/Upload': { scopes: ['stock:read'] },
    '/demo.Inventory/Admin': { scopes: ['admin'] },
  },
}

/** What the callee let through: who, and over which certificate. */
export interface Seen {
  readonly caller: string
  /** Thumbprint of the client certificate of the connection. */
  readonly peer: string
  /** The token's `cnf.x5t#S256`: equal to `peer` for every call let through. */
  readonly boundTo: string
}

export interface Callee {
  readonly port: number
  readonly grpcPort: number
  readonly verifier: Verifier
  readonly counters: CalleeCounters
  readonly logs: LogCapture
  readonly seen: Seen[]
}

export interface CalleeOptions {
  /** The callee policy (default CALLEE_POLICY). */
  readonly policy?: unknown
  /** The bounded denial log's interval, ms. */
  readonly denialLogMs?: number
}

function seenOf(caller: VerifiedCaller, peer: string): Seen {
  const cnf = caller.claims.cnf as { 'x5t#S256'?: string } | undefined
  return { caller: caller.service, peer, boundTo: cnf?.['x5t#S256'] ?? '' }
}

/** Starts inventory-service (HTTPS and gRPC) for harness `h`'s tokens; stopped when the test ends. */
export async function startCallee(t: Test, h: Harness, options: CalleeOptions = {}): Promise<Callee> {
  const verifier = await createVerifier({
    issuer: 'https://authz.internal',
    audience: 'inventory-service',
    jwksUrl: `http://127.0.0.1:${h.opsPort}/.well-known/jwks.json`,
    clock: h.clock,
  })
  const policy = new CalleePolicy(parseCalleePolicy(JSON.stringify(options.policy ?? CALLEE_POLICY)))
  const counters = new CalleeCounters()
  const logs = new LogCapture()
  const seen: Seen[] = []
  const server = createServerCert(h.pki.ca)
  const app = Fastify({
    https: { ca: h.pki.ca.certPem, cert: server.certPem, key: server.keyPem, requestCert: true, rejectUnauthorized: true },
    loggerInstance: createLogger('info', logs),
  })
  await app.register(serviceAuth, { verifier, policy, onDecision: counters.observe, ...(options.denialLogMs === undefined ? {} : { denialLog: { intervalMs: options.denialLogMs } }) })
  const record = (request: { raw: { socket: unknown } }, caller: VerifiedCaller): void => {
    seen.push(seenOf(caller, thumbprintOf((request.raw.socket as TLSSocket).getPeerCertificate().raw)))
  }
  app.get('/stock/:sku', async (request) => {
    record(request, (await verifier.verify(request.headers['x-service-token'] as string, { peerCertificate: (request.raw.socket as TLSSocket).getPeerCertificate() })))
    return { sku: (request.params as { sku: string }).sku, caller: request.caller?.service }
  })
  app.post('/echo', async (request) => ({ body: request.body, caller: request.caller?.service }))
  app.get('/admin', async () => 'admin')
  await app.listen({ host: '127.0.0.1', port: 0 })

  const auth: GrpcAuthOptions = { verifier, policy, onDecision: counters.observe, logger: createLogger('info', logs) }
  const peerOf = (call: grpc.ServerUnaryCall<unknown, unknown> | grpc.ServerWritableStream<unknown, unknown>): string => {
    const cert = call.getAuthContext().sslPeerCertificate
    return cert === undefined ? '' : thumbprintOf(cert.raw)
  }
  const grpcServer = new grpc.Server()
  grpcServer.addService(INVENTORY_GRPC, {
    GetStock: authorizeUnary((call, callback, caller) => {
      seen.push(seenOf(caller, peerOf(call)))
      callback(null, { sku: (call.request as { sku?: string }).sku, caller: caller.service })
    }, auth),
    Watch: authorizeServerStreaming((call, caller) => {
      seen.push(seenOf(caller, peerOf(call)))
      call.write({ n: 1 })
      call.write({ n: 2 })
      call.end()
    }, auth),
    Upload: authorizeClientStreaming((call, callback, caller) => {
      let n = 0
      call.on('data', () => n++)
      call.on('end', () => callback(null, { received: n, caller: caller.service }))
    }, auth),
    Admin: authorizeUnary((_call, callback) => callback(null, {}), auth),
  })
  const grpcPort = await new Promise<number>((resolve, reject) =>
    grpcServer.bindAsync(
      '127.0.0.1:0',
      grpc.ServerCredentials.createSsl(Buffer.from(h.pki.ca.certPem), [{ private_key: Buffer.from(server.keyPem), cert_chain: Buffer.from(server.certPem) }], true),
      (err, bound) => (err === null ? resolve(bound) : reject(err)),
    ),
  )
  t.teardown(async () => {
    verifier.close()
    await app.close()
    await new Promise<void>((resolve) => grpcServer.tryShutdown(() => resolve()))
  })
  return { port: (app.server.address() as { port: number }).port, grpcPort, verifier, counters, logs, seen }
}

/** The `cnf.x5t#S256` of a token. */
export const boundTo = (token: string): string => (decodeJwt(token).cnf as { 'x5t#S256': string })['x5t#S256']

/** The status (and answer) of a call, as text. */
export const unary = (client: InventoryClient, name: string): Promise<string> =>
  new Promise((resolve) =>
    client[name]?.call(client, { sku: 'sku-1' }, (err: grpc.ServiceError | null, res: unknown) => resolve(err === null ? `OK ${JSON.stringify(res)}` : grpc.status[err.code] as string)),
  )

export const watch = (client: InventoryClient): Promise<string> =>
  new Promise((resolve) => {
    const messages: unknown[] = []
    const stream = client.Watch?.call(client, { sku: 'sku-1' }) as grpc.ClientReadableStream<unknown>
    stream.on('data', (m: unknown) => messages.push(m))
    stream.on('error', (err: grpc.ServiceError) => resolve(grpc.status[err.code] as string))
    stream.on('end', () => resolve(`OK ${JSON.stringify(messages)}`))
  })

export const upload = (client: InventoryClient): Promise<string> =>
  new Promise((resolve) => {
    const stream = client.Upload?.call(client, (err: grpc.ServiceError | null, res: unknown) =>
      resolve(err === null ? `OK ${JSON.stringify(res)}` : (grpc.status[err.code] as string)),
    ) as grpc.ClientWritableStream<unknown>
    stream.write({ n: 1 })
    stream.write({ n: 2 })
    stream.end()
  })
