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

/** `make(key)` made once per key (per process), starting from `known`. */
function madeOnce(make: (key: string) => KeyPairPem, known: Record<string, KeyPairPem> = {}): (key: string) => KeyPairPem {
  const made = new Map(Object.entries(known))
  return (key) => {
    let pair = made.get(key)
    if (pair === undefined) {
      pair = make(key)
      made.set(key, pair)
    }
    return pair
  }
}

/** The run's test PKI (made once per run by tap's `before`, see material.ts). */
export function testPki(): TestPki {
  if (cached !== undefined) return cached
  const material = loadPki()
  cached = {
    ...material,
    client: madeOnce((name) => createClientCert(material.ca, name, VALID_FROM), material.clients),
    svid: madeOnce((spiffeId) => createSvid(material.ca, spiffeId, VALID_FROM)),
  }
  return cached
}
