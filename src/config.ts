/**
 * Configuration: the only module that reads the environment. The schema below is the single source of the
 * variable names, defaults and ranges (the README's table is checked against it). A bad value stops the
 * start with a ConfigError that names the variable.
 */
import { resolve } from 'node:path'
import envSchema from 'env-schema'
import type { FromSchema } from 'json-schema-to-ts'
import { ConfigError } from './errors.js'
import { CN_IDENTITY, type IdentityMode } from './identity/mode.js'
import { SPIFFE_ID_FAULTS, trustDomainFault } from './identity/spiffe-id.js'

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const
export type LogLevel = (typeof LOG_LEVELS)[number]

/** JSON Schema of the environment. `description` feeds the README's configuration table. */
export const configSchema = {
  type: 'object',
  properties: {
    AUTHZ_ISSUER: { type: 'string', default: 'https://authz.internal', description: 'the `iss` of every token and the discovery `issuer`; an https URL' },
    AUTHZ_HOST: { type: 'string', description: 'main (mTLS) listener address (default 0.0.0.0; 127.0.0.1 in dev mode, with no TLS files configured)' },
    AUTHZ_PORT: { type: 'integer', minimum: 0, maximum: 65535, default: 8443, description: 'main (mTLS) listener port (0–65535)' },
    AUTHZ_TLS_CERT: { type: 'string', minLength: 1, description: 'server certificate chain, PEM' },
    AUTHZ_TLS_KEY: { type: 'string', minLength: 1, description: 'server private key, PEM' },
    AUTHZ_CLIENT_CA: { type: 'string', minLength: 1, description: 'CA bundle that client certificates must chain to, PEM' },
    AUTHZ_CRL: { type: 'string', minLength: 1, description: 'optional CRL(s) for client certificates, PEM' },
    AUTHZ_KEYS_DIR: { type: 'string', minLength: 1, default: 'keys', description: 'signing keys and their manifest' },
    AUTHZ_POLICY: { type: 'string', minLength: 1, default: 'config/service-policy.json', description: 'service policy file (JSON)' },
    AUTHZ_TOKEN_TTL: { type: 'integer', minimum: 300, maximum: 900, default: 600, description: 'token lifetime in seconds (300–900)' },
    AUTHZ_JWKS_MAX_AGE: { type: 'integer', minimum: 0, maximum: 86400, default: 600, description: 'JWKS `Cache-Control: max-age` in seconds (0–86400)' },
    AUTHZ_OPS_HOST: { type: 'string', default: '127.0.0.1', description: 'ops listener address (health, readiness, metrics, JWKS)' },
    AUTHZ_OPS_PORT: { type: 'integer', minimum: 0, maximum: 65535, default: 9464, description: 'ops listener port (0–65535)' },
    AUTHZ_LOG_LEVEL: { type: 'string', enum: [...LOG_LEVELS], default: 'info', description: 'pino log level' },
    AUTHZ_IDENTITY: {
      type: 'string',
      enum: ['cn', 'spiffe'],
      default: 'cn',
      description: 'what names the caller: `cn`, the client certificate\'s Subject CommonName; `spiffe`, its one `spiffe://` URI SAN (X.509-SVID)',
    },
    AUTHZ_SPIFFE_TRUST_DOMAINS: {
      type: 'string',
      minLength: 1,
      description: 'with `AUTHZ_IDENTITY=spiffe` (and only then; required): the trust domains callers may come from, comma-separated (e.g. `prod.example.org,example.org`)',
    },
    AUTHZ_RATE_LIMIT: { type: 'integer', minimum: 0, maximum: 1000000, default: 100, description: 'token requests per second per caller (CN or SPIFFE ID); 0 turns the limit off (0–1000000)' },
    AUTHZ_MAX_CONNECTIONS: {
      type: 'integer',
      minimum: 1,
      maximum: 1000000,
      default: 4096,
      description: 'authenticated (handshaken) connections the main listener holds at once; more are refused at accept. Connections still in their handshake do not count: see AUTHZ_MAX_HANDSHAKES (1–1000000)',
    },
    AUTHZ_MAX_HANDSHAKES: {
      type: 'integer',
      minimum: 1,
      maximum: 1000000,
      default: 1024,
      description: 'connections still in their TLS handshake held at once; beyond it the oldest handshaking connection of the source holding the most is closed (1–1000000)',
    },
    AUTHZ_MAX_HANDSHAKES_PER_SOURCE: {
      type: 'integer',
      minimum: 1,
      maximum: 1000000,
      default: 128,
      description: 'connections still in their TLS handshake held at once per source address (IPv6: per /64); beyond it the source\'s oldest is closed (1–1000000)',
    },
    AUTHZ_HANDSHAKE_RATE_PER_SOURCE: {
      type: 'integer',
      minimum: 0,
      maximum: 1000000,
      default: 10,
      description: 'TLS handshakes per second per source address (burst: 5 s worth) that do not end authenticated; beyond it new connections of that source are closed at accept. Authenticated handshakes do not count; 0 turns the limit off (0–1000000)',
    },
    AUTHZ_SHUTDOWN_TIMEOUT: {
      type: 'integer',
      minimum: 1,
      maximum: 3600,
      default: 8,
      description: 'seconds from SIGTERM to exit, whatever clients do: answers in progress finish, the rest is closed (keep it under the orchestrator\'s grace period; 1–3600)',
    },
    AUTHZ_MAX_CONNECTION_AGE: {
      type: 'integer',
      minimum: 0,
      maximum: 86400,
      default: 3600,
      description: 'seconds after which a client connection is closed after its current answer, so the client handshakes again; 0 turns it off (0–86400)',
    },
    AUTHZ_DEV: { type: 'boolean', default: true, description: 'with no TLS files configured, generate a dev PKI and signing key under the keys directory; `false` makes missing material a start-up error' },
    AUTHZ_KEY_PASSPHRASE: { type: 'string', minLength: 1, description: 'optional passphrase of encrypted PKCS#8 signing keys' },
    AUTHZ_PKCS11_MODULE: { type: 'string', minLength: 1, description: 'PKCS#11 library (e.g. /usr/lib/softhsm/libsofthsm2.so) for keys whose store is `pkcs11`' },
    AUTHZ_PKCS11_TOKEN: { type: 'string', minLength: 1, description: 'the PKCS#11 token: its label, or `slot:<id>`; required with AUTHZ_PKCS11_MODULE' },
    AUTHZ_PKCS11_PIN: { type: 'string', minLength: 1, description: 'the token\'s user PIN (prefer AUTHZ_PKCS11_PIN_FILE); never logged' },
    AUTHZ_PKCS11_PIN_FILE: { type: 'string', minLength: 1, description: 'a file holding the token\'s user PIN (a trailing newline is ignored)' },
    AUTHZ_PKCS11_LABEL_PREFIX: { type: 'string', minLength: 1, maxLength: 16, pattern: '^[\\x21-\\x7E]+$', default: 'authz-', description: 'label prefix of the key pairs authz makes in the token (`<prefix><kid>`): printable ASCII without spaces, at most 16 characters' },
    AUTHZ_PKCS11_SESSIONS: { type: 'integer', minimum: 1, maximum: 64, default: 4, description: 'PKCS#11 sessions used for signing in parallel (1–64)' },
  },
} as const

export interface TlsFiles {
  readonly cert: string
  readonly key: string
  readonly clientCa: string
  readonly crl: string | undefined
}

/** The validated, frozen configuration. */
export interface Config {
  readonly issuer: string
  readonly host: string
  readonly port: number
  /** Paths of the TLS material, or null when none is configured (dev mode generates it). */
  readonly tls: TlsFiles | null
  readonly keysDir: string
  readonly policyPath: string
  readonly tokenTtl: number
  readonly jwksMaxAge: number
  readonly opsHost: string
  readonly opsPort: number
  readonly logLevel: LogLevel
  /** What names the caller: its certificate's CN, or its SPIFFE ID in one of the trusted trust domains. */
  readonly identity: IdentityMode
  readonly rateLimit: number
  readonly maxConnections: number
  readonly maxHandshakes: number
  readonly maxHandshakesPerSource: number
  readonly handshakeRatePerSource: number
  /** Seconds from SIGTERM to exit. */
  readonly shutdownTimeout: number
  /** Seconds after which a client connection is closed after its current answer (0: never). */
  readonly maxConnectionAge: number
  readonly dev: boolean
  readonly keyPassphrase: string | undefined
  /** Where PKCS#11 keys live, or null when AUTHZ_PKCS11_MODULE is not set. The PIN is read when the token is opened. */
  readonly pkcs11: Pkcs11Settings | null
}

export interface Pkcs11Settings {
  readonly module: string
  readonly token: { readonly label: string } | { readonly slot: number }
  /** The PIN's source: the variable itself, or a file. */
  readonly pin: { readonly variable: 'AUTHZ_PKCS11_PIN'; readonly value: string } | { readonly variable: 'AUTHZ_PKCS11_PIN_FILE'; readonly file: string }
  readonly labelPrefix: string
  readonly sessions: number
}

/** The environment as the schema validates it (defaults applied): derived from the schema, never restated. */
type RawEnv = FromSchema<typeof configSchema>

interface AjvErrorLike {
  instancePath: string
  message?: string
  params?: Record<string, unknown>
}

/** Names the variable an env-schema (ajv) error is about. */
function variableOf(error: AjvErrorLike): string {
  const fromPath = error.instancePath.replace(/^\//, '')
  if (fromPath !== '') return fromPath
  const missing = error.params?.missingProperty
  return typeof missing === 'string' ? missing : 'environment'
}

function checkIssuer(issuer: string): string {
  let url: URL
  try {
    url = new URL(issuer)
  } catch {
    throw new ConfigError('AUTHZ_ISSUER', 'must be an absolute https URL')
  }
  // RFC 8414 §2: https, no query, no fragment. RFC 9068 compares `iss` as an exact string.
  if (url.protocol !== 'https:' || url.search !== '' || url.hash !== '' || url.username !== '' || url.password !== '') {
    throw new ConfigError('AUTHZ_ISSUER', 'must be an https URL without query, fragment or credentials')
  }
  return issuer
}

function tlsFiles(env: RawEnv, cwd: string, requireTls: boolean): TlsFiles | null {
  const named = {
    AUTHZ_TLS_CERT: env.AUTHZ_TLS_CERT,
    AUTHZ_TLS_KEY: env.AUTHZ_TLS_KEY,
    AUTHZ_CLIENT_CA: env.AUTHZ_CLIENT_CA,
  }
  const given = Object.entries(named).filter(([, v]) => v !== undefined)
  if (given.length === 0) {
    if (env.AUTHZ_CRL !== undefined) throw new ConfigError('AUTHZ_CLIENT_CA', 'AUTHZ_CRL is set but the TLS files are not')
    if (!env.AUTHZ_DEV && requireTls) throw new ConfigError('AUTHZ_TLS_CERT', 'required when AUTHZ_DEV=false (with AUTHZ_TLS_KEY and AUTHZ_CLIENT_CA)')
    return null
  }
  for (const [name, value] of Object.entries(named)) {
    if (value === undefined) throw new ConfigError(name, `required when ${given.map(([n]) => n).join(', ')} is set`)
  }
  return {
    cert: resolve(cwd, env.AUTHZ_TLS_CERT as string),
    key: resolve(cwd, env.AUTHZ_TLS_KEY as string),
    clientCa: resolve(cwd, env.AUTHZ_CLIENT_CA as string),
    crl: env.AUTHZ_CRL === undefined ? undefined : resolve(cwd, env.AUTHZ_CRL),
  }
}

function identityMode(env: RawEnv): IdentityMode {
  const list = env.AUTHZ_SPIFFE_TRUST_DOMAINS
  if (env.AUTHZ_IDENTITY === 'cn') {
    if (list !== undefined) throw new ConfigError('AUTHZ_SPIFFE_TRUST_DOMAINS', 'only used with AUTHZ_IDENTITY=spiffe (AUTHZ_IDENTITY is cn)')
    return CN_IDENTITY
  }
  if (list === undefined) throw new ConfigError('AUTHZ_SPIFFE_TRUST_DOMAINS', 'required when AUTHZ_IDENTITY=spiffe (comma-separated trust domain names, e.g. example.org)')
  const trustDomains: string[] = []
  for (const entry of list.split(',').map((e) => e.trim())) {
    const fault = trustDomainFault(entry)
    if (fault !== undefined) {
      const hint = entry.startsWith('spiffe://') ? ' (write the trust domain name without spiffe://)' : ''
      throw new ConfigError('AUTHZ_SPIFFE_TRUST_DOMAINS', `${JSON.stringify(entry)}: not a trust domain name: ${entry === '' ? 'empty entry' : SPIFFE_ID_FAULTS[fault]}${hint}`)
    }
    if (!trustDomains.includes(entry)) trustDomains.push(entry)
  }
  return Object.freeze({ kind: 'spiffe', trustDomains: Object.freeze(trustDomains) })
}

function pkcs11Settings(env: RawEnv, cwd: string): Pkcs11Settings | null {
  const module = env.AUTHZ_PKCS11_MODULE
  if (module === undefined) {
    for (const name of ['AUTHZ_PKCS11_TOKEN', 'AUTHZ_PKCS11_PIN', 'AUTHZ_PKCS11_PIN_FILE'] as const) {
      if (env[name] !== undefined) throw new ConfigError('AUTHZ_PKCS11_MODULE', `required when ${name} is set`)
    }
    return null
  }
  const token = env.AUTHZ_PKCS11_TOKEN
  if (token === undefined) throw new ConfigError('AUTHZ_PKCS11_TOKEN', 'required when AUTHZ_PKCS11_MODULE is set (a token label, or slot:<id>)')
  const slot = /^slot:(\d{1,19})$/.exec(token)?.[1]
  if (env.AUTHZ_PKCS11_PIN !== undefined && env.AUTHZ_PKCS11_PIN_FILE !== undefined) {
    throw new ConfigError('AUTHZ_PKCS11_PIN', 'set AUTHZ_PKCS11_PIN or AUTHZ_PKCS11_PIN_FILE, not both')
  }
  const pin =
    env.AUTHZ_PKCS11_PIN_FILE !== undefined
      ? { variable: 'AUTHZ_PKCS11_PIN_FILE' as const, file: resolve(cwd, env.AUTHZ_PKCS11_PIN_FILE) }
      : env.AUTHZ_PKCS11_PIN !== undefined
        ? { variable: 'AUTHZ_PKCS11_PIN' as const, value: env.AUTHZ_PKCS11_PIN }
        : undefined
  if (pin === undefined) throw new ConfigError('AUTHZ_PKCS11_PIN_FILE', 'required when AUTHZ_PKCS11_MODULE is set (or AUTHZ_PKCS11_PIN)')
  return Object.freeze({
    module: resolve(cwd, module),
    token: slot === undefined ? { label: token } : { slot: Number(slot) },
    pin,
    labelPrefix: env.AUTHZ_PKCS11_LABEL_PREFIX,
    sessions: env.AUTHZ_PKCS11_SESSIONS,
  })
}

/**
 * Validates the environment and returns a frozen Config. Throws ConfigError naming the first bad variable.
 * Only `AUTHZ_*` variables are read; unrelated variables are ignored. The CLIs pass `requireTls: false`:
 * they read the same variables but never serve TLS.
 */
export function loadConfig(env: NodeJS.ProcessEnv, cwd = process.cwd(), options: { requireTls?: boolean } = {}): Config {
  const data: Record<string, string> = {}
  for (const [name, value] of Object.entries(env)) {
    // An empty value means "not set": `AUTHZ_CRL=` in a compose file must not become a path.
    if (name.startsWith('AUTHZ_') && value !== undefined && value !== '') data[name] = value
  }
  for (const name of Object.keys(data)) {
    if (!(name in configSchema.properties)) throw new ConfigError(name, 'unknown variable (a typo?)')
  }
  let raw: RawEnv
  try {
    raw = envSchema<RawEnv>({ schema: structuredClone(configSchema), data, env: false, dotenv: false })
  } catch (err) {
    const errors = (err as { errors?: AjvErrorLike[] }).errors
    const first = errors?.[0]
    if (first === undefined) throw err
    throw new ConfigError(variableOf(first), first.message ?? 'invalid value')
  }
  const tls = tlsFiles(raw, cwd, options.requireTls ?? true)
  return Object.freeze({
    issuer: checkIssuer(raw.AUTHZ_ISSUER),
    // Dev mode (no TLS files: a generated dev CA) stays on loopback unless AUTHZ_HOST says otherwise: an
    // issuer whose CA key sits in keys/dev-pki must not answer on every interface of a laptop.
    host: raw.AUTHZ_HOST ?? (tls === null ? '127.0.0.1' : '0.0.0.0'),
    port: raw.AUTHZ_PORT,
    tls,
    keysDir: resolve(cwd, raw.AUTHZ_KEYS_DIR),
    policyPath: resolve(cwd, raw.AUTHZ_POLICY),
    tokenTtl: raw.AUTHZ_TOKEN_TTL,
    jwksMaxAge: raw.AUTHZ_JWKS_MAX_AGE,
    opsHost: raw.AUTHZ_OPS_HOST,
    opsPort: raw.AUTHZ_OPS_PORT,
    logLevel: raw.AUTHZ_LOG_LEVEL,
    identity: identityMode(raw),
    rateLimit: raw.AUTHZ_RATE_LIMIT,
    maxConnections: raw.AUTHZ_MAX_CONNECTIONS,
    maxHandshakes: raw.AUTHZ_MAX_HANDSHAKES,
    maxHandshakesPerSource: raw.AUTHZ_MAX_HANDSHAKES_PER_SOURCE,
    handshakeRatePerSource: raw.AUTHZ_HANDSHAKE_RATE_PER_SOURCE,
    shutdownTimeout: raw.AUTHZ_SHUTDOWN_TIMEOUT,
    maxConnectionAge: raw.AUTHZ_MAX_CONNECTION_AGE,
    dev: raw.AUTHZ_DEV,
    keyPassphrase: raw.AUTHZ_KEY_PASSPHRASE,
    pkcs11: pkcs11Settings(raw, cwd),
  })
}
