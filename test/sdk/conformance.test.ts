/**
 * conformance/: the vectors both kits must pass (the Go kit runs the same files in
 * clients/go/conformance_test.go). One code list, the callee-policy schema and grammar, policy documents
 * with their verdicts and decisions through the whole receiving pipeline, and token mutations.
 */
import { generateKeyPairSync, randomBytes, type KeyObject } from 'node:crypto'
import { Ajv2020 } from 'ajv/dist/2020.js'
import t from 'tap'
import { CalleePolicy, GRPC_ROUTE_KEY, HTTP_ROUTE_KEY, parseCalleePolicy } from '../../packages/sdk/src/callee-policy.js'
import { ManualClock } from '../../packages/sdk/src/clock.js'
import { CalleeCounters } from '../../packages/sdk/src/callee-counters.js'
import { CALLEE_POLICY_ERROR_CODES, CalleePolicyError, DENIAL_REASONS, VERIFY_ERROR_CODES, VerifyError, type DenialReason } from '../../packages/sdk/src/errors.js'
import { isSpiffeId, SCOPE_TOKEN, SERVICE_NAME, SPIFFE_ID, SPIFFE_ID_MAX_LENGTH } from '../../packages/sdk/src/grammar.js'
import { parseWorkloadId } from '../../src/identity/spiffe-id.js'
import { createGuard, type CallOutcome } from '../../packages/sdk/src/guard.js'
import type { Algorithm } from '../../packages/sdk/src/key-set.js'
import { createVerifier } from '../../packages/sdk/src/verifier.js'
import { conformanceKeys, mintCase, readVectors, type PolicyVector, type TokenCase, type TokenVectors } from '../helpers/conformance.js'

interface Codes {
  verifyErrorCodes: { code: string }[]
  denialReasons: { reason: string; status: number; grpc: string }[]
  calleePolicyErrorCodes: { code: string }[]
}
type Schema = { $defs: Record<string, { pattern?: string; maxLength?: number }> }

const codes = readVectors<Codes>('codes.json')
const schema = readVectors<Schema>('callee-policy.schema.json')
const policies = readVectors<{ documents: PolicyVector[] }>('callee-policies.json').documents
const tokens = readVectors<TokenVectors>('tokens.json')
const keys = conformanceKeys()
const NOW = Date.UTC(2026, 0, 1, 12) // a whole second: boundaries are exact
const thumbprints = { caller: randomBytes(32).toString('base64url'), other: randomBytes(32).toString('base64url') }

t.test('one code list: VerifyError codes, denial reasons and policy error codes are conformance/codes.json', async (t) => {
  t.same([...VERIFY_ERROR_CODES], codes.verifyErrorCodes.map((c) => c.code))
  t.same([...DENIAL_REASONS], codes.denialReasons.map((r) => r.reason))
  t.same([...CALLEE_POLICY_ERROR_CODES], codes.calleePolicyErrorCodes.map((c) => c.code))
  t.notOk((VERIFY_ERROR_CODES as readonly string[]).includes('ERR_TOKEN_INVALID'), 'ERR_TOKEN_INVALID is gone: verify fails with one of the codes only')
  for (const r of codes.denialReasons) t.equal(r.status === 401 ? 'UNAUTHENTICATED' : 'PERMISSION_DENIED', r.grpc, `${r.reason}: status and gRPC code agree`)
})

t.test('the grammar is the schema: the kit parses with the patterns conformance/callee-policy.schema.json holds', async (t) => {
  const defs = schema.$defs
  t.equal(defs.scopeToken?.pattern, SCOPE_TOKEN)
  t.equal(defs.serviceName?.pattern, SERVICE_NAME)
  t.equal(defs.spiffeId?.pattern, SPIFFE_ID)
  t.equal(defs.spiffeId?.maxLength, SPIFFE_ID_MAX_LENGTH)
  t.equal(defs.httpRouteKey?.pattern, HTTP_ROUTE_KEY)
  t.equal(defs.grpcRouteKey?.pattern, GRPC_ROUTE_KEY)
})

t.test("the issuer's SPIFFE ID grammar (AUTHZ_IDENTITY=spiffe) is the kits': every spiffe: caller of the vectors", async (t) => {
  const callers = new Map<string, boolean>()
  for (const v of policies) {
    const routes = (v.document as { routes?: Record<string, { callers?: unknown }> } | undefined)?.routes
    for (const rule of Object.values(routes ?? {})) {
      for (const caller of Array.isArray(rule?.callers) ? rule.callers : []) {
        if (typeof caller === 'string' && caller.toLowerCase().startsWith('spiffe:')) callers.set(caller, 'valid' in v.expect)
      }
    }
  }
  t.ok(callers.size >= 20, `${callers.size} SPIFFE IDs`)
  for (const [id, valid] of callers) {
    t.equal(isSpiffeId(id), valid, `the SDK: ${id.slice(0, 60)}`)
    t.equal(parseWorkloadId(id).ok, valid, `the issuer: ${id.slice(0, 60)}`)
  }
})

t.test('callee-policy documents: the parser and the JSON Schema give each vector its verdict', async (t) => {
  const ajv = new Ajv2020({ allErrors: false, strict: true })
  const validate = ajv.compile(schema)
  for (const v of policies) {
    const text = v.text ?? JSON.stringify(v.document)
    let got: unknown
    try {
      parseCalleePolicy(text, 'vector')
      got = { valid: true }
    } catch (err) {
      got = err instanceof CalleePolicyError ? { code: err.code, entry: err.entry } : String(err)
    }
    t.same(got, v.expect, `parser: ${v.name}`)
    let doc: unknown
    try {
      doc = JSON.parse(text)
    } catch {
      continue // not JSON: nothing for the schema to say
    }
    t.equal(validate(doc), 'valid' in v.expect, `schema: ${v.name}`)
  }
})

t.test('decisions: each request through the receiving pipeline (peer, token, verify, policy) and its outcome', async (t) => {
  const clock = new ManualClock(NOW)
  const verifier = await createVerifier({ issuer: tokens.verifier.issuer, audience: 'inventory-service', keys: keys.jwks, clock })
  t.teardown(() => verifier.close())
  const nowSec = NOW / 1000
  const mint = (caller: string, scopes: string[], extra: Partial<TokenCase> = {}): string =>
    mintCase(tokens, { name: '', expect: 'accepted', claims: { sub: caller, client_id: caller, jti: randomBytes(8).toString('hex'), scope: scopes.join(' '), ...extra.claims }, ...extra }, keys, nowSec, thumbprints)
  let counted = 0
  for (const v of policies.filter((p) => p.decisions !== undefined)) {
    const outcomes: CallOutcome[] = []
    const guard = createGuard({ verifier, policy: new CalleePolicy(parseCalleePolicy(JSON.stringify(v.document))), onDecision: (o) => outcomes.push(o) })
    for (const d of v.decisions ?? []) {
      const token = mint(d.caller, d.scopes)
      const tokensSent = {
        missing: undefined,
        empty: [''],
        twice: [token, token],
        'other-certificate': [token],
        expired: [mint(d.caller, d.scopes, { claims: { iat: { now: -700 }, exp: { now: -100 } } })],
        forged: [mint(d.caller, d.scopes, { sign: 'rs256-foreign-key' })],
        bound: [token],
      }[d.token ?? 'bound']
      const peerThumbprint = d.peer === 'none' ? undefined : d.token === 'other-certificate' ? thumbprints.other : thumbprints.caller
      const key = d.grpc ?? `${d.http?.method} ${d.http?.route ?? d.http?.path}`
      const name = `${v.name}: ${key} as ${d.caller} [${d.scopes.join(' ')}]${d.token === undefined ? '' : ` token ${d.token}`}${d.peer === undefined ? '' : ' no peer'}`
      const verdict = await guard({ peerThumbprint, tokens: tokensSent, key, path: d.grpc ?? d.http?.path ?? '', method: d.http?.method })
      const got = verdict.allowed ? 'allow' : { status: verdict.status, reason: verdict.reason, ...(verdict.sub === undefined ? {} : { sub: verdict.sub }), ...(verdict.aud === undefined ? {} : { aud: verdict.aud }) }
      t.same(got, d.expect, name)
      t.match(outcomes.at(-1), d.expect === 'allow' ? { allowed: true, sub: d.caller, aud: 'inventory-service' } : { allowed: false, ...d.expect }, `${name}: onDecision told`)
      counted++
    }
  }
  t.ok(counted > 40, `${counted} decisions`)
})

t.test('token verification: each mutation of a good token is accepted or refused with its code, and says whose it was when it may', async (t) => {
  const nowSec = NOW / 1000
  for (const c of tokens.cases) {
    const options = { ...tokens.verifier, ...c.verifier }
    const verifier = await createVerifier({
      issuer: options.issuer,
      audience: options.audience,
      keys: keys.jwks,
      algorithms: options.algorithms as Algorithm[],
      leeway: options.leeway,
      ...(options.maxLifetime === undefined ? {} : { maxLifetime: options.maxLifetime }),
      allowNoPeer: options.allowNoPeer,
      clock: new ManualClock(NOW),
    })
    const token = mintCase(tokens, c, keys, nowSec, thumbprints)
    const peer = c.peer ?? 'caller'
    const got = await verifier.verify(token, peer === 'none' ? {} : { peerThumbprint: thumbprints[peer] }).then(
      () => 'accepted' as const,
      (err: unknown) =>
        err instanceof VerifyError
          ? { code: err.code, ...(err.subject === undefined ? {} : { sub: err.subject }), ...(err.audience === undefined ? {} : { aud: err.audience }) }
          : { code: `not a VerifyError: ${String(err)}` },
    )
    t.same(got, c.expect, c.name)
    verifier.close()
  }
})

interface KeySetCase {
  readonly name: string
  readonly algorithms?: Algorithm[]
  readonly keys?: Record<string, unknown>[]
  readonly raw?: string
  readonly expect: { kids: string[] } | { code: string }
}

t.test('static key sets: the kids each kit trusts, or ERR_JWKS_INVALID', async (t) => {
  const cases = readVectors<{ cases: KeySetCase[] }>('key-sets.json').cases
  const publicJwk = (key: KeyObject) => key.export({ format: 'jwk' }) as Record<string, unknown>
  const material: Record<string, Record<string, unknown>> = {
    rsa: publicJwk(generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey),
    'rsa-1024': publicJwk(generateKeyPairSync('rsa', { modulusLength: 1024 }).publicKey),
    ec: publicJwk(generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey),
    'ec-p384': publicJwk(generateKeyPairSync('ec', { namedCurve: 'P-384' }).publicKey),
  }
  for (const c of cases) {
    const jwks =
      c.raw ??
      JSON.stringify({
        keys: (c.keys ?? []).map((entry) => {
          const { key, kid, drop, set, ...members } = entry as { key?: string; kid?: string | null; drop?: string[]; set?: Record<string, unknown> }
          const jwk: Record<string, unknown> = { ...(key === undefined ? {} : material[key]), ...members, ...(kid === null || kid === undefined ? {} : { kid }) }
          for (const [name, value] of Object.entries(set ?? {})) jwk[name] = typeof value === 'object' && value !== null && 'copy' in value ? jwk[(value as { copy: string }).copy] : value
          for (const name of drop ?? []) delete jwk[name]
          return jwk
        }),
      })
    const got = await createVerifier({ issuer: 'https://authz.internal', audience: 'inventory-service', keys: jwks, algorithms: c.algorithms ?? ['RS256'] }).then(
      (v) => {
        v.close()
        return { kids: [...v.kids].sort() }
      },
      (err: unknown) => ({ code: err instanceof VerifyError ? err.code : String(err) }),
    )
    t.same(got, c.expect, c.name)
  }
})

t.test('callee counters: after the same observations, the same Prometheus text as the Go kit', async (t) => {
  const vectors = readVectors<{
    observations: { allowed?: boolean; denied?: DenialReason; status?: 401 | 403; policyReload?: 'failed' | 'succeeded' }[]
    exposition: string[]
  }>('callee-counters.json')
  const counters = new CalleeCounters()
  for (const o of vectors.observations) {
    if (o.policyReload !== undefined) counters.observePolicyReload(o.policyReload === 'failed' ? new Error('the source cannot be read') : undefined)
    else if (o.allowed === true) counters.observe({ allowed: true, path: '/', sub: 's', aud: 'a' })
    else counters.observe({ allowed: false, status: o.status ?? 401, reason: o.denied as DenialReason, path: '/' })
  }
  t.equal(counters.prometheus(), `${vectors.exposition.join('\n')}\n`)
})
