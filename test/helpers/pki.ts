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

/**
 * Client certificates are judged against the test's ManualClock at every request, and harness clocks start
 * on 2026-01-01: certificates made for tests are valid from well before that (and, as always, until a year
 * from now for the handshake's real clock).
 */
const VALID_FROM = { notBefore: new Date(Math.min(Date.now(), Date.UTC(2025, 0, 1))) }

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
        pair = createClientCert(ca, name, VALID_FROM)
        clients.set(name, pair)
      }
      return pair
    },
    expired: createClientCert(ca, 'order-service', { notBefore: new Date(Date.now() - 10 * day), notAfter: new Date(Date.now() - day) }),
    foreign: createClientCert(otherCa, 'order-service', VALID_FROM),
    twoCns: createCertificate(
      {
        subject: [
          { shortName: 'CN', value: 'order-service' },
          { shortName: 'CN', value: 'payment-service' },
        ],
        eku: 'clientAuth',
        ...VALID_FROM,
      },
      ca,
    ),
    emptyCn: createCertificate({ subject: [{ shortName: 'CN', value: '' }], eku: 'clientAuth', ...VALID_FROM }, ca),
    noCn: createCertificate({ subject: [{ shortName: 'O', value: 'order-service' }], eku: 'clientAuth', ...VALID_FROM }, ca),
    serverAuthOnly: createClientCert(ca, 'order-service', { eku: 'serverAuth', ...VALID_FROM }),
    noEku: createClientCert(ca, 'order-service', { eku: 'none', ...VALID_FROM }),
  }
  return cached
}
