/**
 * The demo: authz (dev mode) + inventory-service (receiving) + order-service and payment-service
 * (calling), over mTLS, over HTTP and gRPC. It makes allowed and denied calls and reports each one.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { request } from 'node:https'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import grpc from '@grpc/grpc-js'
import { Writable } from 'node:stream'
import { CalleePolicy, createVerifier, TokenClient, TokenClientError } from '@authz/sdk'
import { serviceChannelCredentials } from '@authz/sdk/grpc'
import { createServerCert, startServer, type KeyPairPem } from '../src/index.js'
import { inventoryDefinition, startInventoryService } from './inventory-service.js'

/** A file of the repository, whether this runs from examples/ (ts) or dist-examples/examples/ (js). */
function repoFile(path: string): string {
  for (const up of ['../', '../../']) {
    const candidate = new URL(up + path, import.meta.url)
    if (existsSync(candidate)) return candidate.pathname
  }
  throw new Error(`cannot find ${path}`)
}

export interface DemoResult {
  readonly name: string
  readonly expected: string
  readonly actual: string
  readonly ok: boolean
}

interface Identity {
  readonly ca: Buffer
  readonly cert: Buffer
  readonly key: Buffer
}

function httpsCall(url: string, who: Identity, method: string, token?: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(
      url,
      { method, ca: who.ca, cert: who.cert, key: who.key, agent: false, headers: token === undefined ? {} : { 'x-service-token': token } },
      (res) => {
        let body = ''
        res.on('data', (c: Buffer) => (body += c.toString()))
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }))
      },
    )
    req.on('error', reject)
    req.end()
  })
}

function grpcCall(address: string, credentials: grpc.ChannelCredentials, method: 'GetStock' | 'Deduct'): Promise<string> {
  const Client = grpc.makeGenericClientConstructor(inventoryDefinition, 'Inventory')
  const client = new Client(address, credentials)
  return new Promise((resolve) => {
    const fn = (client as unknown as Record<string, (req: unknown, cb: (err: grpc.ServiceError | null, res?: unknown) => void) => void>)[method]
    fn?.call(client, { sku: 'sku-1' }, (err, res) => {
      client.close()
      resolve(err === null ? `OK ${JSON.stringify(res)}` : grpc.status[err.code])
    })
  })
}

/** Runs the whole demo; `print` receives one line per step. Everything it starts is stopped before it returns. */
export async function runDemo(print: (line: string) => void = () => undefined): Promise<DemoResult[]> {
  const dir = mkdtempSync(join(tmpdir(), 'authz-demo-'))
  const results: DemoResult[] = []
  const check = (name: string, expected: string, actual: string): void => {
    const ok = actual.startsWith(expected)
    results.push({ name, expected, actual, ok })
    print(`${ok ? '✔' : '✘'} ${name}\n    expected ${expected}, got ${actual}`)
  }
  writeFileSync(join(dir, 'service-policy.json'), readFileSync(repoFile('config/service-policy.json')))
  const authz = await startServer(
    { AUTHZ_HOST: '127.0.0.1', AUTHZ_PORT: '0', AUTHZ_OPS_PORT: '0', AUTHZ_KEYS_DIR: join(dir, 'keys'), AUTHZ_POLICY: join(dir, 'service-policy.json') },
    { cwd: dir, logDestination: new Writable({ write: (_c, _e, cb) => cb() }), bannerOut: { write: () => true } },
  )
  const pki = join(dir, 'keys', 'dev-pki')
  const ca = readFileSync(join(pki, 'ca.pem'))
  const identity = (name: string): Identity => ({
    ca,
    cert: readFileSync(join(pki, 'clients', `${name}.pem`)),
    key: readFileSync(join(pki, 'clients', `${name}-key.pem`)),
  })
  const order = identity('order-service')
  const payment = identity('payment-service')
  const caPair: KeyPairPem = { certPem: ca.toString(), keyPem: readFileSync(join(pki, 'ca-key.pem'), 'utf8') }
  const inventoryServer = createServerCert(caPair, ['localhost', '127.0.0.1'])
  print(`authz: ${authz.mainUrl} (token endpoint), ${authz.opsUrl} (JWKS)`)

  const verifier = await createVerifier({
    issuer: authz.config.issuer,
    audience: 'inventory-service',
    jwksUrl: `${authz.opsUrl}/.well-known/jwks.json`,
  })
  const policy = await CalleePolicy.load(repoFile('examples/inventory-policy.json'))
  const inventory = await startInventoryService({
    tls: { ca, cert: Buffer.from(inventoryServer.certPem), key: Buffer.from(inventoryServer.keyPem) },
    verifier,
    policy,
  })
  print(`inventory-service: ${inventory.httpUrl} (HTTP), ${inventory.grpcAddress} (gRPC)\n`)

  const tokenUrl = `https://localhost:${new URL(authz.mainUrl).port}/token`
  const orderTokens = new TokenClient({ tokenUrl, ...order })
  const paymentTokens = new TokenClient({ tokenUrl, ...payment })
  try {
    const read = await orderTokens.getToken('inventory-service', 'stock:read')
    const deduct = await orderTokens.getToken('inventory-service', 'stock:deduct')
    const stock = `${inventory.httpUrl}/stock/sku-1`

    let res = await httpsCall(stock, order, 'GET', read)
    check('HTTP  order-service GET /stock/sku-1 with a stock:read token', '200', `${res.status} ${res.body}`)
    res = await httpsCall(`${stock}/deduct`, order, 'POST', deduct)
    check('HTTP  order-service POST /stock/sku-1/deduct with a stock:deduct token', '200', `${res.status} ${res.body}`)
    res = await httpsCall(`${stock}/deduct`, order, 'POST', read)
    check('HTTP  order-service POST /stock/sku-1/deduct with only stock:read', '403', `${res.status} ${JSON.stringify(res.body)}`)
    res = await httpsCall(stock, order, 'GET')
    check('HTTP  order-service GET /stock/sku-1 without a token', '401', `${res.status} ${JSON.stringify(res.body)}`)
    res = await httpsCall(stock, payment, 'GET', read)
    check("HTTP  payment-service replays order-service's token (bound to another certificate)", '401', `${res.status} ${JSON.stringify(res.body)}`)
    const denied = await paymentTokens.getToken('inventory-service').then(
      () => 'issued',
      (err: unknown) => (err instanceof TokenClientError ? `${err.code} ${err.oauthError ?? ''}`.trim() : String(err)),
    )
    check('authz payment-service asks for an inventory-service token (no grant)', 'ERR_TOKEN_DENIED invalid_target', denied)

    const readCreds = serviceChannelCredentials(order, orderTokens, 'inventory-service', 'stock:read')
    const deductCreds = serviceChannelCredentials(order, orderTokens, 'inventory-service', 'stock:deduct')
    check('gRPC  order-service GetStock with a stock:read token', 'OK', await grpcCall(inventory.grpcAddress, readCreds, 'GetStock'))
    check('gRPC  order-service Deduct with a stock:deduct token', 'OK', await grpcCall(inventory.grpcAddress, deductCreds, 'Deduct'))
    check('gRPC  order-service Deduct with only stock:read', 'PERMISSION_DENIED', await grpcCall(inventory.grpcAddress, readCreds, 'Deduct'))
    const bare = grpc.credentials.createSsl(order.ca, order.key, order.cert)
    check('gRPC  order-service GetStock without a token', 'UNAUTHENTICATED', await grpcCall(inventory.grpcAddress, bare, 'GetStock'))
  } finally {
    orderTokens.close()
    paymentTokens.close()
    verifier.close()
    policy.close()
    await inventory.close()
    await authz.close()
    rmSync(dir, { recursive: true, force: true })
  }
  const failed = results.filter((r) => !r.ok).length
  print(`\n${results.length - failed} of ${results.length} calls went as expected`)
  return results
}
