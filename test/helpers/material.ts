/**
 * Test material made once per test run (tap's `before`: test/helpers/before.ts) and shared by every test
 * file: the test PKI and a pool of RSA signing keys. Generating them costs seconds (node-forge signs in
 * JavaScript, RSA key generation is slow); every test process reading them costs milliseconds. Nothing
 * here is committed: it lives under .tap/, made fresh each run. A test file run on its own (without tap's
 * `before`) makes what is missing.
 */
import { createPrivateKey, type KeyObject } from 'node:crypto'
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { generateKey, generateRsaKey, toPkcs8Pem, type Alg } from '../../src/keys/material.js'
import { createCa, createCertificate, createClientCert, createServerCert, useKeysForCertificates, type KeyPairPem } from '../../src/pki/dev-pki.js'

export const MATERIAL_DIR = resolve(dirname(fileURLToPath(import.meta.url)), '../../.tap/test-material')
const PKI_FILE = join(MATERIAL_DIR, 'pki.json')
const KEYS_FILE = join(MATERIAL_DIR, 'signing-keys.json')
const CERT_KEYS_FILE = join(MATERIAL_DIR, 'certificate-keys.json')

/** Callers every test file may ask for; others are made on demand. */
export const PRESET_CLIENTS = ['order-service', 'payment-service', 'inventory-service', 'billing-service'] as const
const KEY_POOL_SIZE = 24
/** RSA keys for the certificates test files make (dev-pki's useKeysForCertificates), each used once per process. */
const CERT_KEY_POOL_SIZE = 32

export interface PkiMaterial {
  readonly ca: KeyPairPem
  readonly otherCa: KeyPairPem
  readonly server: KeyPairPem
  readonly clients: Record<string, KeyPairPem>
  readonly expired: KeyPairPem
  readonly foreign: KeyPairPem
  readonly twoCns: KeyPairPem
  readonly emptyCn: KeyPairPem
  readonly noCn: KeyPairPem
  readonly serverAuthOnly: KeyPairPem
  readonly noEku: KeyPairPem
}

/**
 * Client certificates are judged against the test's ManualClock at every request, and harness clocks start
 * on 2026-01-01: certificates made for tests are valid from well before that (and, as always, until a year
 * from now for the handshake's real clock).
 */
export const VALID_FROM = { notBefore: new Date(Math.min(Date.now(), Date.UTC(2025, 0, 1))) }

export function makePki(): PkiMaterial {
  const ca = createCa('authz test CA')
  const otherCa = createCa('some other CA')
  const day = 86_400_000
  return {
    ca,
    otherCa,
    server: createServerCert(ca),
    clients: Object.fromEntries(PRESET_CLIENTS.map((name) => [name, createClientCert(ca, name, VALID_FROM)])),
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
}

/** Writes atomically, so a reader never sees half a file (test files may start while it is written). */
function writeJson(path: string, value: unknown): void {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 })
  const tmp = `${path}.${process.pid}.tmp`
  writeFileSync(tmp, JSON.stringify(value), { mode: 0o600 })
  renameSync(tmp, path)
}

/** Makes the run's material (tap's `before`). */
export async function generateMaterial(): Promise<void> {
  rmSync(MATERIAL_DIR, { recursive: true, force: true })
  // The pool's keys are made on libuv's thread pool while the PKI is made and signed on this thread: on
  // two cores, at once.
  const rsa = (n: number) => Promise.all(Array.from({ length: n }, async () => toPkcs8Pem(await generateRsaKey())))
  const [keys, certKeys] = [rsa(KEY_POOL_SIZE), rsa(CERT_KEY_POOL_SIZE)]
  writeJson(PKI_FILE, makePki())
  writeJson(KEYS_FILE, await keys)
  writeJson(CERT_KEYS_FILE, await certKeys)
}

// Every test process that loads this module certifies the run's pre-made keys first (a test file run on
// its own, without the run's material, generates them as before).
if (existsSync(CERT_KEYS_FILE)) useKeysForCertificates(JSON.parse(readFileSync(CERT_KEYS_FILE, 'utf8')) as string[])

/** The run's test PKI (made here if the run has none). */
export function loadPki(): PkiMaterial {
  if (!existsSync(PKI_FILE)) writeJson(PKI_FILE, makePki())
  return JSON.parse(readFileSync(PKI_FILE, 'utf8')) as PkiMaterial
}

let pool: string[] | undefined
let next = 0

/**
 * A signing key from the run's pool, a different one per call within a test process (the pool is shared
 * by all test files; when it runs out, fresh keys are made).
 */
export async function pooledKey(alg: Alg = 'RS256'): Promise<KeyObject> {
  if (alg !== 'RS256') return generateKey(alg) // P-256 keys are made in a millisecond
  pool ??= existsSync(KEYS_FILE) ? (JSON.parse(readFileSync(KEYS_FILE, 'utf8')) as string[]) : []
  const pem = pool[next++]
  return pem === undefined ? generateRsaKey() : createPrivateKey(pem)
}
