import t from 'tap'
import { ConfigError } from '../src/errors.js'
import { loadConfig } from '../src/config.js'

const variableOf = (fn: () => unknown): string | undefined => {
  try {
    fn()
  } catch (err) {
    if (err instanceof ConfigError) return err.variable
    throw err
  }
  return undefined
}

t.test('defaults', async (t) => {
  const config = loadConfig({}, '/srv')
  t.match(config, {
    issuer: 'https://authz.internal',
    host: '127.0.0.1', // dev mode (no TLS files): loopback
    port: 8443,
    tls: null,
    keysDir: '/srv/keys',
    policyPath: '/srv/config/service-policy.json',
    tokenTtl: 600,
    jwksMaxAge: 600,
    opsHost: '127.0.0.1',
    opsPort: 9464,
    logLevel: 'info',
    rateLimit: 100,
    dev: true,
  })
  t.ok(Object.isFrozen(config))
})

t.test('values are parsed and typed', async (t) => {
  const config = loadConfig(
    {
      AUTHZ_PORT: '9000',
      AUTHZ_TOKEN_TTL: '300',
      AUTHZ_RATE_LIMIT: '0',
      AUTHZ_TLS_CERT: 'tls/server.pem',
      AUTHZ_TLS_KEY: 'tls/server-key.pem',
      AUTHZ_CLIENT_CA: 'tls/ca.pem',
      AUTHZ_CRL: 'tls/crl.pem',
      AUTHZ_DEV: 'false',
      AUTHZ_CRL_UNUSED: undefined,
      PATH: '/usr/bin',
    } as NodeJS.ProcessEnv,
    '/srv',
  )
  t.equal(config.port, 9000)
  t.equal(config.tokenTtl, 300)
  t.equal(config.rateLimit, 0)
  t.equal(config.dev, false)
  t.same(config.tls, { cert: '/srv/tls/server.pem', key: '/srv/tls/server-key.pem', clientCa: '/srv/tls/ca.pem', crl: '/srv/tls/crl.pem' })
})

t.test('a bad value names the variable', async (t) => {
  const cases: [Record<string, string>, string][] = [
    [{ AUTHZ_TOKEN_TTL: '299' }, 'AUTHZ_TOKEN_TTL'],
    [{ AUTHZ_TOKEN_TTL: '901' }, 'AUTHZ_TOKEN_TTL'],
    [{ AUTHZ_TOKEN_TTL: 'ten' }, 'AUTHZ_TOKEN_TTL'],
    [{ AUTHZ_PORT: '70000' }, 'AUTHZ_PORT'],
    [{ AUTHZ_OPS_PORT: '-1' }, 'AUTHZ_OPS_PORT'],
    [{ AUTHZ_LOG_LEVEL: 'loud' }, 'AUTHZ_LOG_LEVEL'],
    [{ AUTHZ_RATE_LIMIT: '-5' }, 'AUTHZ_RATE_LIMIT'],
    [{ AUTHZ_JWKS_MAX_AGE: 'a day' }, 'AUTHZ_JWKS_MAX_AGE'],
    [{ AUTHZ_DEV: 'maybe' }, 'AUTHZ_DEV'],
    [{ AUTHZ_ISSUER: 'not a url' }, 'AUTHZ_ISSUER'],
    [{ AUTHZ_ISSUER: 'http://authz.internal' }, 'AUTHZ_ISSUER'],
    [{ AUTHZ_ISSUER: 'https://authz.internal/?x=1' }, 'AUTHZ_ISSUER'],
    [{ AUTHZ_TLS_CERT: 'a.pem' }, 'AUTHZ_TLS_KEY'],
    [{ AUTHZ_TLS_CERT: 'a.pem', AUTHZ_TLS_KEY: 'b.pem' }, 'AUTHZ_CLIENT_CA'],
    [{ AUTHZ_CRL: 'crl.pem' }, 'AUTHZ_CLIENT_CA'],
    [{ AUTHZ_DEV: 'false' }, 'AUTHZ_TLS_CERT'],
    [{ AUTHZ_TOKEN_TLL: '600' }, 'AUTHZ_TOKEN_TLL'],
  ]
  for (const [env, variable] of cases) t.equal(variableOf(() => loadConfig(env)), variable, JSON.stringify(env))
})

t.test('the error message starts with the variable name', async (t) => {
  t.throws(() => loadConfig({ AUTHZ_TOKEN_TTL: '5' }), { code: 'ERR_CONFIG', message: /^AUTHZ_TOKEN_TTL: / })
})

t.test('an empty value means unset; tools need no TLS files even with AUTHZ_DEV=false', async (t) => {
  t.equal(loadConfig({ AUTHZ_CRL: '', AUTHZ_PORT: '' }).port, 8443)
  t.equal(loadConfig({ AUTHZ_DEV: 'false' }, '/srv', { requireTls: false }).tls, null)
})

t.test('the main listener: loopback in dev mode unless AUTHZ_HOST says otherwise; every interface with TLS files (regression: dev mode on 0.0.0.0)', async (t) => {
  const tls = { AUTHZ_TLS_CERT: 'tls.crt', AUTHZ_TLS_KEY: 'tls.key', AUTHZ_CLIENT_CA: 'ca.crt' }
  t.equal(loadConfig({}, '/srv').host, '127.0.0.1', 'dev mode: loopback')
  t.equal(loadConfig({ AUTHZ_HOST: '0.0.0.0' }, '/srv').host, '0.0.0.0', 'dev mode, asked for every interface')
  t.equal(loadConfig({ AUTHZ_DEV: 'false', ...tls }, '/srv').host, '0.0.0.0', 'production material: the production default')
  t.equal(loadConfig({ ...tls, AUTHZ_HOST: '10.1.2.3' }, '/srv').host, '10.1.2.3')
})

t.test('AUTHZ_IDENTITY: cn by default; spiffe needs AUTHZ_SPIFFE_TRUST_DOMAINS, checked entry by entry', async (t) => {
  t.same(loadConfig({}).identity, { kind: 'cn' })
  t.same(loadConfig({ AUTHZ_IDENTITY: 'spiffe', AUTHZ_SPIFFE_TRUST_DOMAINS: 'prod.example.org, example.org,example.org' }).identity, {
    kind: 'spiffe',
    trustDomains: ['prod.example.org', 'example.org'],
  })
  const refused: [Record<string, string>, RegExp][] = [
    [{ AUTHZ_IDENTITY: 'x509' }, /^AUTHZ_IDENTITY: must be equal to one of the allowed values/],
    [{ AUTHZ_IDENTITY: 'spiffe' }, /^AUTHZ_SPIFFE_TRUST_DOMAINS: required when AUTHZ_IDENTITY=spiffe/],
    [{ AUTHZ_SPIFFE_TRUST_DOMAINS: 'example.org' }, /^AUTHZ_SPIFFE_TRUST_DOMAINS: only used with AUTHZ_IDENTITY=spiffe/],
    [{ AUTHZ_IDENTITY: 'spiffe', AUTHZ_SPIFFE_TRUST_DOMAINS: 'Example.org' }, /"Example\.org": not a trust domain name: trust domain characters are limited to lowercase/],
    [{ AUTHZ_IDENTITY: 'spiffe', AUTHZ_SPIFFE_TRUST_DOMAINS: 'spiffe://example.org' }, /without spiffe:\/\//],
    [{ AUTHZ_IDENTITY: 'spiffe', AUTHZ_SPIFFE_TRUST_DOMAINS: 'example.org:8443' }, /"example\.org:8443": not a trust domain name/],
    [{ AUTHZ_IDENTITY: 'spiffe', AUTHZ_SPIFFE_TRUST_DOMAINS: 'example.org,' }, /"": not a trust domain name: empty entry/],
    [{ AUTHZ_IDENTITY: 'spiffe', AUTHZ_SPIFFE_TRUST_DOMAINS: 'a'.repeat(256) }, /longer than 255/],
  ]
  for (const [env, message] of refused) t.throws(() => loadConfig(env), { code: 'ERR_CONFIG', message }, JSON.stringify(env))
})
