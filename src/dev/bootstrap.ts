/**
 * Dev mode (`AUTHZ_DEV` not false and no TLS files): makes what is missing — a dev PKI with a client
 * certificate for every caller the policy names (an X.509-SVID when the caller is a SPIFFE ID, with
 * AUTHZ_IDENTITY=spiffe), and a first signing key — and says loudly that it did.
 * Loaded only in dev mode: a production start never loads node-forge or the keys CLI's code.
 */
import { join, relative } from 'node:path'
import type { Logger } from 'pino'
import type { Clock } from '../clock.js'
import type { Config, TlsFiles } from '../config.js'
import { ConfigError } from '../errors.js'
import { initKeys } from '../keys/admin.js'
import type { Timing } from '../keys/lifecycle.js'
import { readManifest } from '../keys/manifest.js'
import { callerFiles, devPkiPaths, ensureDevPki, type DevPkiPaths } from '../pki/dev-files.js'
import type { Policy } from '../policy/policy.js'

export interface DevMaterial {
  readonly tls: TlsFiles
  /** The callers that got a client certificate (the banner's example uses the first). */
  readonly callers: readonly string[]
  readonly paths: DevPkiPaths
}

export async function prepareDevMaterial(config: Config, policy: Policy, timing: Timing, clock: Clock, logger: Logger): Promise<DevMaterial> {
  const dir = join(config.keysDir, 'dev-pki')
  const callers: string[] = []
  for (const name of policy.grants.keys()) {
    try {
      callerFiles(devPkiPaths(dir), name)
      callers.push(name)
    } catch {
      logger.warn({ caller: name }, 'dev mode: no client certificate for a caller whose name cannot be a file name')
    }
  }
  const { paths, created } = await ensureDevPki(dir, callers)
  const manifest = await readManifest(config.keysDir).catch((err: unknown) => {
    throw new ConfigError('AUTHZ_KEYS_DIR', (err as Error).message)
  })
  if (manifest.keys.length === 0) {
    const key = await initKeys({ dir: config.keysDir, timing, clock, passphrase: config.keyPassphrase })
    created.push(`signing key ${key.kid}`)
  }
  logger.warn(
    { dev: true, dir: config.keysDir, created },
    'DEV MODE: using a generated dev PKI and signing key; never in production (set AUTHZ_DEV=false and the AUTHZ_TLS_* variables)',
  )
  return { tls: { cert: paths.serverCert, key: paths.serverKey, clientCa: paths.caCert, crl: undefined }, callers, paths }
}

/** The banner printed after a dev start: how to call this instance. */
export function devBanner(cwd: string, dev: DevMaterial, policy: Policy, port: number, opsPort: number): string {
  const caller = dev.callers[0]
  if (caller === undefined) return ''
  const audience = policy.grants.get(caller)?.keys().next().value ?? 'inventory-service'
  const rel = (p: string): string => relative(cwd, p) || p
  const files = callerFiles(dev.paths, caller)
  return [
    '',
    '  ================================================================',
    '  authz is running in DEV MODE with a generated PKI and signing key.',
    '  Never use this material in production (set AUTHZ_DEV=false).',
    '  ================================================================',
    '',
    `  Get a token as ${caller}:`,
    '',
    `    curl --cacert ${rel(dev.paths.caCert)} \\`,
    `      --cert ${rel(files.cert)} --key ${rel(files.key)} \\`,
    `      -H 'content-type: application/json' -d '{"audience":"${audience}"}' \\`,
    `      https://localhost:${port}/token`,
    '',
    `  Public keys: curl http://127.0.0.1:${opsPort}/.well-known/jwks.json`,
    '',
  ].join('\n')
}
