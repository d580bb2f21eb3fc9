import t from 'tap'
import { decide, parsePolicy, parseScopes } from '../../src/policy/policy.js'
import { SAMPLE_POLICY } from '../helpers/harness.js'

const sample = parsePolicy(JSON.stringify(SAMPLE_POLICY))

t.test('the shipped sample policy is valid', async (t) => {
  const { readFile } = await import('node:fs/promises')
  const shipped = parsePolicy(await readFile(new URL('../../config/service-policy.json', import.meta.url), 'utf8'))
  t.same([...shipped.grants.keys()], ['order-service', 'payment-service'])
})

t.test('an invalid policy names the bad entry', async (t) => {
  const bad = (doc: unknown): string => {
    try {
      parsePolicy(typeof doc === 'string' ? doc : JSON.stringify(doc), 'p.json')
    } catch (err) {
      t.equal((err as { code: string }).code, 'ERR_POLICY_INVALID')
      return (err as Error).message
    }
    return 'accepted'
  }
  t.match(bad('{'), /^p\.json: not valid JSON/)
  t.match(bad({ audiences: [] }), /must have required property 'grants'/)
  t.match(bad({ audiences: ['a'], grants: {}, extra: 1 }), /unknown field "extra"/)
  t.match(bad({ audiences: ['a', 'a'], grants: {} }), /audiences/)
  t.match(bad({ audiences: ['a b'], grants: {} }), /audiences\[0\]: not a valid service name/)
  t.match(bad({ audiences: ['a'], grants: { b: { c: ['x:y'] } } }), /grants\["b"\]\["c"\]: audience is not listed in "audiences"/)
  t.match(bad({ audiences: ['a'], grants: { b: { a: ['bad scope'] } } }), /grants\["b"\]\["a"\]\[0\]: not a valid scope/)
  t.match(bad({ audiences: ['a'], grants: { b: { a: 'x:y' } } }), /grants\["b"\]\["a"\]: must be array/)
  t.match(bad({ audiences: ['a'], grants: { 'b c': {} } }), /name "b c" is not a valid service name/)
  t.equal(bad({ audiences: [], grants: {} }), 'accepted', 'an empty policy denies everything, and is valid')
})

t.test('the policy\'s callers must fit the identity mode: CNs for cn, SPIFFE IDs of a trusted domain for spiffe', async (t) => {
  const spiffe = { kind: 'spiffe', trustDomains: ['example.org', 'prod.example.org'] } as const
  const order = 'spiffe://example.org/ns/default/sa/order'
  const doc = (caller: string) => JSON.stringify({ audiences: ['a'], grants: { [caller]: { a: ['x:y'] } } })
  const policy = parsePolicy(doc(order), 'p.json', spiffe)
  t.same(decide(policy, order, 'a', undefined), { allowed: true, scopes: ['x:y'] })
  t.match(decide(policy, 'order-service', 'a', undefined), { error: 'invalid_client' })
  const long = `spiffe://example.org/${'a'.repeat(2048 - 'spiffe://example.org/'.length)}`
  t.equal(parsePolicy(doc(long), 'p.json', spiffe).grants.has(long), true, 'a SPIFFE ID of 2048 characters')
  const refused: [string, typeof spiffe | undefined, RegExp][] = [
    ['order-service', spiffe, /^p\.json: grants\["order-service"\]: caller is not a SPIFFE ID \(AUTHZ_IDENTITY=spiffe\): does not start with spiffe:\/\//],
    ['spiffe://evil.org/ns/default/sa/order', spiffe, /grants\["spiffe:\/\/evil\.org\/ns\/default\/sa\/order"\]: caller trust domain "evil\.org" is not in AUTHZ_SPIFFE_TRUST_DOMAINS/],
    ['spiffe://example.org', spiffe, /names a trust domain, not a workload/],
    ['spiffe://example.org/ns/../sa/order', spiffe, /"\." or "\.\." segment/],
    ['spiffe://example.org/ns/default/sa/order/', spiffe, /ends with "\/"/],
    ['spiffe://Example.org/ns/default/sa/order', spiffe, /lowercase/],
    ['spiffe://example.org/ns/%64efault/sa/order', spiffe, /no percent-encoding/],
    [`${long}b`, spiffe, /longer than 2048/],
    [order, undefined, /^p\.json: grants\["spiffe:\/\/example\.org\/ns\/default\/sa\/order"\]: caller is a SPIFFE ID, but AUTHZ_IDENTITY is cn/],
    ['SPIFFE://example.org/x', undefined, /is a SPIFFE ID, but AUTHZ_IDENTITY is cn/],
    ['a'.repeat(256), undefined, /caller is not a valid service name/],
  ]
  for (const [caller, mode, message] of refused) {
    t.throws(() => parsePolicy(doc(caller), 'p.json', mode), { code: 'ERR_POLICY_INVALID', message }, caller.slice(0, 80))
  }
})

t.test('decide: deny by default, in the wire order', async (t) => {
  t.same(decide(sample, 'billing-service', 'inventory-service', undefined), { allowed: false, error: 'invalid_client', reason: 'unknown_caller' })
  t.same(decide(sample, 'order-service', 'nope', undefined), { allowed: false, error: 'invalid_target', reason: 'unknown_audience' })
  t.same(decide(sample, 'order-service', 'payment-service', undefined), { allowed: false, error: 'invalid_target', reason: 'no_grant' })
  t.match(decide(sample, 'order-service', 'inventory-service', 'stock:read stock:write'), {
    allowed: false,
    error: 'invalid_scope',
    reason: 'scope_not_granted',
    missing: ['stock:write'],
    granted: ['stock:read', 'stock:deduct'],
  })
  t.match(decide(sample, 'order-service', 'inventory-service', ['a"b']), { error: 'invalid_scope', reason: 'malformed_scope' })
  t.same(decide(sample, 'order-service', 'inventory-service', undefined), { allowed: true, scopes: ['stock:read', 'stock:deduct'] })
  t.same(decide(sample, 'order-service', 'inventory-service', 'stock:deduct'), { allowed: true, scopes: ['stock:deduct'] })
})

t.test('no prototype tricks: __proto__ and constructor are just unknown names', async (t) => {
  const policy = parsePolicy('{"audiences":["__proto__"],"grants":{"__proto__":{"__proto__":["x:y"]}}}')
  t.same(decide(policy, '__proto__', '__proto__', undefined), { allowed: true, scopes: ['x:y'] })
  t.match(decide(sample, 'constructor', 'inventory-service', undefined), { error: 'invalid_client' })
  t.match(decide(sample, 'order-service', 'constructor', undefined), { error: 'invalid_target' })
  t.match(decide(sample, 'order-service', 'toString', undefined), { error: 'invalid_target' })
})

t.test('parseScopes', async (t) => {
  t.same(parseScopes(undefined), [])
  t.same(parseScopes(''), [])
  t.same(parseScopes('a:b  c:d a:b'), ['a:b', 'c:d'])
  t.same(parseScopes(['a:b', 'a:b']), ['a:b'])
  t.equal(parseScopes(['a b']), null)
  t.equal(parseScopes(['']), null)
  t.equal(parseScopes('a\\b'), null)
})
