/**
 * A real PKI made once per test run with node-forge: the CA authz trusts, a foreign CA, a server
 * certificate for localhost, and client certificates of every shape the tests need (X.509-SVIDs made on
 * demand).
 */
import { createClientCert, createSvid, type KeyPairPem } from '../../src/pki/dev-pki.js'
import { loadPki, VALID_FROM, type PkiMaterial } from './material.js'

/** The run's PKI, and a client certificate for any CN (the usual callers are made once per run). */
export type TestPki = Omit<PkiMaterial, 'clients'> & {
  client(name: string): KeyPairPem
  /** An X.509-SVID for `spiffeId` from the test CA (empty subject, URI SAN only), made once per process. */
  svid(spiffeId: string): KeyPairPem
}

let cached: TestPki | undefined

/** The run's test PKI (made once per run by tap's `before`, see material.ts). */
export function testPki(): TestPki {
  if (cached !== undefined) return cached
  const material = loadPki()
  const clients = new Map<string, KeyPairPem>(Object.entries(material.clients))
  const svids = new Map<string, KeyPairPem>()
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
    svid(spiffeId: string): KeyPairPem {
      let pair = svids.get(spiffeId)
      if (pair === undefined) {
        pair = createSvid(material.ca, spiffeId, VALID_FROM)
        svids.set(spiffeId, pair)
      }
      return pair
    },
  }
  return cached
}
