/**
 * The dev PKI on disk (`<keys dir>/dev-pki/`): made once, reused on later starts so the printed curl
 * command keeps working. Private keys are written 0600. Client certificates named by a CN live in
 * `clients/`, X.509-SVIDs in `svids/<trust domain>+<path segments joined by +>/` (`+` is in neither
 * grammar, so two SPIFFE IDs never share a directory).
 */
import { mkdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { parseWorkloadId, SPIFFE_ID_FAULTS, SPIFFE_SCHEME } from '../identity/spiffe-id.js'
import { writeFileAtomic } from '../util/atomic-write.js'
import { createCa, createClientCert, createServerCert, createSvid, type KeyPairPem } from './dev-pki.js'

export interface DevPkiPaths {
  readonly dir: string
  readonly caCert: string
  readonly caKey: string
  readonly serverCert: string
  readonly serverKey: string
  clientCert(name: string): string
  clientKey(name: string): string
  /** Extra server certificates (`pki server <name>`), e.g. for container host names. */
  namedServerCert(name: string): string
  namedServerKey(name: string): string
  /** The X.509-SVID of a SPIFFE ID (`pki client --spiffe <id>`) and its key. */
  svidCert(spiffeId: string): string
  svidKey(spiffeId: string): string
}

export function devPkiPaths(dir: string): DevPkiPaths {
  return {
    dir,
    caCert: join(dir, 'ca.pem'),
    caKey: join(dir, 'ca-key.pem'),
    serverCert: join(dir, 'server.pem'),
    serverKey: join(dir, 'server-key.pem'),
    clientCert: (name) => join(dir, 'clients', `${name}.pem`),
    clientKey: (name) => join(dir, 'clients', `${name}-key.pem`),
    namedServerCert: (name) => join(dir, 'servers', `${name}.pem`),
    namedServerKey: (name) => join(dir, 'servers', `${name}-key.pem`),
    svidCert: (id) => join(dir, 'svids', svidDirName(id), 'svid.pem'),
    svidKey: (id) => join(dir, 'svids', svidDirName(id), 'svid-key.pem'),
  }
}

/** The directory name of a SPIFFE ID's SVID: `example.org+ns+default+sa+order`. TypeError when it is not a workload's SPIFFE ID. */
export function svidDirName(spiffeId: string): string {
  const parsed = parseWorkloadId(spiffeId)
  if (!parsed.ok) throw new TypeError(`${JSON.stringify(spiffeId)} is not a SPIFFE ID: ${SPIFFE_ID_FAULTS[parsed.fault]}`)
  const name = `${parsed.value.trustDomain}${parsed.value.path.replaceAll('/', '+')}`
  if (name.length > 255) throw new TypeError(`${JSON.stringify(spiffeId)} is too long for a dev PKI file name (255 characters)`)
  return name
}

/**
 * Where the dev PKI keeps a caller's certificate and key: its SVID for a SPIFFE ID, else its CN certificate.
 * TypeError when the name cannot become a file name.
 */
export function callerFiles(paths: DevPkiPaths, caller: string): { readonly cert: string; readonly key: string } {
  if (caller.startsWith(SPIFFE_SCHEME)) return { cert: paths.svidCert(caller), key: paths.svidKey(caller) }
  assertSafeName(caller)
  return { cert: paths.clientCert(caller), key: paths.clientKey(caller) }
}

async function readPair(cert: string, key: string): Promise<KeyPairPem | undefined> {
  try {
    return { certPem: await readFile(cert, 'utf8'), keyPem: await readFile(key, 'utf8') }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw err
  }
}

async function writePair(pair: KeyPairPem, cert: string, key: string): Promise<void> {
  await writeFileAtomic(key, pair.keyPem, 0o600)
  await writeFileAtomic(cert, pair.certPem, 0o644)
}

/** A client certificate name becomes a file name: keep it to a safe alphabet. */
export function assertSafeName(name: string): void {
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/.test(name)) {
    throw new TypeError(`client name ${JSON.stringify(name)} must match [A-Za-z0-9][A-Za-z0-9._-]*`)
  }
}

/** Creates the CA and server certificate when missing; returns the CA. */
export async function ensureCa(paths: DevPkiPaths): Promise<{ ca: KeyPairPem; created: string[] }> {
  await mkdir(join(paths.dir, 'clients'), { recursive: true, mode: 0o700 })
  const created: string[] = []
  let ca = await readPair(paths.caCert, paths.caKey)
  if (ca === undefined) {
    ca = createCa()
    await writePair(ca, paths.caCert, paths.caKey)
    created.push(paths.caCert)
  }
  if ((await readPair(paths.serverCert, paths.serverKey)) === undefined) {
    await writePair(createServerCert(ca), paths.serverCert, paths.serverKey)
    created.push(paths.serverCert)
  }
  return { ca, created }
}

/** Issues (or reissues with `force`) a client certificate with CN `name`. */
export async function ensureClient(paths: DevPkiPaths, ca: KeyPairPem, name: string, force = false): Promise<boolean> {
  assertSafeName(name)
  if (!force && (await readPair(paths.clientCert(name), paths.clientKey(name))) !== undefined) return false
  await writePair(createClientCert(ca, name), paths.clientCert(name), paths.clientKey(name))
  return true
}

/** Issues (or reissues with `force`) an X.509-SVID for `spiffeId` (empty subject, URI SAN only). */
export async function ensureSvid(paths: DevPkiPaths, ca: KeyPairPem, spiffeId: string, force = false): Promise<boolean> {
  const cert = paths.svidCert(spiffeId)
  const key = paths.svidKey(spiffeId)
  if (!force && (await readPair(cert, key)) !== undefined) return false
  await mkdir(join(paths.dir, 'svids', svidDirName(spiffeId)), { recursive: true, mode: 0o700 })
  await writePair(createSvid(ca, spiffeId), cert, key)
  return true
}

/** Issues (or reissues with `force`) a server certificate `servers/<name>.pem` for the given hosts. */
export async function ensureServer(paths: DevPkiPaths, ca: KeyPairPem, name: string, hosts: readonly string[], force = false): Promise<boolean> {
  assertSafeName(name)
  if (!force && (await readPair(paths.namedServerCert(name), paths.namedServerKey(name))) !== undefined) return false
  await mkdir(join(paths.dir, 'servers'), { recursive: true, mode: 0o700 })
  await writePair(createServerCert(ca, hosts), paths.namedServerCert(name), paths.namedServerKey(name))
  return true
}

/**
 * The whole dev PKI: CA, server certificate, and for every caller given a client certificate with that CN,
 * or an X.509-SVID when the caller is a SPIFFE ID.
 */
export async function ensureDevPki(dir: string, callers: Iterable<string>): Promise<{ paths: DevPkiPaths; created: string[] }> {
  const paths = devPkiPaths(dir)
  const { ca, created } = await ensureCa(paths)
  for (const name of callers) {
    const spiffe = name.startsWith(SPIFFE_SCHEME)
    if (await (spiffe ? ensureSvid(paths, ca, name) : ensureClient(paths, ca, name))) created.push(callerFiles(paths, name).cert)
  }
  return { paths, created }
}
