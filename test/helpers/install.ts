/**
 * authz as production runs it, for tests: AUTHZ_DEV=false and every piece of material in files of a temp
 * directory (server certificate and key, client CA bundle, optionally CRLs, the policy, a keys directory
 * with one key), listening on port 0 of 127.0.0.1.
 */
import { join } from 'node:path'
import type { Test } from 'tap'
import type { Clock } from '../../src/clock.js'
import { systemClock } from '../../src/clock.js'
import { initKeys } from '../../src/keys/admin.js'
import { startServer, type RunningServer, type StartOptions } from '../../src/server.js'
import { LogCapture, SAMPLE_POLICY } from './harness.js'
import { pooledKey } from './material.js'
import { testPki } from './pki.js'

export interface InstallOptions {
  /** The client CA bundle (default: the test CA). */
  readonly clientCa?: string
  /** CRLs (PEM); no AUTHZ_CRL when absent. */
  readonly crl?: string
  /** Make no signing key (the test makes its own, e.g. in a PKCS#11 token). */
  readonly noKey?: boolean
  readonly clock?: Clock
}

/** The AUTHZ_* variables of an install; the file paths are always there. */
export type InstallEnv = Record<string, string> & {
  readonly AUTHZ_TLS_CERT: string
  readonly AUTHZ_CLIENT_CA: string
  readonly AUTHZ_KEYS_DIR: string
  readonly AUTHZ_POLICY: string
}

/** The temp directory and the AUTHZ_* variables of a production-style install. */
export async function install(t: Test, options: InstallOptions = {}): Promise<{ dir: string; env: InstallEnv }> {
  const pki = testPki()
  const dir = t.testdir({
    'server.pem': pki.server.certPem,
    'server-key.pem': pki.server.keyPem,
    'ca.pem': options.clientCa ?? pki.ca.certPem,
    ...(options.crl === undefined ? {} : { 'crl.pem': options.crl }),
    'policy.json': JSON.stringify(SAMPLE_POLICY),
    keys: {},
  })
  if (options.noKey !== true) {
    await initKeys({ dir: join(dir, 'keys'), timing: { tokenTtl: 600, jwksMaxAge: 600 }, clock: options.clock ?? systemClock, newKey: pooledKey })
  }
  const env: InstallEnv = {
    AUTHZ_DEV: 'false',
    AUTHZ_HOST: '127.0.0.1',
    AUTHZ_PORT: '0',
    AUTHZ_OPS_PORT: '0',
    AUTHZ_TLS_CERT: join(dir, 'server.pem'),
    AUTHZ_TLS_KEY: join(dir, 'server-key.pem'),
    AUTHZ_CLIENT_CA: join(dir, 'ca.pem'),
    ...(options.crl === undefined ? {} : { AUTHZ_CRL: join(dir, 'crl.pem') }),
    AUTHZ_KEYS_DIR: join(dir, 'keys'),
    AUTHZ_POLICY: join(dir, 'policy.json'),
  }
  return { dir, env }
}

/** Starts authz on an install, closed when the test ends; its logs are captured. */
export async function startInstalled(
  t: Test,
  env: Record<string, string>,
  options: StartOptions = {},
): Promise<{ server: RunningServer; logs: LogCapture; port: number; opsPort: number }> {
  const logs = new LogCapture()
  const server = await startServer(env, { logDestination: logs, ...options })
  t.teardown(() => server.close())
  return { server, logs, port: Number(new URL(server.mainUrl).port), opsPort: Number(new URL(server.opsUrl).port) }
}
