/**
 * A real PKI made once per test run with node-forge: the CA authz trusts, a foreign CA, a server
 * certificate for localhost, and client certificates of every shape the tests need.
 */
import { createClientCert, type KeyPairPem } from '../../src/pki/dev-pki.js'
import { loadPki, VALID_FROM } from './material.js'

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

/** The run's test PKI (made once per run by tap's `before`, see material.ts). */
export function testPki(): TestPki {
  if (cached !== undefined) return cached
  const material = loadPki()
  const clients = new Map<string, KeyPairPem>(Object.entries(material.clients))
  cached = {
    ...material,
    client(name: string): KeyPairPem {
      let pair = clients.get(name)
      if (pair === undefined) {
        pair = createClientCert(material.ca, name, VALID_FROM)
        clients.set(name, pair)
      }
      return pair
    },
  }
  return cached
}
