/**
 * inventory-service: a receiving service. HTTP (Fastify over mTLS) and gRPC, both guarded by authz
 * tokens: the Fastify `serviceAuth` plugin and the gRPC `authorizeUnary` wrapper, with the service's own
 * route policy (inventory-policy.json) plus a route-level scope.
 */
import grpc from '@grpc/grpc-js'
import Fastify, { type FastifyInstance } from 'fastify'
import type { CalleePolicy, Verifier } from '@authz/sdk'
import { serviceAuth } from '@authz/sdk/fastify'
import { authorizeUnary } from '@authz/sdk/grpc'

export interface Tls {
  readonly ca: Buffer
  readonly cert: Buffer
  readonly key: Buffer
}

interface StockRequest {
  sku: string
  quantity?: number
}
interface StockReply {
  sku: string
  available: number
  caller: string
}

const json = {
  serialize: (value: unknown) => Buffer.from(JSON.stringify(value)),
  deserialize: (bytes: Buffer) => JSON.parse(bytes.toString('utf8')) as never,
}

/** A unary method with JSON on the wire (keeps the demo free of a protobuf toolchain). */
const unary = (path: string): grpc.MethodDefinition<unknown, unknown> => ({
  path,
  requestStream: false,
  responseStream: false,
  requestSerialize: json.serialize,
  requestDeserialize: json.deserialize,
  responseSerialize: json.serialize,
  responseDeserialize: json.deserialize,
})

/** The gRPC service definition. */
export const inventoryDefinition: grpc.ServiceDefinition = {
  GetStock: unary('/demo.Inventory/GetStock'),
  Deduct: unary('/demo.Inventory/Deduct'),
}

export interface InventoryService {
  readonly httpUrl: string
  readonly grpcAddress: string
  readonly http: FastifyInstance
  close(): Promise<void>
}

export async function startInventoryService(options: { tls: Tls; verifier: Verifier; policy: CalleePolicy }): Promise<InventoryService> {
  const stock = new Map<string, number>([['sku-1', 10]])

  // HTTP: mTLS required at the handshake, then a token bound to that certificate on every route.
  const http = Fastify({
    https: { ca: options.tls.ca, cert: options.tls.cert, key: options.tls.key, requestCert: true, rejectUnauthorized: true, minVersion: 'TLSv1.2' },
    logger: false,
  })
  await http.register(serviceAuth, { verifier: options.verifier, policy: options.policy })
  http.get('/healthz', { config: { serviceAuth: false } }, async () => ({ status: 'ok' }))
  http.get<{ Params: { sku: string } }>('/stock/:sku', async (request) => ({
    sku: request.params.sku,
    available: stock.get(request.params.sku) ?? 0,
    caller: request.caller?.service,
  }))
  http.post<{ Params: { sku: string } }>(
    '/stock/:sku/deduct',
    { config: { scope: 'stock:deduct', callers: ['order-service'] } },
    async (request) => {
      const left = (stock.get(request.params.sku) ?? 0) - 1
      stock.set(request.params.sku, left)
      return { sku: request.params.sku, available: left, caller: request.caller?.service }
    },
  )
  await http.listen({ host: '127.0.0.1', port: 0 })

  // gRPC: the same checks, from metadata `x-service-token` and the TLS peer certificate.
  const grpcServer = new grpc.Server()
  const auth = { verifier: options.verifier, policy: options.policy }
  grpcServer.addService(inventoryDefinition, {
    GetStock: authorizeUnary<StockRequest, StockReply>((call, callback, caller) => {
      callback(null, { sku: call.request.sku, available: stock.get(call.request.sku) ?? 0, caller: caller.service })
    }, auth),
    Deduct: authorizeUnary<StockRequest, StockReply>((call, callback, caller) => {
      const left = (stock.get(call.request.sku) ?? 0) - (call.request.quantity ?? 1)
      stock.set(call.request.sku, left)
      callback(null, { sku: call.request.sku, available: left, caller: caller.service })
    }, auth),
  })
  const port = await new Promise<number>((resolve, reject) =>
    grpcServer.bindAsync(
      '127.0.0.1:0',
      grpc.ServerCredentials.createSsl(options.tls.ca, [{ private_key: options.tls.key, cert_chain: options.tls.cert }], true),
      (err, bound) => (err === null ? resolve(bound) : reject(err)),
    ),
  )
  const address = http.server.address() as { port: number }
  return {
    httpUrl: `https://localhost:${address.port}`,
    grpcAddress: `localhost:${port}`,
    http,
    async close() {
      await http.close()
      await new Promise<void>((resolve) => grpcServer.tryShutdown(() => resolve()))
    },
  }
}
