/**
 * The process: reads the config, prepares dev material when asked to, loads policy and keys, listens on
 * the main (mTLS) and ops listeners, reloads on change and SIGHUP, and drains on SIGTERM/SIGINT. The only
 * module that listens.
 */
import { join, relative } from 'node:path'
import type { FastifyInstance } from 'fastify'
import type { DestinationStream, Logger } from 'pino'
import type { Server as TlsServer } from 'node:tls'
import { buildApp, buildOpsApp, connectionsOf } from './app.js'
import { systemClock, type Clock } from './clock.js'
import { loadConfig, type Config, type TlsFiles } from './config.js'
import { AuthzError, ConfigError } from './errors.js'
import { initKeys } from './keys/admin.js'
import { readManifest } from './keys/manifest.js'
import { KeyStore } from './keys/store.js'
import { bufferedStdout, createLogger } from './logger.js'
import { createMetrics, type Metrics } from './metrics.js'
import { assertSafeName, ensureDevPki } from './pki/dev-files.js'
import { PolicyStore } from './policy/store.js'
import type { ReloadEvent } from './util/reloader.js'
import { checkTlsMaterial, readTlsMaterial, TlsReloader } from './tls/reloader.js'


/** Where a started server sends its output, and its clock (tests). */
export interface StartOptions {
  readonly cwd?: string
  readonly clock?: Clock
  /** Where log lines go (default stdout). */
  readonly logDestination?: DestinationStream
  /** Where the dev banner goes (default stdout). */
  readonly bannerOut?: { write(text: string): unknown }
  /** Polling interval of the file watchers, ms (default 5000). */
  readonly pollMs?: number
}

/** A started authz: both listeners, its stores, reload and graceful close. */
export interface RunningServer {
  readonly config: Config
  readonly main: FastifyInstance
  readonly ops: FastifyInstance
  readonly keys: KeyStore
  readonly policy: PolicyStore
  readonly metrics: Metrics
  readonly logger: Logger
  /** Where the main listener listens (port 0 resolved). */
  readonly mainUrl: string
  readonly opsUrl: string
  /** Reloads policy, keys and TLS material now (what SIGHUP does). */
  reload(): Promise<void>
  /** Stops accepting, lets in-flight requests finish, closes both listeners. */
  close(): Promise<void>
}

function curlHint(cwd: string, tls: TlsFiles, callers: string[], port: number, policy: PolicyStore): string {
  const caller = callers[0]
  if (caller === undefined) return ''
  const audience = policy.current.grants.get(caller)?.keys().next().value ?? 'inventory-service'
  const clientCert = join(tls.clientCa, '..', 'clients', `${caller}.pem`)
  const clientKey = join(tls.clientCa, '..', 'clients', `${caller}-key.pem`)
  const rel = (p: string): string => relative(cwd, p) || p
  return [
    '',
    '  ================================================================',
    '  authz is running in DEV MODE with a generated PKI and signing key.',
    '  Never use this material in production (set AUTHZ_DEV=false).',
    '  ================================================================',
    '',
    `  Get a token as ${caller}:`,
    '',
    `    curl --cacert ${rel(tls.clientCa)} \\`,
    `      --cert ${rel(clientCert)} --key ${rel(clientKey)} \\`,
    `      -H 'content-type: application/json' -d '{"audience":"${audience}"}' \\`,
    `      https://localhost:${port}/token`,
    '',
    `  Public keys: curl http://127.0.0.1:<ops port>/.well-known/jwks.json`,
    '',
  ].join('\n')
}

/** Starts authz from an environment. Throws ConfigError/AuthzError (naming what is wrong) when it cannot. */
export async function startServer(env: NodeJS.ProcessEnv, options: StartOptions = {}): Promise<RunningServer> {
  const cwd = options.cwd ?? process.cwd()
  const clock = options.clock ?? systemClock
  const config = loadConfig(env, cwd)
  const destination = options.logDestination ?? bufferedStdout()
  const logger = createLogger(config.logLevel, destination)
  const metrics = createMetrics()

  let policy: PolicyStore
  try {
    policy = await PolicyStore.load(config.policyPath)
  } catch (err) {
    throw new ConfigError('AUTHZ_POLICY', (err as Error).message)
  }

  const timing = { tokenTtl: config.tokenTtl, jwksMaxAge: config.jwksMaxAge }
  let tlsFiles = config.tls
  const devCallers: string[] = []
  if (tlsFiles === null) {
    // Dev mode (AUTHZ_DEV not false, no TLS files): make what is missing, loudly.
    for (const name of policy.current.grants.keys()) {
      try {
        assertSafeName(name)
        devCallers.push(name)
      } catch {
        logger.warn({ caller: name }, 'dev mode: no client certificate for a caller whose name cannot be a file name')
      }
    }
    const pkiDir = join(config.keysDir, 'dev-pki')
    const { paths, created } = await ensureDevPki(pkiDir, devCallers)
    tlsFiles = { cert: paths.serverCert, key: paths.serverKey, clientCa: paths.caCert, crl: undefined }
    if ((await readManifest(config.keysDir)).keys.length === 0) {
      const key = await initKeys({ dir: config.keysDir, timing, clock, passphrase: config.keyPassphrase })
      created.push(`signing key ${key.kid}`)
    }
    logger.warn(
      { dev: true, dir: config.keysDir, created },
      'DEV MODE: using a generated dev PKI and signing key; never in production (set AUTHZ_DEV=false and the AUTHZ_TLS_* variables)',
    )
  }
  const tls = await readTlsMaterial(tlsFiles)
  checkTlsMaterial(tls)

  let keys: KeyStore
  try {
    keys = await KeyStore.open({ dir: config.keysDir, timing, clock, passphrase: config.keyPassphrase })
  } catch (err) {
    throw new ConfigError('AUTHZ_KEYS_DIR', `${(err as Error).message} (create a key with: npm run keys -- init)`)
  }
  for (const warning of keys.keyset?.warnings ?? []) logger.warn({ dir: config.keysDir }, warning)
  if (keys.signingKey() === undefined) logger.error({ dir: config.keysDir }, 'no signing key is active: /token answers 503 until one is')

  const deps = { keys, policy, metrics, clock, logger }
  const main = await buildApp(config, tls, deps)
  const ops = await buildOpsApp(config, deps)

  /**
   * One way to report a reload: count it, log a failure as an error (once per distinct failure: the
   * reloader retries it until it loads), flag it in `authz_reload_failing`, log a change with its details.
   */
  const reporter =
    (counter: Metrics['policyReloads'], what: string, keeps: string, onChange: () => Record<string, unknown>) =>
    (event: ReloadEvent<AuthzError>): void => {
      if (event.kind === 'failed') {
        counter.inc({ result: 'error' })
        metrics.reloadFailing.set({ what }, 1)
        logger.error(
          { event: 'reload_failed', what, code: event.error.code, detail: event.error.message, retry_in_ms: event.retryInMs },
          `${what} reload failed; ${keeps} stay in force; retrying until it loads`,
        )
        return
      }
      if (event.kind === 'recovered') {
        metrics.reloadFailing.set({ what }, 0)
        logger.warn({ event: 'reload_recovered', what, failed_for_ms: event.failedFor }, `${what} loads again`)
        if (!event.changed) return
      }
      counter.inc({ result: 'changed' })
      logger.info({ event: 'reloaded', what, ...onChange() }, `${what} reloaded`)
    }
  for (const what of ['policy', 'keyset', 'TLS']) metrics.reloadFailing.set({ what }, 0)
  const onPolicy = reporter(metrics.policyReloads, 'policy', 'the previous policy and its grants', () => ({
    sha256: policy.current.sha256,
    callers: policy.current.grants.size,
  }))
  const onKeys = reporter(metrics.keysetReloads, 'keyset', 'the previous keys', () => {
    for (const warning of keys.keyset?.warnings ?? []) logger.warn({ dir: config.keysDir }, warning)
    return { kids: keys.jwks().kids, active: keys.signingKey()?.kid }
  })
  const connections = connectionsOf(main)
  // New handshakes use reloaded TLS material; a new client CA or CRL also retires older connections.
  const tlsReloader = new TlsReloader(tlsFiles, main.server as unknown as TlsServer, tls, (trust) => connections.retire(trust))
  const onTls = reporter(metrics.tlsReloads, 'TLS', 'the previous certificates, CA and CRL', () => ({}))
  let lastActive = keys.signingKey()?.kid
  keys.onChange(() => {
    const active = keys.signingKey()?.kid
    if (active !== lastActive) logger.info({ kid: active, previous: lastActive }, 'signing key switched')
    lastActive = active
  })
  policy.watch(onPolicy, options.pollMs)
  keys.watch(onKeys, options.pollMs)
  tlsReloader.watch(onTls, options.pollMs)

  // Buffered lines still reach the log within a second when traffic is low.
  const flusher = setInterval(() => (destination as { flush?: () => void }).flush?.(), 1000)
  flusher.unref()
  try {
    await main.listen({ host: config.host, port: config.port })
    await ops.listen({ host: config.opsHost, port: config.opsPort })
  } catch (err) {
    clearInterval(flusher)
    policy.close()
    keys.close()
    tlsReloader.close()
    await Promise.allSettled([main.close(), ops.close()])
    throw err
  }
  const mainPort = (main.server.address() as { port: number }).port
  const opsPort = (ops.server.address() as { port: number }).port
  logger.info({ main: `https://${config.host}:${mainPort}`, ops: `http://${config.opsHost}:${opsPort}`, kid: keys.signingKey()?.kid }, 'authz listening')
  if (config.tls === null) (options.bannerOut ?? process.stdout).write(`${curlHint(cwd, tlsFiles, devCallers, mainPort, policy).replace('<ops port>', String(opsPort))}\n`)

  let closing: Promise<void> | undefined
  return {
    config,
    main,
    ops,
    keys,
    policy,
    metrics,
    logger,
    mainUrl: `https://127.0.0.1:${mainPort}`,
    opsUrl: `http://127.0.0.1:${opsPort}`,
    async reload() {
      // Outcomes reach the reporters registered by watch().
      await policy.reload(true)
      await keys.reload(true)
      await tlsReloader.reload(true)
    },
    close() {
      closing ??= (async () => {
        policy.close()
        keys.close()
        tlsReloader.close()
        // Answers in progress finish (and close their connections); idle, handshaking, silent and
        // half-received connections close now; at the deadline everything left is destroyed.
        const deadlineMs = config.shutdownTimeout * 1000
        connections.drain(deadlineMs)
        const opsDeadline = setTimeout(() => ops.server.closeAllConnections(), deadlineMs)
        opsDeadline.unref()
        await Promise.all([main.close(), ops.close()])
        connections.stop()
        clearTimeout(opsDeadline)
        clearInterval(flusher)
        flushLog(destination)
      })()
      return closing
    },
  }
}

function flushLog(destination: DestinationStream): void {
  const flush = (destination as { flushSync?: () => void }).flushSync
  if (typeof flush === 'function') {
    try {
      flush.call(destination)
    } catch {
      // stdout already closed: nothing more can be said
    }
  }
}

/** The process entry point: signals, exit codes, and a message that names what is wrong. */
export async function main(): Promise<void> {
  let server: RunningServer
  try {
    server = await startServer(process.env)
  } catch (err) {
    const message = err instanceof AuthzError ? err.message : (err as Error).message
    console.error(`authz: cannot start: ${message}`)
    process.exit(1)
  }
  process.on('SIGHUP', () => void server.reload())
  const stop = (signal: string): void => {
    server.logger.info({ signal, deadline_s: server.config.shutdownTimeout }, 'shutting down: draining in-flight requests')
    // The drain destroys what is left at the deadline; this is the backstop should anything else hang.
    setTimeout(() => process.exit(0), server.config.shutdownTimeout * 1000 + 2000).unref()
    server.close().then(
      () => process.exit(0),
      (err: unknown) => {
        server.logger.error({ err }, 'shutdown failed')
        process.exit(1)
      },
    )
  }
  process.once('SIGTERM', () => stop('SIGTERM'))
  process.once('SIGINT', () => stop('SIGINT'))
}
