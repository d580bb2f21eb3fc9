/**
 * The callee policy document: its format (conformance/callee-policy.schema.json), its parser, and what a
 * rule asks of a caller. `CalleePolicy` (callee-policy.ts) holds one and keeps it fresh.
 */
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

