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
 * Route keys are `METHOD <route pattern>` as registered with Fastify, or a gRPC method path.
 */
import { readFile } from 'node:fs/promises'
import { dirname } from 'node:path'
import { Ajv } from 'ajv'
import { SCOPE_TOKEN, SERVICE_NAME } from '../policy/policy.js'
import { watchDir, type Watcher } from '../util/watch.js'
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

const schema = {
  type: 'object',
  additionalProperties: false,
  required: ['routes'],
  properties: {
    $schema: { type: 'string' },
    service: { type: 'string', pattern: SERVICE_NAME },
    routes: {
      type: 'object',
      propertyNames: { pattern: '^((GET|HEAD|POST|PUT|PATCH|DELETE|OPTIONS) )?/\\S*$' },
      additionalProperties: {
        type: 'object',
        additionalProperties: false,
        required: ['scopes'],
        properties: {
          scopes: { type: 'array', uniqueItems: true, items: { type: 'string', pattern: SCOPE_TOKEN } },
          callers: { type: 'array', uniqueItems: true, items: { type: 'string', pattern: SERVICE_NAME } },
        },
      },
    },
  },
} as const

const validate = new Ajv({ strict: true }).compile<CalleePolicyDocument>(schema)

/** Parses a callee policy; throws an Error naming the bad entry. */
export function parseCalleePolicy(text: string, source = 'policy'): CalleePolicyDocument {
  let doc: unknown
  try {
    doc = JSON.parse(text)
  } catch {
    throw new Error(`${source}: not valid JSON`)
  }
  if (!validate(doc)) {
    const e = validate.errors?.[0] as ({ propertyName?: string } & NonNullable<typeof validate.errors>[number]) | undefined
    if (e?.propertyName !== undefined) throw new Error(`${source}: route key ${JSON.stringify(e.propertyName)} must be "METHOD /path" or a gRPC "/pkg.Service/Method"`)
    throw new Error(`${source}: ${e?.instancePath ?? ''} ${e?.message ?? 'invalid'}`.trim())
  }
  return doc
}

export type Decision = 'allow' | 'forbidden' | 'unlisted'

/** Does this caller satisfy this rule? */
export function satisfies(caller: VerifiedCaller, rule: RouteRule): boolean {
  if (rule.callers !== undefined && !rule.callers.includes(caller.service)) return false
  return rule.scopes.every((s) => caller.scopes.includes(s))
}

/** A callee policy held in memory and reloaded from its file on change; a bad file keeps the old one. */
export class CalleePolicy {
  #doc: CalleePolicyDocument
  #watcher: Watcher | undefined
  readonly path: string | undefined

  constructor(doc: CalleePolicyDocument, path?: string) {
    this.#doc = doc
    this.path = path
  }

  static async load(path: string): Promise<CalleePolicy> {
    return new CalleePolicy(parseCalleePolicy(await readFile(path, 'utf8'), path), path)
  }

  /** The rule of a route key (`GET /stock/:sku`, `/pkg.Service/Method`), if the policy has one. */
  rule(key: string): RouteRule | undefined {
    return Object.hasOwn(this.#doc.routes, key) ? this.#doc.routes[key] : undefined
  }

  /** allow / forbidden for a listed route; `unlisted` when the policy says nothing about it. */
  decide(key: string, caller: VerifiedCaller): Decision {
    const rule = this.rule(key)
    if (rule === undefined) return 'unlisted'
    return satisfies(caller, rule) ? 'allow' : 'forbidden'
  }

  /** Re-reads the file; on an invalid file the policy in force stays and the error is returned. */
  async reload(): Promise<Error | undefined> {
    if (this.path === undefined) return undefined
    try {
      this.#doc = parseCalleePolicy(await readFile(this.path, 'utf8'), this.path)
      return undefined
    } catch (err) {
      return err as Error
    }
  }

  watch(onError: (err: Error) => void = () => undefined, pollMs = 5000): void {
    if (this.path === undefined) return
    this.#watcher?.close()
    this.#watcher = watchDir(dirname(this.path), () => void this.reload().then((err) => err && onError(err)), { pollMs })
  }

  close(): void {
    this.#watcher?.close()
  }
}
