/**
 * The receiving service's own policy: which scopes (and optionally which callers) each of its routes
 * requires. Loaded at start, reloaded on change; checked locally after `verify`, never by a remote call.
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
import { constants, watch, type FSWatcher } from 'node:fs'
import { open, type FileHandle } from 'node:fs/promises'
import { basename, dirname } from 'node:path'
import { CalleePolicyError } from './errors.js'
import { isCallerName, isScopeToken, isServiceName } from './grammar.js'
import type { VerifiedCaller } from './verifier.js'

/** What one route requires of its caller. */
export interface RouteRule {
  /** Every one of these scopes is required. */
  readonly scopes: readonly string[]
  /** When present, only these callers (service names or SPIFFE IDs) may call the route. */
  readonly callers?: readonly string[]
}

/** The callee policy file's shape: route keys to rules. */
export interface CalleePolicyDocument {
  readonly service?: string
  readonly routes: Readonly<Record<string, RouteRule>>
}

/**
 * `allow`; `forbidden` (a rule exists and the caller does not meet it); `unlisted` (no rule, and unlisted
 * routes are not allowed).
 */
export type Decision = 'allow' | 'forbidden' | 'unlisted'

/** An HTTP route key: a method (HEAD is governed by GET) and a route pattern of printable ASCII. */
export const HTTP_ROUTE_KEY = '^(GET|POST|PUT|PATCH|DELETE|OPTIONS) /[\\x21-\\x7E]*$'
/** A gRPC route key: the full method name, `/package.Service/Method` (the package is required). */
export const GRPC_ROUTE_KEY = '^/[A-Za-z_][A-Za-z0-9_]*(\\.[A-Za-z_][A-Za-z0-9_]*)+/[A-Za-z_][A-Za-z0-9_]*$'
/** How often a watched policy file is checked for changes, ms (the Go kit's default too). */
export const POLICY_POLL_MS = 2000

const httpKey = new RegExp(HTTP_ROUTE_KEY)
const grpcKey = new RegExp(GRPC_ROUTE_KEY)

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v)
const pointer = (...parts: string[]): string => parts.map((p) => `/${p.replace(/~/g, '~0').replace(/\//g, '~1')}`).join('')
const invalid = (source: string, entry: string, message: string): CalleePolicyError => new CalleePolicyError('ERR_POLICY_INVALID', source, entry, `${entry || '/'}: ${message}`)

/** The members of an object that are not allowed, in name order (the first one is reported). */
function unknownMembers(value: Record<string, unknown>, allowed: readonly string[]): string[] {
  return Object.keys(value)
    .filter((name) => !allowed.includes(name))
    .sort()
}

function checkList(source: string, entry: string, value: unknown, valid: (v: unknown) => boolean, what: string): readonly string[] {
  if (!Array.isArray(value)) throw invalid(source, entry, `must be an array of ${what}s`)
  const seen = new Set<unknown>()
  value.forEach((item: unknown, i) => {
    if (!valid(item)) throw invalid(source, `${entry}/${i}`, `not a valid ${what}`)
    if (seen.has(item)) throw invalid(source, `${entry}/${i}`, `repeats ${JSON.stringify(item)}`)
    seen.add(item)
  })
  return Object.freeze([...(value as string[])])
}

/**
 * Parses and validates a callee policy (conformance/callee-policy.schema.json); throws a CalleePolicyError
 * naming the bad entry as a JSON pointer. With several faults, the first in this order is named: unknown
 * members (by name), `$schema`, `service`, `routes`, then each route in key order — its key, unknown
 * members, `scopes`, `callers` — as the Go kit does.
 */
export function parseCalleePolicy(text: string, source = 'policy'): CalleePolicyDocument {
  let doc: unknown
  try {
    doc = JSON.parse(text)
  } catch {
    throw new CalleePolicyError('ERR_POLICY_JSON', source, '', 'not valid JSON')
  }
  if (!isObject(doc)) throw invalid(source, '', 'must be a JSON object')
  const [unknown] = unknownMembers(doc, ['$schema', 'service', 'routes'])
  if (unknown !== undefined) throw invalid(source, pointer(unknown), 'unknown member')
  if (doc.$schema !== undefined && typeof doc.$schema !== 'string') throw invalid(source, '/$schema', 'must be a string')
  if (doc.service !== undefined && !isServiceName(doc.service)) throw invalid(source, '/service', 'not a valid service name')
  if (!isObject(doc.routes)) throw invalid(source, '/routes', 'must be an object of route rules')
  const routes: Record<string, RouteRule> = Object.create(null) as Record<string, RouteRule>
  for (const key of Object.keys(doc.routes).sort()) {
    const value = doc.routes[key]
    const entry = pointer('routes', key)
    if (!httpKey.test(key) && !grpcKey.test(key)) {
      const why = key.startsWith('HEAD ') ? ' (HEAD is governed by the GET rule of the same route)' : ''
      throw new CalleePolicyError('ERR_POLICY_ROUTE_KEY', source, entry, `route key ${JSON.stringify(key)} must be "METHOD /path" or a gRPC "/package.Service/Method"${why}`)
    }
    if (!isObject(value)) throw invalid(source, entry, 'must be an object')
    const [extra] = unknownMembers(value, ['scopes', 'callers'])
    if (extra !== undefined) throw invalid(source, `${entry}${pointer(extra)}`, 'unknown member')
    const scopes = checkList(source, `${entry}/scopes`, value.scopes, isScopeToken, 'scope-token')
    const callers = value.callers === undefined ? undefined : checkList(source, `${entry}/callers`, value.callers, isCallerName, 'caller (a service name or a SPIFFE ID)')
    routes[key] = Object.freeze(callers === undefined ? { scopes } : { scopes, callers })
  }
  return Object.freeze({ ...(doc.service === undefined ? {} : { service: doc.service as string }), routes: Object.freeze(routes) })
}

/** The largest policy file read (the Go kit's bound too). */
const MAX_POLICY_BYTES = 1 << 20

/**
 * Reads a policy file, which must be a regular file of at most 1 MiB: a FIFO at the path would block the
 * read (a libuv thread, and the process's exit, for ever), a device would never end. Opened non-blocking,
 * then judged by what it is.
 */
async function readPolicyText(path: string): Promise<string> {
  const refuse = (why: string): CalleePolicyError => new CalleePolicyError('ERR_POLICY_READ', path, '', `cannot read: ${why}`)
  let handle: FileHandle | undefined
  try {
    handle = await open(path, constants.O_RDONLY | constants.O_NONBLOCK)
    const stat = await handle.stat()
    if (!stat.isFile()) throw refuse('not a regular file')
    if (stat.size > MAX_POLICY_BYTES) throw refuse('larger than 1 MiB')
    return await handle.readFile('utf8')
  } catch (err) {
    if (err instanceof CalleePolicyError) throw err
    throw refuse((err as NodeJS.ErrnoException).code ?? 'error')
  } finally {
    await handle?.close()
  }
}

/** Does this caller satisfy this rule? */
export function satisfies(caller: VerifiedCaller, rule: RouteRule): boolean {
  if (rule.callers !== undefined && !rule.callers.includes(caller.service)) return false
  return rule.scopes.every((s) => caller.scopes.includes(s))
}

/** What `decide` may be told besides the route key. */
export interface DecideOptions {
  /** A rule set on the route itself (Fastify route config, a gRPC handler option): it wins over the file. */
  readonly rule?: RouteRule | undefined
  /** Let routes that no rule describes through (default false: `unlisted`). */
  readonly allowUnlisted?: boolean | undefined
}

/** How `CalleePolicy.load` watches the file. */
export interface CalleePolicyLoadOptions {
  /** Check the file every this many ms (default 2000, as the Go kit); 0 loads it once and never again. */
  readonly pollMs?: number
  /**
   * Told after every reload that changed the rules (no error) or failed (the error; the rules in force
   * stay), once per distinct bad file — as the Go kit's `WithReloadHook`.
   */
  readonly onReload?: (error: CalleePolicyError | undefined) => void
}

/**
 * A callee policy held in memory and reloaded from its file on change; a bad file keeps the old one. A
 * policy from `load` watches its file from the start (both kits): a tightened rule is in force within
 * `pollMs` without anyone remembering to ask; `close()` stops it.
 */
export class CalleePolicy {
  #doc: CalleePolicyDocument
  #text: string | undefined
  /** What the last failed reload read (its text, or why it could not), reported once until it changes. */
  #failed: string | undefined
  #watcher: FSWatcher | undefined
  #poll: NodeJS.Timeout | undefined
  readonly path: string | undefined

  constructor(doc: CalleePolicyDocument = { routes: {} }, path?: string) {
    this.#doc = doc
    this.path = path
  }

  /** Reads, validates and (unless `pollMs` is 0) watches a policy file; rejects with a CalleePolicyError. */
  static async load(path: string, options: CalleePolicyLoadOptions = {}): Promise<CalleePolicy> {
    const text = await readPolicyText(path)
    const policy = new CalleePolicy(parseCalleePolicy(text, path), path)
    policy.#text = text
    const pollMs = options.pollMs ?? POLICY_POLL_MS
    if (pollMs > 0) policy.#watch(options.onReload ?? (() => undefined), pollMs)
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

  /** Re-reads the file; on an invalid file the policy in force stays and the error is returned. */
  async reload(): Promise<CalleePolicyError | undefined> {
    return (await this.#reload()).error
  }

  /** A reload: whether it changed the rules, or whether its failure is news (not the last bad file again). */
  async #reload(): Promise<{ changed?: boolean; error?: CalleePolicyError; news?: boolean }> {
    if (this.path === undefined) return {}
    let text: string | undefined
    try {
      text = await readPolicyText(this.path)
      const changed = text !== this.#text
      if (changed) this.#doc = parseCalleePolicy(text, this.path)
      this.#text = text
      this.#failed = undefined
      return { changed }
    } catch (err) {
      const error = err as CalleePolicyError
      const failed = text ?? `${error.code} ${error.message}`
      const news = failed !== this.#failed
      this.#failed = failed
      return { error, news }
    }
  }

  /**
   * Reloads on change: a watch of the file's directory (an atomic rename replaces the inode a file watch
   * holds) plus a poll every `pollMs` (default 2000), for volumes that deliver no events (NFS, Kubernetes
   * ConfigMaps). `onError` hears of each distinct bad file once, not at every poll.
   */
  watch(onError: (err: CalleePolicyError) => void = () => undefined, pollMs = POLICY_POLL_MS): void {
    this.#watch((err) => err !== undefined && onError(err), pollMs)
  }

  #watch(listener: (error: CalleePolicyError | undefined) => void, pollMs: number): void {
    if (this.path === undefined) return
    this.close()
    const reload = (): void =>
      void this.#reload().then(({ changed, error, news }) => {
        if (changed === true) listener(undefined)
        else if (error !== undefined && news === true) listener(error)
      })
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

  close(): void {
    this.#watcher?.close()
    this.#watcher = undefined
    if (this.#poll !== undefined) clearInterval(this.#poll)
    this.#poll = undefined
  }
}
