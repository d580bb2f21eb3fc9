/**
 * openapi.yaml cannot drift from the server: the document is validated, then real responses from both
 * listeners (real mTLS on port 0) are checked against it — status documented for that operation on that
 * listener, content type, the headers that matter, and the body against the response schema.
 */
import { fileURLToPath } from 'node:url'
import { compileErrors, dereference, validate } from '@readme/openapi-parser'
import { Ajv2020, type ValidateFunction } from 'ajv/dist/2020.js'
import addFormats from 'ajv-formats'
import { decodeJwt, decodeProtectedHeader } from 'jose'
import t, { type Test } from 'tap'
import { startHarness, type Harness } from './helpers/harness.js'
import { httpCall, type Response } from './helpers/http.js'

const specFile = fileURLToPath(new URL('../openapi.yaml', import.meta.url))

interface Schema {
  type?: string
  [keyword: string]: unknown
}
interface HeaderObject {
  required?: boolean
  schema?: Schema
}
interface ResponseObject {
  description: string
  headers?: Record<string, HeaderObject>
  content?: Record<string, { schema?: Schema }>
}
interface Operation {
  responses: Record<string, ResponseObject>
}
type PathItem = { servers?: { url: string }[] } & Partial<Record<Method, Operation>>
interface Spec {
  servers?: { url: string }[]
  paths: Record<string, PathItem>
  components: { responses: Record<string, ResponseObject>; schemas: Record<string, Schema> }
}
type Method = 'get' | 'post' | 'put' | 'delete' | 'patch' | 'head' | 'options'
type Listener = 'main' | 'ops'

/**
 * Headers whose presence and value the spec must state exactly: a response that sends one the operation
 * does not document fails, and so does one that lacks a documented one (the spec says "always").
 */
const CHECKED_HEADERS = ['cache-control', 'etag', 'retry-after', 'vary', 'pragma']

const ajv = new Ajv2020({ strict: true, strictTypes: false, allErrors: true })
addFormats.default(ajv)
// OpenAPI 3.1's own schema keywords (annotations for the validator's purposes).
ajv.addVocabulary(['discriminator', 'xml', 'externalDocs', 'example'])
const compiled = new Map<object, ValidateFunction>()
function validator(schema: Schema): ValidateFunction {
  let fn = compiled.get(schema)
  if (fn === undefined) {
    fn = ajv.compile(schema)
    compiled.set(schema, fn)
  }
  return fn
}

function mediaType(value: string): { essence: string; params: Map<string, string> } {
  const [essence = '', ...params] = value.split(';').map((p) => p.trim())
  return {
    essence: essence.toLowerCase(),
    params: new Map(params.map((p) => p.split('=').map((s) => s.trim().toLowerCase()) as [string, string])),
  }
}

/** The documented media type a Content-Type header matches: same type, and every parameter the spec names. */
function matchMediaType(content: Record<string, unknown>, header: string): string | undefined {
  const actual = mediaType(header)
  return Object.keys(content).find((key) => {
    const documented = mediaType(key)
    return documented.essence === actual.essence && [...documented.params].every(([k, v]) => actual.params.get(k) === v)
  })
}

const header = (res: Response, name: string): string | undefined => {
  const value = res.headers[name]
  return Array.isArray(value) ? value.join(', ') : value
}

/** Headers and body of `res` against one documented response. */
function checkResponse(t: Test, definition: ResponseObject, res: Response, label: string): void {
  const documented = new Map(Object.entries(definition.headers ?? {}).map(([name, h]) => [name.toLowerCase(), h]))
  const problems: string[] = []
  for (const name of CHECKED_HEADERS) {
    const value = header(res, name)
    const spec = documented.get(name)
    if (spec === undefined) {
      if (value !== undefined) problems.push(`sends ${name}: ${value}, which the spec does not document`)
    } else if (value === undefined) {
      problems.push(`does not send the documented ${name}`)
    } else if (spec.schema !== undefined) {
      const typed = spec.schema.type === 'integer' && /^\d+$/.test(value) ? Number(value) : value
      const validate = validator(spec.schema)
      if (!validate(typed)) problems.push(`${name}: ${value}: ${ajv.errorsText(validate.errors)}`)
    }
  }
  t.same(problems, [], `${label}: headers as documented`)

  if (definition.content === undefined) {
    t.equal(res.text, '', `${label}: no body, as documented`)
    return
  }
  const contentType = header(res, 'content-type') ?? ''
  const key = matchMediaType(definition.content, contentType)
  t.ok(key, `${label}: content type ${contentType} is documented (${Object.keys(definition.content).join(', ')})`)
  const schema = key === undefined ? undefined : definition.content[key]?.schema
  if (schema === undefined) return
  const essence = mediaType(contentType).essence
  let body: unknown = res.text
  if (essence === 'application/json' || essence.endsWith('+json')) {
    try {
      body = JSON.parse(res.text)
    } catch {
      t.fail(`${label}: body is not JSON: ${res.text.slice(0, 80)}`)
      return
    }
  }
  const validate = validator(schema)
  t.ok(validate(body), `${label}: body matches the schema${validate.errors ? `: ${ajv.errorsText(validate.errors)}` : ''}`)
}

const spec = (await dereference(specFile)) as unknown as Spec
const listenerUrl: Record<Listener, RegExp> = { main: /^https:/, ops: /^http:/ }
/** (path, status) pairs seen, to check that what the spec documents really happens. */
const seen = new Map<string, Set<string>>()

/**
 * Checks a real response against the spec. `path` is the spec's path (undefined for a path the spec does
 * not have). A path or method the listener does not serve must be the documented 404.
 */
function conforms(t: Test, listener: Listener, method: Method, path: string | undefined, res: Response, what = ''): void {
  const label = `${listener} ${method.toUpperCase()} ${path ?? '(unknown path)'} ${what}→ ${res.status}`
  const item = path === undefined ? undefined : spec.paths[path]
  const operation = item?.[method]
  const servers = item?.servers ?? spec.servers ?? []
  const served = operation !== undefined && servers.some((s) => listenerUrl[listener].test(s.url))
  if (path !== undefined) {
    t.ok(item, `${path} is in the spec`)
    if (!seen.has(path)) seen.set(path, new Set())
    seen.get(path)?.add(String(res.status))
  }
  if (!served) {
    t.equal(res.status, 404, `${label}: not served on this listener, so 404`)
    checkResponse(t, operation?.responses['404'] ?? (spec.components.responses.NotFound as ResponseObject), res, label)
    return
  }
  const definition = operation.responses[String(res.status)]
  t.ok(definition, `${label}: status ${res.status} is documented for this operation`)
  if (definition !== undefined) checkResponse(t, definition, res, label)
}

function schemaCheck(t: Test, name: string, value: unknown): void {
  const validate = validator(spec.components.schemas[name] as Schema)
  t.ok(validate(value), `${name}: ${validate.errors ? ajv.errorsText(validate.errors) : 'matches'}`)
}

const json = { 'content-type': 'application/json' }
const form = { 'content-type': 'application/x-www-form-urlencoded' }
/** A request as order-service on the main listener; a POST carries a JSON body. */
const mainCall = (h: Harness, method: Method, path: string, headers: Record<string, string> = {}, body?: string): Promise<Response> =>
  h.call({
    method: method.toUpperCase(),
    path,
    client: h.pki.client('order-service'),
    headers: method === 'post' ? { ...json, ...headers } : headers,
    ...(body === undefined ? {} : { body }),
  })
/** A request on the ops listener. */
const opsCall = (h: Harness, method: Method, path: string, headers: Record<string, string> = {}): Promise<Response> =>
  httpCall(h.opsPort, { method: method.toUpperCase(), path, headers: method === 'post' ? { ...json, ...headers } : headers, ...(method === 'post' ? { body: '{}' } : {}) })

t.test('openapi.yaml is a valid OpenAPI 3.1 document', async (t) => {
  const result = await validate(specFile)
  t.ok(result.valid, result.valid ? 'valid' : compileErrors(result))
  t.same(result.warnings, [], 'no warnings')
})

t.test('POST /token: every answer is the documented one', async (t) => {
  const h = await startHarness(t)
  const token = (body: string, headers: Record<string, string> = json, client = h.pki.client('order-service')): Promise<Response> =>
    h.call({ method: 'POST', path: '/token', client, headers, body })

  const issued = await token('{"audience":"inventory-service","scope":"stock:read"}')
  conforms(t, 'main', 'post', '/token', issued, 'JSON ')
  t.equal(issued.status, 200)
  const accessToken = issued.json<{ access_token: string }>().access_token
  schemaCheck(t, 'AccessTokenHeader', decodeProtectedHeader(accessToken))
  schemaCheck(t, 'AccessTokenClaims', decodeJwt(accessToken))

  const viaForm = await token('grant_type=client_credentials&audience=inventory-service', form)
  t.equal(viaForm.status, 200)
  conforms(t, 'main', 'post', '/token', viaForm, 'form ')
  const noScope = await token('{"audience":"order-service"}', json, h.pki.client('payment-service'))
  conforms(t, 'main', 'post', '/token', noScope, 'payment-service ')

  const faults: [string, string, Record<string, string>, number, string][] = [
    ['malformed JSON', '{"audience":', json, 400, 'invalid_request'],
    ['wrong content type', 'audience=inventory-service', { 'content-type': 'text/plain' }, 400, 'invalid_request'],
    ['unknown field', '{"audience":"inventory-service","sub":"payment-service"}', json, 400, 'invalid_request'],
    ['grant type', 'grant_type=password&audience=inventory-service', form, 400, 'unsupported_grant_type'],
    ['unknown audience', '{"audience":"billing-service"}', json, 400, 'invalid_target'],
    ['scope not granted', '{"audience":"inventory-service","scope":"stock:write"}', json, 400, 'invalid_scope'],
    ['client_id is not the CN', '{"audience":"inventory-service","client_id":"payment-service"}', json, 401, 'invalid_client'],
    ['body over 8 KiB', JSON.stringify({ audience: 'inventory-service', scope: 'x'.repeat(9000) }), json, 413, 'invalid_request'],
  ]
  for (const [what, body, headers, status, error] of faults) {
    const res = await token(body, headers)
    t.equal(res.status, status, what)
    t.same(res.json(), { error }, what)
    conforms(t, 'main', 'post', '/token', res, `(${what}) `)
  }
  const stranger = await token('{"audience":"inventory-service"}', json, h.pki.client('billing-service'))
  t.equal(stranger.status, 401)
  conforms(t, 'main', 'post', '/token', stranger, '(CN unknown to the policy) ')
})

t.test('POST /token: 429 with Retry-After, 503 without a signing key', async (t) => {
  const limited = await startHarness(t, { env: { AUTHZ_RATE_LIMIT: '1' } })
  const ask = (h: Harness): Promise<Response> => mainCall(h, 'post', '/token', {}, '{"audience":"inventory-service"}')
  t.equal((await ask(limited)).status, 200)
  const slow = await ask(limited)
  t.equal(slow.status, 429)
  conforms(t, 'main', 'post', '/token', slow)

  const keyless = await startHarness(t, { noKey: true })
  const unavailable = await ask(keyless)
  t.equal(unavailable.status, 503)
  conforms(t, 'main', 'post', '/token', unavailable)
  const notReady = await opsCall(keyless, 'get', '/readyz')
  t.equal(notReady.status, 503)
  conforms(t, 'ops', 'get', '/readyz', notReady)
  const empty = await opsCall(keyless, 'get', '/.well-known/jwks.json')
  t.same(empty.json(), { keys: [] })
  conforms(t, 'ops', 'get', '/.well-known/jwks.json', empty, '(no key) ')
})

t.test('JWKS on both listeners: both media types, ETag and 304', async (t) => {
  const h = await startHarness(t)
  for (const listener of ['main', 'ops'] as const) {
    const get = (headers: Record<string, string>): Promise<Response> =>
      listener === 'main' ? mainCall(h, 'get', '/.well-known/jwks.json', headers) : opsCall(h, 'get', '/.well-known/jwks.json', headers)
    const plain = await get({ accept: 'application/json' })
    t.match(plain.headers['content-type'], /^application\/json/)
    conforms(t, listener, 'get', '/.well-known/jwks.json', plain, 'application/json ')
    const jwkSet = await get({ accept: 'application/jwk-set+json' })
    t.match(jwkSet.headers['content-type'], /^application\/jwk-set\+json/)
    conforms(t, listener, 'get', '/.well-known/jwks.json', jwkSet, 'jwk-set+json ')
    const notModified = await get({ 'if-none-match': plain.headers.etag as string })
    t.equal(notModified.status, 304)
    conforms(t, listener, 'get', '/.well-known/jwks.json', notModified, 'If-None-Match ')
  }
})

t.test('discovery, health, readiness and metrics', async (t) => {
  const h = await startHarness(t)
  for (const path of ['/.well-known/openid-configuration', '/.well-known/oauth-authorization-server']) {
    const res = await mainCall(h, 'get', path)
    t.equal(res.status, 200)
    conforms(t, 'main', 'get', path, res)
  }
  for (const path of ['/healthz', '/readyz', '/metrics']) {
    const res = await opsCall(h, 'get', path)
    t.equal(res.status, 200, path)
    conforms(t, 'ops', 'get', path, res)
  }
})

t.test('every path on every listener: served where the spec says, 404 elsewhere (there is no 405)', async (t) => {
  const h = await startHarness(t)
  for (const [path, item] of Object.entries(spec.paths)) {
    for (const method of ['get', 'post'] as const) {
      const body = item[method] !== undefined && method === 'post' ? '{"audience":"inventory-service"}' : method === 'post' ? '{}' : undefined
      conforms(t, 'main', method, path, await mainCall(h, method, path, {}, body))
      conforms(t, 'ops', method, path, await opsCall(h, method, path))
    }
  }
  conforms(t, 'main', 'get', undefined, await mainCall(h, 'get', '/nothing-here'))
  conforms(t, 'ops', 'get', undefined, await opsCall(h, 'get', '/nothing-here'))
})

t.test('request headers over 8 KiB: the documented 431 on every path of both listeners, served or not', async (t) => {
  const h = await startHarness(t)
  const definition = spec.components.responses.HeadersTooLarge as ResponseObject | undefined
  t.ok(definition, 'components.responses.HeadersTooLarge is in the spec')
  if (definition === undefined) return
  const big = { 'x-padding': 'a'.repeat(9000) }
  for (const path of ['/token', '/.well-known/jwks.json', '/healthz', '/nothing-here']) {
    for (const [listener, res] of [
      ['main', await mainCall(h, 'post', path, big, '{"audience":"inventory-service"}')],
      ['ops', await opsCall(h, 'get', path, big)],
    ] as const) {
      t.equal(res.status, 431, `${listener} ${path}`)
      t.same(res.json(), { error: 'invalid_request' }, `${listener} ${path}`)
      checkResponse(t, definition, res, `${listener} ${path} (oversize headers)`)
    }
  }
})

t.test('every documented status (but 500) was seen', async (t) => {
  for (const [path, item] of Object.entries(spec.paths)) {
    const documented = new Set(Object.values(item).flatMap((op) => (typeof op === 'object' && op !== null && 'responses' in op ? Object.keys(op.responses) : [])))
    documented.delete('500')
    t.same([...documented].filter((s) => !seen.get(path)?.has(s)), [], `${path}: ${[...documented].join(' ')}`)
  }
})
