#!/usr/bin/env node
/** The process: start, SIGHUP reloads, SIGTERM/SIGINT drain and exit 0, a start failure exits 1 naming what is wrong. */
import { startServer, type RunningServer } from '../server.js'

/** How long after AUTHZ_SHUTDOWN_TIMEOUT the process exits should the drain not have finished. */
const SHUTDOWN_BACKSTOP_MS = 500

let server: RunningServer
try {
  server = await startServer(process.env)
} catch (err) {
  console.error(`authz: cannot start: ${(err as Error).message}`)
  process.exit(1)
}
process.on('SIGHUP', () => void server.reload())
const stop = (signal: string): void => {
  server.logger.info({ signal, deadline_s: server.config.shutdownTimeout }, 'shutting down: draining in-flight requests')
  server.logger.flush() // the operator sees it now, not with the next batch
  // The drain destroys what is left at the deadline; this is the backstop should anything else hang: the
  // process is gone within AUTHZ_SHUTDOWN_TIMEOUT + 1 s whatever happens. (Nothing may block a thread of
  // libuv's pool, or exit itself would wait for it: watched files are read only when they are regular
  // files, never opened blocking; see util/read-file.ts.)
  setTimeout(() => {
    server.logger.error({ event: 'shutdown_backstop', deadline_s: server.config.shutdownTimeout }, 'shutdown did not finish by its deadline: exiting anyway')
    server.logger.flush()
    process.exit(0)
  }, server.config.shutdownTimeout * 1000 + SHUTDOWN_BACKSTOP_MS).unref()
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
