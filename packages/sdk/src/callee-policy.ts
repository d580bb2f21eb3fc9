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
import { watch, type FSWatcher } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { basename, dirname } from 'node:path'
import { CalleePolicyError } from './errors.js'
import { isScopeToken, isServiceName } from './grammar.js'
import type { VerifiedCaller } from './verifier.js'

/** What one route requires of its caller. */
export interface RouteRule {
  /** Every one of these scopes is required. */
  readonly scopes: readonly string[]
  /** When present, only these callers may call the route. */
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

const HTTP_KEY = /^(GET|POST|PUT|PATCH|DELETE|OPTIONS) \/\S*$/
const IDENT = '[A-Za-z_][A-Za-z0-9_]*'
const GRPC_KEY = new RegExp(`^/${IDENT}(\\.${IDENT})+/${IDENT}$`)

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v)
const pointer = (...parts: string[]): string => parts.map((p) => `/${p.replace(/~/g, '~0').replace(/\//g, '~1')}`).join('')

function checkList(source: string, entry: string, value: unknown, valid: (v: unknown) => boolean, what: string): readonly string[] {
  if (!Array.isArray(value)) throw new CalleePolicyError('ERR_POLICY_INVALID', source, entry, `${entry}: must be an array of ${what}`)
  value.forEach((item, i) => {
    if (!valid(item)) throw new CalleePolicyError('ERR_POLICY_INVALID', source, `${entry}/${i}`, `${entry}/${i}: not a valid ${what}`)
  })
  if (new Set(value).size !== value.length) throw new CalleePolicyError('ERR_POLICY_INVALID', source, entry, `${entry}: repeats an item`)
  return Object.freeze([...(value as string[])])
}

/** Parses and validates a callee policy; throws a CalleePolicyError naming the bad entry. */
export function parseCalleePolicy(text: string, source = 'policy'): CalleePolicyDocument {
  let doc: unknown
  try {
    doc = JSON.parse(text)
  } catch {
    throw new CalleePolicyError('ERR_POLICY_JSON', source, '', 'not valid JSON')
  }
  if (!isObject(doc)) throw new CalleePolicyError('ERR_POLICY_INVALID', source, '', 'must be a JSON object')
  for (const name of Object.keys(doc)) {
    if (name !== '$schema' && name !== 'service' && name !== 'routes') {
      throw new CalleePolicyError('ERR_POLICY_INVALID', source, pointer(name), `unknown property ${JSON.stringify(name)}`)
    }
  }
  if (doc.service !== undefined && !isServiceName(doc.service)) throw new CalleePolicyError('ERR_POLICY_INVALID', source, '/service', '/service: not a valid service name')
  if (!isObject(doc.routes)) throw new CalleePolicyError('ERR_POLICY_INVALID', source, '/routes', '/routes: must be an object of route rules')
  const routes: Record<string, RouteRule> = Object.create(null) as Record<string, RouteRule>
  for (const [key, value] of Object.entries(doc.routes)) {
    const entry = pointer('routes', key)
    if (!HTTP_KEY.test(key) && !GRPC_KEY.test(key)) {
      const why = key.startsWith('HEAD ') ? ' (HEAD is governed by the GET rule of the same route)' : ''
      throw new CalleePolicyError('ERR_POLICY_ROUTE_KEY', source, entry, `route key ${JSON.stringify(key)} must be "METHOD /path" or a gRPC "/package.Service/Method"${why}`)
    }
    if (!isObject(value)) throw new CalleePolicyError('ERR_POLICY_INVALID', source, entry, `${entry}: must be an object`)
    for (const name of Object.keys(value)) {
      if (name !== 'scopes' && name !== 'callers') throw new CalleePolicyError('ERR_POLICY_INVALID', source, `${entry}${pointer(name)}`, `${entry}: unknown property ${JSON.stringify(name)}`)
    }
    const scopes = checkList(source, `${entry}/scopes`, value.scopes, isScopeToken, 'scope-token')
    const callers = value.callers === undefined ? undefined : checkList(source, `${entry}/callers`, value.callers, isServiceName, 'service name')
    routes[key] = Object.freeze(callers === undefined ? { scopes } : { scopes, callers })
  }
  return Object.freeze({ ...(doc.service === undefined ? {} : { service: doc.service as string }), routes: Object.freeze(routes) })
}

async function readPolicy(path: string): Promise<CalleePolicyDocument> {
  let text: string
  try {
    text = await readFile(path, 'utf8')
  } catch (err) {
    throw new CalleePolicyError('ERR_POLICY_READ', path, '', `cannot read: ${(err as NodeJS.ErrnoException).code ?? 'error'}`)
  }
  return parseCalleePolicy(text, path)
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

/** A callee policy held in memory and reloaded from its file on change; a bad file keeps the old one. */
export class CalleePolicy {
  #doc: CalleePolicyDocument
  #watcher: FSWatcher | undefined
  #poll: NodeJS.Timeout | undefined
  readonly path: string | undefined

  constructor(doc: CalleePolicyDocument = { routes: {} }, path?: string) {
    this.#doc = doc
    this.path = path
  }

  static async load(path: string): Promise<CalleePolicy> {
    return new CalleePolicy(await readPolicy(path), path)
  }

  /** The rule of a route key (`GET /stock/:sku`, `/pkg.Service/Method`); a `HEAD` key finds its `GET` rule. */
  rule(key: string): RouteRule | undefined {
    const lookup = key.startsWith('HEAD ') ? `GET ${key.slice(5)}` : key
    return Object.hasOwn(this.#doc.routes, lookup) ? this.#doc.routes[lookup] : undefined
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
    if (this.path === undefined) return undefined
    try {
      this.#doc = await readPolicy(this.path)
      return undefined
    } catch (err) {
      return err as CalleePolicyError
    }
  }

  /**
   * Reloads on change: a watch of the file's directory (an atomic rename replaces the inode a file watch
   * holds) plus a poll every `pollMs`, for volumes that deliver no events (NFS, Kubernetes ConfigMaps).
   */
  watch(onError: (err: CalleePolicyError) => void = () => undefined, pollMs = 5000): void {
    if (this.path === undefined) return
    this.close()
    const reload = (): void => void this.reload().then((err) => err && onError(err))
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
