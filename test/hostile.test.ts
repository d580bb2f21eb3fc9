/**
 * Hostile input, generated: every content type and shape thrown at /token, the ops listener and unknown
 * routes. The answer is always the right 4xx with the bare error body (or a 200 for a valid request),
 * never a 5xx, never a crash, and the server stays healthy.
 */
import { request, Agent } from 'node:https'
import { request as httpRequest, Agent as HttpAgent } from 'node:http'
import fc from 'fast-check'
import t from 'tap'
import { startHarness, type Harness } from './helpers/harness.js'

const CODES_BY_STATUS: Record<number, string[]> = {
  400: ['invalid_request', 'unsupported_grant_type', 'invalid_target', 'invalid_scope'],
  401: ['invalid_client'],
  413: ['invalid_request'],
}

interface Raw {
  status: number
  body: string
}

function send(h: Harness, agent: Agent, opts: { method?: string; path?: string; type?: string | undefined; body?: Buffer; chunks?: number[] }): Promise<Raw> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = {}
    if (opts.type !== undefined) headers['content-type'] = opts.type
    const body = opts.body ?? Buffer.alloc(0)
    const chunked = opts.chunks !== undefined && opts.chunks.length > 0
    if (!chunked) headers['content-length'] = String(body.length)
    const req = request(
      { host: '127.0.0.1', port: h.port, servername: 'localhost', method: opts.method ?? 'POST', path: opts.path ?? '/token', headers, agent },
      (res) => {
        let text = ''
        res.on('data', (c: Buffer) => (text += c.toString()))
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }))
      },
    )
    req.on('error', reject)
    if (chunked) {
      // Transfer-Encoding: chunked, split where the generator says.
      let at = 0
      for (const size of opts.chunks ?? []) {
        if (at >= body.length) break
        req.write(body.subarray(at, at + size))
        at += size
      }
      req.end(body.subarray(at))
    } else req.end(body)
  })
}

function checkTokenAnswer(res: Raw): boolean {
  if (res.status === 200) return JSON.parse(res.body).token_type === 'Bearer'
  const allowed = CODES_BY_STATUS[res.status]
  if (allowed === undefined) return false
  const json = JSON.parse(res.body) as Record<string, unknown>
  return Object.keys(json).length === 1 && allowed.includes(json.error as string)
}

const FIELD = fc.constantFrom('audience', 'resource', 'scope', 'grant_type', 'client_id', 'sub', 'iss', 'exp', '__proto__', 'constructor', 'prototype', 'toString', 'hasOwnProperty', 'aud', '')
const STRINGISH = fc.oneof(
  fc.constantFrom('inventory-service', 'order-service', 'client_credentials', 'stock:read stock:deduct', 'order-service', '__proto__', ''),
  fc.string({ maxLength: 40 }),
  fc.string({ unit: 'grapheme', maxLength: 40 }),
  fc.string({ minLength: 300, maxLength: 3000 }),
)
const VALUE = fc.oneof(STRINGISH, fc.integer(), fc.double(), fc.boolean(), fc.constant(null), fc.array(STRINGISH, { maxLength: 5 }), fc.dictionary(FIELD, STRINGISH, { maxKeys: 3 }))
const CONTENT_TYPE = fc.oneof(
  fc.constantFrom(
    'application/json',
    'application/json; charset=utf-8',
    'APPLICATION/JSON',
    'application/x-www-form-urlencoded',
    'application/x-www-form-urlencoded; charset=utf-8',
    'text/plain',
    'multipart/form-data; boundary=x',
    'application/xml',
    'application/json-patch+json',
    '*/*',
    '',
  ),
  fc.constant(undefined),
  fc.string({ maxLength: 30 }),
)
const CHUNKS = fc.option(fc.array(fc.integer({ min: 1, max: 64 }), { minLength: 1, maxLength: 20 }), { nil: undefined })

let tried = 0
const seen = new Map<number, number>()

t.test('POST /token with generated hostile bodies: always the right 4xx (or 200), never a 5xx', async (t) => {
  const h = await startHarness(t, { env: { AUTHZ_RATE_LIMIT: '0' } })
  const client = h.pki.client('order-service')
  const agent = new Agent({ keepAlive: true, maxSockets: 4, ca: h.pki.ca.certPem, cert: client.certPem, key: client.keyPem })
  t.teardown(() => agent.destroy())
  const check = async (opts: Parameters<typeof send>[2]): Promise<boolean> => {
    tried++
    const res = await send(h, agent, opts)
    seen.set(res.status, (seen.get(res.status) ?? 0) + 1)
    if (!checkTokenAnswer(res)) throw new Error(`unexpected answer ${res.status} ${res.body.slice(0, 200)}`)
    return true
  }

  // JSON objects made of dangerous keys and wrong-typed values, under JSON and other content types.
  await fc.assert(
    fc.asyncProperty(
      fc.oneof(fc.dictionary(FIELD, VALUE, { maxKeys: 6 }), fc.constant({ audience: 'inventory-service', scope: ['stock:read'] })),
      fc.oneof(CONTENT_TYPE, fc.constant('application/json')),
      CHUNKS,
      (obj, type, chunks) =>
      check({ type, body: Buffer.from(JSON.stringify(obj)), ...(chunks === undefined ? {} : { chunks }) }),
    ),
    { numRuns: 800 },
  )
  // Arbitrary JSON documents (numbers, arrays, strings, nulls at the top) as JSON.
  await fc.assert(fc.asyncProperty(fc.json({ maxDepth: 6 }), (text) => check({ type: 'application/json', body: Buffer.from(text) })), { numRuns: 500 })
  // Deep nesting and huge documents.
  await fc.assert(
    fc.asyncProperty(fc.integer({ min: 1, max: 6000 }), fc.constantFrom('[', '{"a":'), (depth, open) => {
      const close = open === '[' ? ']' : '}'
      return check({ type: 'application/json', body: Buffer.from(open.repeat(depth) + '1' + close.repeat(depth)) })
    }),
    { numRuns: 60 },
  )
  // Form bodies: repeated, unknown and prototype-named parameters, odd encodings.
  await fc.assert(
    fc.asyncProperty(fc.array(fc.tuple(FIELD, STRINGISH), { maxLength: 8 }), fc.boolean(), CHUNKS, (pairs, raw, chunks) => {
      const body = raw
        ? pairs.map(([k, v]) => `${k}=${v}`).join('&')
        : new URLSearchParams(pairs.map(([k, v]): [string, string] => [k, v])).toString()
      return check({ type: 'application/x-www-form-urlencoded', body: Buffer.from(body), ...(chunks === undefined ? {} : { chunks }) })
    }),
    { numRuns: 600 },
  )
  // Raw bytes: invalid UTF-8, NULs, binary, up to past the body limit, under any content type.
  await fc.assert(
    fc.asyncProperty(fc.uint8Array({ maxLength: 10_000 }), CONTENT_TYPE, CHUNKS, (bytes, type, chunks) =>
      check({ type, body: Buffer.from(bytes), ...(chunks === undefined ? {} : { chunks }) }),
    ),
    { numRuns: 500 },
  )
  // Valid JSON with an invalid UTF-8 sequence inside a string.
  await fc.assert(
    fc.asyncProperty(fc.uint8Array({ minLength: 1, maxLength: 8 }), (junk) =>
      check({ type: 'application/json', body: Buffer.concat([Buffer.from('{"audience":"'), Buffer.from([0xc3, 0x28, ...junk]), Buffer.from('"}')]) }),
    ),
    { numRuns: 60 },
  )

  t.comment(`answers by status: ${JSON.stringify(Object.fromEntries(seen))}`)
  for (const status of [200, 400, 401, 413]) t.ok((seen.get(status) ?? 0) > 0, `the generators reached ${status}`)
  t.equal((await h.opsCall('/healthz')).status, 200, 'healthy afterwards')
  t.equal((await h.token({ audience: 'inventory-service' })).status, 200, 'and still issuing')
  t.notOk(h.logs.records().some((r) => (r.level as number) >= 50), 'no error was logged')
})

t.test('unknown paths and methods, on both listeners: 404 (or the route answer), never a 5xx', async (t) => {
  const h = await startHarness(t)
  const client = h.pki.client('order-service')
  const agent = new Agent({ keepAlive: true, maxSockets: 4, ca: h.pki.ca.certPem, cert: client.certPem, key: client.keyPem })
  const opsAgent = new HttpAgent({ keepAlive: true, maxSockets: 4 })
  t.teardown(() => {
    agent.destroy()
    opsAgent.destroy()
  })
  const METHOD = fc.constantFrom('GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS')
  const PATH = fc.oneof(
    fc.constantFrom('/token', '/healthz', '/readyz', '/metrics', '/.well-known/jwks.json', '/.well-known/openid-configuration', '/%2e%2e/etc/passwd', '/token/', '//token', '/token?x=1', '/.well-known/../token'),
    fc.webPath().map((p) => (p.startsWith('/') ? p : `/${p}`)),
  )
  const ops = (method: string, path: string): Promise<number> =>
    new Promise((resolve, reject) => {
      const req = httpRequest({ host: '127.0.0.1', port: h.opsPort, method, path, agent: opsAgent }, (res) => {
        res.resume()
        res.on('end', () => resolve(res.statusCode ?? 0))
      })
      req.on('error', reject)
      req.end()
    })
  await fc.assert(
    fc.asyncProperty(METHOD, PATH, async (method, path) => {
      tried += 2
      const main = await send(h, agent, { method, path, type: 'application/json', body: Buffer.from('{}') })
      const opsStatus = await ops(method, path)
      return main.status >= 200 && main.status < 500 && opsStatus >= 200 && opsStatus < 500
    }),
    { numRuns: 600 },
  )
  t.equal((await h.opsCall('/healthz')).status, 200)
  t.comment(`hostile inputs tried: ${tried}`)
})
