/**
 * A real PKI made once per test process with node-forge: the CA authz trusts, a foreign CA, a server
 * certificate for localhost, and client certificates of every shape the tests need.
 */
import { createCa, createCertificate, createClientCert, createServerCert, type KeyPairPem } from '../../src/pki/dev-pki.js'

export interface TestPki {
  readonly ca: KeyPairPem
  readonly otherCa: KeyPairPem
  readonly server: KeyPairPem
  client(name: string): KeyPairPem
  readonly expired: KeyPairPem
  readonly foreign: KeyPairPem
  readonly twoCns: KeyPairPem
  readonly emptyCn: KeyPairPem
  readonly noCn: KeyPairPem
  readonly serverAuthOnly: KeyPairPem
  readonly noEku: KeyPairPem
}

let cached: TestPki | undefined

export function testPki(): TestPki {
  if (cached !== undefined) return cached
  const ca = createCa('authz test CA')
  const otherCa = createCa('some other CA')
  const clients = new Map<string, KeyPairPem>()
  const day = 86_400_000
  cached = {
    ca,
    otherCa,
    server: createServerCert(ca),
    client(name: string): KeyPairPem {
      let pair = clients.get(name)
      if (pair === undefined) {
        pair = createClientCert(ca, name)
        clients.set(name, pair)
      }
      return pair
    },
    expired: createClientCert(ca, 'order-service', { notBefore: new Date(Date.now() - 10 * day), notAfter: new Date(Date.now() - day) }),
    foreign: createClientCert(otherCa, 'order-service'),
    twoCns: createCertificate(
      {
        subject: [
          { shortName: 'CN', value: 'order-service' },
          { shortName: 'CN', value: 'payment-service' },
        ],
        eku: 'clientAuth',
      },
      ca,
    ),
    emptyCn: createCertificate({ subject: [{ shortName: 'CN', value: '' }], eku: 'clientAuth' }, ca),
    noCn: createCertificate({ subject: [{ shortName: 'O', value: 'order-service' }], eku: 'clientAuth' }, ca),
    serverAuthOnly: createClientCert(ca, 'order-service', { eku: 'serverAuth' }),
    noEku: createClientCert(ca, 'order-service', { eku: 'none' }),
  }
  return cached
}
