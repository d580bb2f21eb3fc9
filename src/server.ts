/**
 * A running authz: reads the config, prepares dev material when asked to (dev/bootstrap.ts, loaded only
 * then), loads policy and keys, listens on the main (mTLS) and ops listeners, reloads on change and on
 * demand, and drains on close. The only module that listens; the process (signals, exit codes) is
 * bin/server.ts.
 */
import type { FastifyInstance } from 'fastify'
import type { DestinationStream, Logger } from 'pino'
import { buildApp, buildOpsApp, connectionsOf, MAIN_LISTEN_BACKLOG, type MainApp } from './app.js'
import { systemClock, type Clock } from './clock.js'
import { loadConfig, type Config } from './config.js'
import { AuthzError, ConfigError } from './errors.js'
import { keysStartAdvice } from './keys/commands.js'
import { KeyStore, type OpenWait } from './keys/store.js'
import { bufferedStdout, createLogger, keepFlushing } from './logger.js'
import { createMetrics, type Metrics } from './metrics.js'
import { PolicyStore } from './policy/store.js'
import { reloadReporter, reportSigningKey } from './reload-reports.js'
import { CrlDeadline, materialDates } from './tls/expiry.js'
import type { TlsMaterial } from './tls/options.js'
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
  /** How long a start waits for a key file the manifest names (default 15 s). */
  readonly keysWaitMs?: number
}

/** A started authz: both listeners, its stores, reload and graceful close. */
export interface RunningServer {
  readonly config: Config
  readonly main: MainApp
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
  /**
   * Stops accepting, answers what was received, closes every other connection, and destroys what is left
   * at `AUTHZ_SHUTDOWN_TIMEOUT`.
   */
  close(): Promise<void>
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
    policy = await PolicyStore.load(config.policyPath, config.identity)
  } catch (err) {
    throw new ConfigError('AUTHZ_POLICY', (err as Error).message)
  }

  const timing = { tokenTtl: config.tokenTtl, jwksMaxAge: config.jwksMaxAge }
  // Dev mode (AUTHZ_DEV not false, no TLS files): make what is missing, loudly.
  const dev = config.tls === null ? await (await import('./dev/bootstrap.js')).prepareDevMaterial(config, policy.current, timing, clock, logger) : undefined
  const tlsFiles = dev?.tls ?? (config.tls as NonNullable<Config['tls']>)
  const tls = await readTlsMaterial(tlsFiles)
  checkTlsMaterial(tls, tlsFiles, clock.now())
  const crl = tlsFiles.crl === undefined ? undefined : new CrlDeadline(clock, logger, tlsFiles.crl)
  const tlsInForce = (material: TlsMaterial): void => {
    // (OpenSSL accepted the material: its certificates have dates.)
    const dates = materialDates(material)
    if (dates.serverCertificateNotAfter !== null) metrics.tlsServerCertificateExpiry.set(dates.serverCertificateNotAfter / 1000)
    if (dates.clientCaNotAfter !== null) metrics.tlsClientCaExpiry.set(dates.clientCaNotAfter / 1000)
    metrics.tlsCrlNextUpdate.set(dates.crlNextUpdate === null ? undefined : dates.crlNextUpdate / 1000)
    crl?.follow(dates.crlNextUpdate)
  }
  tlsInForce(tls)

  // Keys in a PKCS#11 token: the module is loaded and logged in now (a ConfigError names what is wrong);
  // when it fails later, /token answers 503 and /readyz fails until it is reloaded.
  const token =
    config.pkcs11 === null
      ? undefined
      : await (await import('./keys/pkcs11/token.js')).openPkcs11(config.pkcs11, {
          onState: (available, reason) => {
            metrics.pkcs11Available.set(available ? 1 : 0)
            if (available) logger.warn({ event: 'pkcs11_available' }, 'PKCS#11 token available again')
            else logger.error({ event: 'pkcs11_unavailable', detail: reason }, 'PKCS#11 token unavailable: /token answers 503 until it is reloaded')
          },
        })
  if (token !== undefined) metrics.pkcs11Available.set(1)
  let keys: KeyStore
  const wait: OpenWait = {
    ...(options.keysWaitMs === undefined ? {} : { maxMs: options.keysWaitMs }),
    onWait: (err, retryInMs) => logger.warn({ event: 'keys_waiting', dir: config.keysDir, detail: err.message, retry_in_ms: retryInMs }, 'waiting for a key file the manifest names'),
  }
  try {
    keys = await KeyStore.open({ dir: config.keysDir, timing, clock, passphrase: config.keyPassphrase, token }, wait)
  } catch (err) {
    crl?.close()
    await token?.close()
    const advice = err instanceof AuthzError ? ` (${keysStartAdvice(err)})` : ''
    throw new ConfigError('AUTHZ_KEYS_DIR', `${(err as Error).message}${advice}`)
  }
  for (const warning of keys.keyset?.warnings ?? []) logger.warn({ dir: config.keysDir }, warning)
  const stopKeyReports = reportSigningKey(keys, logger, clock)

  const deps = { keys, policy, metrics, clock, logger, ...(crl === undefined ? {} : { crl }) }
  const main = await buildApp(config, tls, deps)
  const ops = await buildOpsApp(config, deps)
  const connections = connectionsOf(main)
  // New connections use reloaded TLS material; a new client CA or CRL also retires older connections.
  const tlsReloader = new TlsReloader(tlsFiles, main.server, tls, { clock, onTrustChange: (trust) => connections.retire(trust), onApplied: tlsInForce })

  const onPolicy = reloadReporter(
    'policy',
    { counter: metrics.policyReloads, keeps: 'the previous policy and its grants', onChange: () => ({ sha256: policy.current.sha256, callers: policy.current.grants.size }) },
    metrics,
    logger,
  )
  const onKeys = reloadReporter(
    'keyset',
    {
      counter: metrics.keysetReloads,
      keeps: 'the previous keys',
      onChange: () => {
        for (const warning of keys.keyset?.warnings ?? []) logger.warn({ dir: config.keysDir }, warning)
        return { kids: keys.jwks().kids, active: keys.signingKey()?.kid }
      },
    },
    metrics,
    logger,
  )
  const onTls = reloadReporter('tls', { counter: metrics.tlsReloads, keeps: 'the previous certificates, CA and CRL', onChange: () => ({}) }, metrics, logger)
  policy.watch(onPolicy, options.pollMs)
  keys.watch(onKeys, options.pollMs)
  tlsReloader.watch(onTls, options.pollMs)

  const stopFlushing = keepFlushing(destination)
  try {
    await main.listen({ host: config.host, port: config.port, backlog: MAIN_LISTEN_BACKLOG })
    await ops.listen({ host: config.opsHost, port: config.opsPort })
  } catch (err) {
    stopKeyReports()
    policy.close()
    keys.close()
    tlsReloader.close()
    crl?.close()
    await Promise.allSettled([main.close(), ops.close()])
    stopFlushing()
    throw err
  }
  const mainPort = (main.server.address() as { port: number }).port
  const opsPort = (ops.server.address() as { port: number }).port
  logger.info({ main: `https://${config.host}:${mainPort}`, ops: `http://${config.opsHost}:${opsPort}`, kid: keys.signingKey()?.kid }, 'authz listening')
  if (dev !== undefined) {
    const { devBanner } = await import('./dev/bootstrap.js')
    ;(options.bannerOut ?? process.stdout).write(`${devBanner(cwd, dev, policy.current, mainPort, opsPort)}\n`)
  }

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
        const started = Date.now()
        stopKeyReports()
        policy.close()
        keys.close()
        tlsReloader.close()
        crl?.close()
        // Answers in progress finish (and close their connections); idle, handshaking, silent and
        // half-received connections close now; at the deadline everything left is destroyed.
        const deadlineMs = config.shutdownTimeout * 1000
        const opsConnections = connectionsOf(ops)
        // One line when the deadline cut clients off (what they saw: a reset, not an answer).
        const cut = (listener: string) => (destroyed: number) => {
          if (destroyed > 0) logger.warn({ event: 'shutdown_deadline', listener, destroyed, deadline_s: config.shutdownTimeout }, 'shutdown deadline: destroyed connections still open')
        }
        connections.drain(deadlineMs, cut('main'))
        opsConnections.drain(deadlineMs, cut('ops'))
        await Promise.all([main.close(), ops.close()])
        connections.stop()
        opsConnections.stop()
        await token?.close()
        logger.info({ event: 'shutdown_complete', elapsed_ms: Date.now() - started }, 'drained')
        stopFlushing()
      })()
      return closing
    },
  }
}
