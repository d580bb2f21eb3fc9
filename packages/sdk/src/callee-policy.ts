/**
 * The receiving service's own policy: which scopes (and optionally which callers) each of its routes
 * requires. Read at start from a file or a configuration center's URL, kept fresh in the background;
 * checked locally after `verify`, never by a remote call per request.
 *
 * ```json
 * {
 *   "service": "inventory-service",
 *   "routes": {
 *     "GET /stock/:sku":             { "scopes": ["stock:read"] },
 *     "POST /stock/:sku/deduct":     { "scopes": ["stock:deduct"], "callers": ["order-service"] },
 *     "/inventory.Inventory/Deduct": { "scopes": ["stock:deduct"] }
 *   }
 * }
 * ```
 * Route keys are `METHOD <route pattern>` as registered with Fastify, or a gRPC full method name
 * (`/package.Service/Method`). The rule of `GET /x` governs `HEAD /x`, so a `HEAD` key is refused (it would
 * never be consulted), and so is a path without a method (it would never match).
 */
import { watch, type FSWatcher } from 'node:fs'
import { basename, dirname } from 'node:path'
import type { CalleeCounters } from './callee-counters.js'
import { safely } from './callback.js'
import { setTimer, systemClock, type Clock } from './clock.js'
import type { CalleePolicyError } from './errors.js'
import { fileSource, isUrlSource, POLICY_POLL_MS, readPolicyFile, urlSource, type PolicySource, type PolicyTls } from './policy-source.js'
import { parseCalleePolicy, satisfies, type CalleePolicyDocument, type Decision, type DecideOptions, type RouteRule } from './policy-document.js'
import type { VerifiedCaller } from './verifier.js'

export {
  GRPC_ROUTE_KEY,
  HTTP_ROUTE_KEY,
  parseCalleePolicy,
  satisfies,
  type CalleePolicyDocument,
  type Decision,
  type DecideOptions,
  type RouteRule,
} from './policy-document.js'
export { POLICY_POLL_MS } from './policy-source.js'

/** Where a callee policy logs (pino's and Fastify's `log` fit): a failed reload, and its end. */
export interface PolicyLogger {
  error(fields: Record<string, unknown>, message: string): void
  warn(fields: Record<string, unknown>, message: string): void
}

/** The default: one JSON line on stderr, as pino writes it. */
const stderrLogger: PolicyLogger = {
  error: (fields, msg) => void process.stderr.write(`${JSON.stringify({ level: 'error', time: Date.now(), ...fields, msg })}\n`),
  warn: (fields, msg) => void process.stderr.write(`${JSON.stringify({ level: 'warn', time: Date.now(), ...fields, msg })}\n`),
}

/** How `CalleePolicy.load` reads and watches its source. */
export interface CalleePolicyLoadOptions {
  /**
   * Read the source again every this many ms: default 2000 for a file (also on file events), 30 000 for
   * a URL (jittered by ±10 %); 0 reads it once.
   */
  readonly pollMs?: number
  /**
   * Told after every reload that changed the rules (no error) or failed (the error; the rules in force
   * stay), once per distinct failure — as the Go kit's `WithReloadHook`.
   */
  readonly onReload?: (error: CalleePolicyError | undefined) => void
  /** Told after every background read of a URL source, with its error and the delay to the next (metrics, tests). */
  readonly onPull?: (error: CalleePolicyError | undefined, nextMs: number) => void
  /** Where a failed reload (once per distinct failure) and the end of failures are logged (default: JSON lines on stderr). */
  readonly logger?: PolicyLogger
  /** Counts every reload: `authz_callee_policy_reload_failures_total`, `authz_callee_policy_reload_failing`. */
  readonly counters?: CalleeCounters
  /**
   * A policy file shipped with the service, in force when the source cannot be read (or does not parse) at
   * start: the load succeeds, the failure is reported, and the source is retried until its own rules
   * replace these. Without it, such a load rejects. Read and checked at every load: a broken one rejects
   * even when the source answers.
   */
  readonly bundled?: string
  /** Time of the pulls, retries and fetch timeouts (tests pass a ManualClock). */
  readonly clock?: Clock
  /** A URL source over `http://` (default false): only where the network to the configuration server is trusted. */
  readonly allowHttp?: boolean
  /** TLS towards the configuration server: its CA, and a client certificate and key for mutual TLS. */
  readonly tls?: PolicyTls
  /** Headers of every request of a URL source (a configuration center's token): never logged. */
  readonly headers?: Readonly<Record<string, string>>
  /** Bound of one fetch of a URL source, ms (default 10 000). */
  readonly timeoutMs?: number
}

interface Reporting {
  readonly logger: PolicyLogger
  readonly counters: CalleeCounters | undefined
  readonly onReload: (error: CalleePolicyError | undefined) => void
  readonly onPull: ((error: CalleePolicyError | undefined, nextMs: number) => void) | undefined
  readonly clock: Clock
}

/**
 * A callee policy held in memory and kept fresh from its source — a file, or a configuration center's
 * URL — in the background; a source that cannot be read or does not parse keeps the rules in force. A
 * policy from `load` reads its source from the start (both kits): a tightened rule is in force within one
 * interval without anyone remembering to ask; `close()` stops it. Requests never wait for a read.
 */
export class CalleePolicy {
  #doc: CalleePolicyDocument
  #text: string | undefined
  #source: PolicySource | undefined
  #reporting: Reporting = { logger: stderrLogger, counters: undefined, onReload: () => undefined, onPull: undefined, clock: systemClock }
  /** The failure last reported (a document's text, or why the source could not be read), once until it changes. */
  #failed: string | undefined
  #failures = 0
  #intervalMs = 0
  #reading: Promise<{ changed?: boolean; error?: CalleePolicyError }> | undefined
  #queued: Promise<{ changed?: boolean; error?: CalleePolicyError }> | undefined
  #watcher: FSWatcher | undefined
  #poll: NodeJS.Timeout | undefined
  #cancelPull: (() => void) | undefined
  #closed = false
  /** The file a policy was loaded from (undefined for a URL). */
  readonly path: string | undefined

  constructor(doc: CalleePolicyDocument = { routes: {} }, path?: string) {
    this.#doc = doc
    this.path = path
    if (path !== undefined) this.#source = fileSource(path)
  }

  /** What errors and logs call the source: the file's path, or the URL without user information or query. */
  get source(): string | undefined {
    return this.#source?.name
  }

  /**
   * Reads, validates and (unless `pollMs` is 0) keeps reading a policy: from a file path, or an `https://`
   * URL (`http://` with `allowHttp`). Rejects with a CalleePolicyError when the first read fails and no
   * `bundled` file is given; a URL that cannot be a source is a TypeError.
   */
  static async load(source: string | URL, options: CalleePolicyLoadOptions = {}): Promise<CalleePolicy> {
    const clock = options.clock ?? systemClock
    const src = isUrlSource(source)
      ? urlSource(source, { allowHttp: options.allowHttp, tls: options.tls, headers: options.headers, timeoutMs: options.timeoutMs, clock })
      : fileSource(String(source))
    const policy = new CalleePolicy(undefined, src.path)
    policy.#source = src
    policy.#reporting = { logger: options.logger ?? stderrLogger, counters: options.counters, onReload: options.onReload ?? (() => undefined), onPull: options.onPull, clock }
    policy.#intervalMs = options.pollMs ?? src.defaultIntervalMs
    try {
      const bundled = options.bundled === undefined ? undefined : parseCalleePolicy(await readPolicyFile(options.bundled), options.bundled)
      let text: string | undefined
      try {
        text = await src.read()
        policy.#doc = parseCalleePolicy(text, src.name)
        policy.#text = text
        policy.#succeeded()
      } catch (err) {
        if (bundled === undefined) throw err
        policy.#doc = bundled
        policy.#fail(err as CalleePolicyError, text, `; the bundled file ${options.bundled} is in force`)
      }
    } catch (err) {
      src.close()
      throw err
    }
    if (policy.#intervalMs > 0) {
      if (src.path === undefined) policy.#schedule()
      else policy.#watch(policy.#intervalMs)
    }
    return policy
  }

  /** The rule of a route key (`GET /stock/:sku`, `/pkg.Service/Method`); a `HEAD` key finds its `GET` rule. */
  rule(key: string): RouteRule | undefined {
    const lookup = key.startsWith('HEAD ') ? `GET ${key.slice(5)}` : key
    return Object.hasOwn(this.#doc.routes, lookup) ? this.#doc.routes[lookup] : undefined
  }

  /** The policy's `service` member, if it has one. */
  get service(): string | undefined {
    return this.#doc.service
  }

  /**
   * The one decision of the receiving edge, for Fastify and gRPC alike: the route's own rule, else the
   * file's rule for `key`, else `unlisted` (or `allow` with `allowUnlisted`).
   */
  decide(key: string, caller: VerifiedCaller, options: DecideOptions = {}): Decision {
    const rule = options.rule ?? this.rule(key)
    if (rule === undefined) return options.allowUnlisted === true ? 'allow' : 'unlisted'
    return satisfies(caller, rule) ? 'allow' : 'forbidden'
  }

  /** Reads the source now (after a read in flight); on a failure the policy in force stays and the error is returned. */
  async reload(): Promise<CalleePolicyError | undefined> {
    return (await this.#reload()).error
  }

  /** One read at a time: a read asked for during another follows it (it may see what that one missed); several such are one. */
  #reload(): Promise<{ changed?: boolean; error?: CalleePolicyError }> {
    const source = this.#source
    if (source === undefined) return Promise.resolve({})
    if (this.#reading !== undefined) {
      this.#queued ??= this.#reading.then(() => {
        this.#queued = undefined
        return this.#reload()
      })
      return this.#queued
    }
    this.#reading = (async () => {
      let text: string | undefined
      try {
        text = await source.read()
        if (this.#closed) return {}
        const changed = text !== this.#text
        if (changed) this.#doc = parseCalleePolicy(text, source.name)
        this.#text = text
        this.#succeeded()
        if (changed) safely(this.#reporting.onReload, undefined)
        return { changed }
      } catch (err) {
        const error = err as CalleePolicyError
        if (!this.#closed) this.#fail(error, text, '; the previous rules stay in force')
        return { error }
      } finally {
        this.#reading = undefined
      }
    })()
    return this.#reading
  }

  /** A good read: after failures, one line says the source loads again. */
  #succeeded(): void {
    this.#reporting.counters?.observePolicyReload(undefined)
    if (this.#failures > 0) {
      const { logger } = this.#reporting
      safely(() => logger.warn({ event: 'policy_reload_recovered', source: this.#source?.name, failures: this.#failures }, 'callee policy loads again'))
    }
    this.#failures = 0
    this.#failed = undefined
  }

  /** A failed read: counted every time, logged and told to `onReload` once per distinct failure. */
  #fail(error: CalleePolicyError, text: string | undefined, keeps: string): void {
    this.#failures++
    this.#reporting.counters?.observePolicyReload(error)
    const failure = text ?? `${error.code} ${error.message}`
    if (failure === this.#failed) return
    this.#failed = failure
    const retry = this.#intervalMs > 0 ? { retry_in_ms: Math.round(this.#next()) } : {}
    const { logger } = this.#reporting
    safely(() => logger.error({ event: 'policy_reload_failed', source: this.#source?.name, code: error.code, error: error.message, ...retry }, `callee policy reload failed${keeps}`))
    safely(this.#reporting.onReload, error)
  }

  /** The delay to the next background read, as the last one left it (jittered once per read). */
  #nextMs: number | undefined
  #next(): number {
    this.#nextMs ??= this.#source?.after(this.#intervalMs, this.#failures) ?? this.#intervalMs
    return this.#nextMs
  }

  /** The pulls of a URL source: one at a time, each scheduled when the last one ends. */
  #schedule(): void {
    if (this.#closed) return
    const delay = this.#next()
    this.#nextMs = undefined
    this.#cancelPull = setTimer(
      this.#reporting.clock,
      () =>
        void this.#reload().then(({ error }) => {
          if (this.#closed) return
          const next = this.#next()
          this.#schedule()
          safely(this.#reporting.onPull, error, next)
        }),
      delay,
    )
  }

  /**
   * Reloads a file on change: a watch of the file's directory (an atomic rename replaces the inode a file
   * watch holds) plus a poll every `pollMs` (default 2000), for volumes that deliver no events (NFS,
   * Kubernetes ConfigMaps). `onError` hears of each distinct bad file once, not at every poll.
   */
  watch(onError: (err: CalleePolicyError) => void = () => undefined, pollMs = POLICY_POLL_MS): void {
    const { onReload } = this.#reporting
    this.#reporting = { ...this.#reporting, onReload: (err) => (err === undefined ? onReload(err) : onError(err)) }
    this.#watch(pollMs)
  }

  #watch(pollMs: number): void {
    if (this.path === undefined) return
    this.#stopWatching()
    const reload = (): void => void this.#reload()
    const name = basename(this.path)
    try {
      this.#watcher = watch(dirname(this.path), { persistent: false }, (_event, file) => {
        if (file === null || file === name || file.startsWith('..')) reload()
      })
      this.#watcher.on('error', () => this.#watcher?.close())
    } catch {
      // no events on this platform or volume: the poll carries on
    }
    this.#poll = setInterval(reload, pollMs)
    this.#poll.unref()
  }

  #stopWatching(): void {
    this.#watcher?.close()
    this.#watcher = undefined
    if (this.#poll !== undefined) clearInterval(this.#poll)
    this.#poll = undefined
  }

  /** Stops reading the source; a fetch in flight is abandoned. */
  close(): void {
    this.#closed = true
    this.#stopWatching()
    this.#cancelPull?.()
    this.#cancelPull = undefined
    this.#source?.close()
  }
}
