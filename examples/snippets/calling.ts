// The README's TypeScript calling snippet (README.md, "Calling a service"), compiled by npm test; the
// README shows everything below the next line verbatim (test/readme.test.ts).
import { inventoryDefinition } from './inventory-definition.js'
import grpc from '@grpc/grpc-js'
import { serviceFetch, TlsFiles, TokenClient } from '@authz/sdk'
import { serviceClient } from '@authz/sdk/grpc'

// This service's certificate (its Subject CN, or its SPIFFE ID, is who it is), key and CA bundle, as
// files: followed when they are renewed on disk (cert-manager, spiffe-helper, a Secret volume).
const tls = new TlsFiles({ certFile: 'tls.crt', keyFile: 'tls.key', caFile: 'ca.crt' })
const tokens = new TokenClient({ tokenUrl: 'https://authz.internal:8443/token', tls })

// HTTP: a fetch for inventory-service. Its token in X-Service-Token, over mTLS with the certificate the token
// is bound to; a 401 (a revoked signing key) is retried once with a fresh token.
const inventory = serviceFetch(tokens, 'inventory-service', 'stock:deduct')
const res = await inventory('https://inventory.internal:8443/stock/sku-1/deduct', { method: 'POST', body: JSON.stringify({ n: 1 }) })
console.log(res.status) // 200, or a bare 401/403

// gRPC: a client whose calls carry the token; UNAUTHENTICATED is retried once with a fresh token.
const Inventory = grpc.makeGenericClientConstructor(inventoryDefinition, 'Inventory') // or your generated client
const stock = serviceClient(Inventory, 'inventory.internal:50051', tokens, 'inventory-service', 'stock:read')
stock.GetStock?.({ sku: 'sku-1' }, (err: grpc.ServiceError | null, reply: unknown) => console.log(err?.code ?? reply))
