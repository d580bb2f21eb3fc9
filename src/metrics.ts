/**
 * Prometheus metrics on a registry of the app's own (never the global one), so two apps in one process
 * (tests, several listeners) do not collide. Conventions: `_total`, `_seconds`, `_timestamp_seconds`,
 * `_info`; lowercase label values from fixed sets (or the policy's own names); "none" is an absent series
 * or an explicit 0, never a -1.
 */
import { readFileSync } from 'node:fs'
import { totalmem } from 'node:os'
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'
import { STATUS_OF, type OAuthErrorCode, type UnavailableReason } from './errors.js'

export interface Metrics extends OperationsMetrics, TrustMetrics {
  readonly registry: Registry
  readonly tokensIssued: Counter<'audience'>
  readonly tokenDenied: Counter<'error'>
  readonly requestsDenied: Counter<'route' | 'error'>
  readonly callerCertificatesRefused: Counter<'reason'>
  readonly signingSeconds: Histogram
  readonly policyReloads: Counter<'result'>
  readonly keysetReloads: Counter<'result'>
  readonly tlsReloads: Counter<'result'>
  readonly reloadFailing: Gauge<'what'>
  readonly keysPublished: Gauge
}

/** What an SRE alerts on beyond the counters above (README "Metrics"). */
export interface OperationsMetrics {
  readonly buildInfo: Gauge<'version' | 'node_version'>
  readonly tokenRequestSeconds: Histogram<'outcome'>
  readonly tokenUnavailable: Counter<'reason'>
  readonly tokenRateLimited: Counter<'caller'>
  readonly ready: Gauge
  readonly signingKeys: Gauge<'state'>
  readonly signingKeyInfo: Gauge<'kid' | 'alg' | 'store'>
  readonly signingKeyActivation: OptionalGauge
  readonly nextKeyActivation: OptionalGauge
  readonly jwksInfo: Gauge<'digest'>
  /** Set only where a PKCS#11 token is configured, so `== 0` always means "down", never "not configured". */
  readonly pkcs11Available: OptionalGauge
}

export function createMetrics(options: { defaults?: boolean } = {}): Metrics {
  const registry = new Registry()
  if (options.defaults !== false) collectDefaultMetrics({ register: registry })
  const metrics: Metrics = {
    registry,
    tokensIssued: new Counter({
      name: 'authz_tokens_issued_total',
      help: 'Access tokens issued, by audience',
      labelNames: ['audience'],
      registers: [registry],
    }),
    tokenDenied: new Counter({
      name: 'authz_token_requests_denied_total',
      help: 'Token requests refused, by OAuth error code',
      labelNames: ['error'],
      registers: [registry],
    }),
    requestsDenied: new Counter({
      name: 'authz_requests_denied_total',
      help: 'Requests answered with an error on either listener, by route pattern ("unserved" for 404s) and error code',
      labelNames: ['route', 'error'],
      registers: [registry],
    }),
    callerCertificatesRefused: new Counter({
      name: 'authz_caller_certificates_refused_total',
      help: 'Client certificates that passed the TLS handshake but name no caller under AUTHZ_IDENTITY (their /token requests are 401 invalid_client), once per connection, by reason',
      labelNames: ['reason'],
      registers: [registry],
    }),
    signingSeconds: new Histogram({
      name: 'authz_signing_duration_seconds',
      help: 'Time to sign one access token',
      buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25],
      registers: [registry],
    }),
    policyReloads: new Counter({
      name: 'authz_policy_reloads_total',
      help: 'Policy reload attempts that found a change or an error, by result',
      labelNames: ['result'],
      registers: [registry],
    }),
    keysetReloads: new Counter({
      name: 'authz_keyset_reloads_total',
      help: 'Keyset reload attempts that found a change or an error, by result',
      labelNames: ['result'],
      registers: [registry],
    }),
    tlsReloads: new Counter({
      name: 'authz_tls_reloads_total',
      help: 'TLS material (certificate, key, client CA, CRL) reload attempts that found a change or an error, by result',
      labelNames: ['result'],
      registers: [registry],
    }),
    reloadFailing: new Gauge({
      name: 'authz_reload_failing',
      help: '1 while the last reload of policy, keyset or TLS material failed (the previous state serves; retried with backoff), else 0',
      labelNames: ['what'],
      registers: [registry],
    }),
    keysPublished: new Gauge({ name: 'authz_keys_published', help: 'Keys in the JWKS', registers: [registry] }),
    ...operationsMetrics(registry, options.defaults !== false),
    ...trustMetrics(registry),
  }
  // Every error /token can answer with is a series from the start: rate() and "is it zero?" need one.
  for (const error of TOKEN_OUTCOMES) if (error !== 'issued') metrics.tokenDenied.inc({ error }, 0)
  return metrics
}

// --- TLS trust material (issue 18) ------------------------------------------------------------------

/** What the main listener's handshakes and TLS material say (README "Ops", "Runbook: trust material"). */
export interface TrustMetrics {
  readonly tlsHandshakeFailures: Counter<'reason'>
  readonly tlsConnections: Gauge<'state'>
  readonly tlsConnectionsShed: Counter<'reason'>
  readonly tlsServerCertificateExpiry: Gauge
  readonly tlsClientCaExpiry: Gauge
  /** Set only while a CRL (with a nextUpdate) is in force: absent otherwise, never 0. */
  readonly tlsCrlNextUpdate: OptionalGauge
}

function trustMetrics(registry: Registry): TrustMetrics {
  return {
    tlsHandshakeFailures: new Counter({
      name: 'authz_tls_handshake_failures_total',
      help: 'TLS handshakes of the main listener that did not end authenticated, by reason: no_certificate, unknown_ca, revoked, expired, not_yet_valid, crl_expired, protocol, timeout, other',
      labelNames: ['reason'],
      registers: [registry],
    }),
    tlsConnections: new Gauge({
      name: 'authz_tls_connections',
      help: 'Open connections of the main listener by state: handshaking (TLS handshake not finished) or established (authenticated)',
      labelNames: ['state'],
      registers: [registry],
    }),
    tlsConnectionsShed: new Counter({
      name: 'authz_tls_connections_shed_total',
      help: 'Connections the main listener closed at accept or during their handshake because a budget was full, by reason: max_connections, handshake_budget, source_handshakes, source_rate',
      labelNames: ['reason'],
      registers: [registry],
    }),
    tlsServerCertificateExpiry: new Gauge({
      name: 'authz_tls_server_certificate_expiry_timestamp_seconds',
      help: 'notAfter of the server certificate in force (the earliest of the chain it presents), seconds since the epoch',
      registers: [registry],
    }),
    tlsClientCaExpiry: new Gauge({
      name: 'authz_tls_client_ca_expiry_timestamp_seconds',
      help: 'The earliest notAfter in the client CA bundle in force, seconds since the epoch',
      registers: [registry],
    }),
    tlsCrlNextUpdate: new OptionalGauge(registry, {
      name: 'authz_tls_crl_next_update_timestamp_seconds',
      help: 'The earliest nextUpdate of the CRLs in force, seconds since the epoch (absent without AUTHZ_CRL); past it every client certificate the CRL covers is refused',
    }),
  }
}

// --- operations (issue 19) ---------------------------------------------------------------------------

export const UNAVAILABLE_REASONS: readonly UnavailableReason[] = ['no_active_key', 'signer_unavailable', 'signing_failed']

/** How a `/token` request ended: `issued`, or the error code it was answered with. */
export type TokenOutcome = 'issued' | OAuthErrorCode
export const TOKEN_OUTCOMES: readonly TokenOutcome[] = ['issued', ...(Object.keys(STATUS_OF).filter((c) => c !== 'not_found') as OAuthErrorCode[])]

/** Lifecycle states counted by `authz_signing_keys` (expired keys are unpublished: not counted). */
export const COUNTED_KEY_STATES = ['next', 'active', 'retired'] as const

/** The version in package.json (one level above src/ and dist/ alike). */
export const AUTHZ_VERSION: string = (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }).version

/**
 * The memory limit of the container (cgroup) as Node sees it, or undefined when there is none: Node
 * reports "no limit" as 0, undefined or a huge number (2^63, 2^64), so a value at or above the machine's
 * memory means none.
 */
export function memoryLimitBytes(constrained: number | undefined = process.constrainedMemory?.(), total = totalmem()): number | undefined {
  return constrained === undefined || constrained <= 0 || constrained >= total ? undefined : constrained
}

function operationsMetrics(registry: Registry, processMetrics: boolean): OperationsMetrics {
  const buildInfo = new Gauge({
    name: 'authz_build_info',
    help: 'Always 1; the labels say which authz and which Node.js this replica runs',
    labelNames: ['version', 'node_version'],
    registers: [registry],
  })
  buildInfo.set({ version: AUTHZ_VERSION, node_version: process.version }, 1)
  if (processMetrics) {
    new OptionalGauge(registry, {
      name: 'authz_memory_limit_bytes',
      help: "The container's memory limit (cgroup) as the process sees it; absent when there is none",
    }).set(memoryLimitBytes())
  }
  const tokenRequestSeconds = new Histogram({
    name: 'authz_token_request_duration_seconds',
    help: 'Time to answer POST /token, from the request to the last byte of the answer, by outcome (issued, or the error code)',
    labelNames: ['outcome'],
    // The latency goal (p99 of issued tokens ≤ 50 ms, README "Alerts") is a bucket boundary.
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    registers: [registry],
  })
  for (const outcome of TOKEN_OUTCOMES) tokenRequestSeconds.zero({ outcome })
  const tokenUnavailable = new Counter({
    name: 'authz_token_requests_unavailable_total',
    help: 'POST /token answered 503 temporarily_unavailable, by reason: no_active_key, signer_unavailable (PKCS#11 token down), signing_failed',
    labelNames: ['reason'],
    registers: [registry],
  })
  for (const reason of UNAVAILABLE_REASONS) tokenUnavailable.inc({ reason }, 0)
  const signingKeys = new Gauge({
    name: 'authz_signing_keys',
    help: 'Published signing keys by lifecycle state (next, active, retired); active is 0 or 1',
    labelNames: ['state'],
    registers: [registry],
  })
  for (const state of COUNTED_KEY_STATES) signingKeys.set({ state }, 0)
  return {
    buildInfo,
    tokenRequestSeconds,
    tokenUnavailable,
    tokenRateLimited: new Counter({
      name: 'authz_token_requests_rate_limited_total',
      help: 'POST /token answered 429 slow_down, by caller (a name the policy knows: unknown callers are refused before the limit)',
      labelNames: ['caller'],
      registers: [registry],
    }),
    ready: new Gauge({
      name: 'authz_ready',
      help: '1 while /readyz answers 200 (this replica can issue tokens: a key signs now and can, a policy is loaded), else 0',
      registers: [registry],
    }),
    signingKeys,
    signingKeyInfo: new Gauge({
      name: 'authz_signing_key_info',
      help: 'Always 1, for the key that signs now (kid, alg, store); absent while no key signs',
      labelNames: ['kid', 'alg', 'store'],
      registers: [registry],
    }),
    signingKeyActivation: new OptionalGauge(registry, {
      name: 'authz_signing_key_activation_timestamp_seconds',
      help: 'When the key that signs now activated (Unix seconds); absent while no key signs',
    }),
    nextKeyActivation: new OptionalGauge(registry, {
      name: 'authz_next_key_activation_timestamp_seconds',
      help: 'When the next key activates (Unix seconds); absent while no key is scheduled',
    }),
    jwksInfo: new Gauge({
      name: 'authz_jwks_info',
      help: 'Always 1; digest is the ETag of the JWKS this replica publishes (replicas that agree show the same digest)',
      labelNames: ['digest'],
      registers: [registry],
    }),
    pkcs11Available: new OptionalGauge(registry, {
      name: 'authz_pkcs11_available',
      help: '1 while the PKCS#11 token answers, 0 while it is being reloaded (/token answers 503 meanwhile); absent when no token is configured',
    }),
  }
}

/**
 * A gauge without labels that exists only while it has a value: prom-client reports an unset gauge as 0,
 * which is a value, so "none" is the series leaving the registry.
 */
export class OptionalGauge {
  readonly name: string
  readonly #registry: Registry
  readonly #gauge: Gauge

  constructor(registry: Registry, config: { readonly name: string; readonly help: string }) {
    this.name = config.name
    this.#registry = registry
    this.#gauge = new Gauge({ ...config, registers: [] })
  }

  /** The value, or undefined for none (the series disappears). */
  set(value: number | undefined): void {
    const present = this.#registry.getSingleMetric(this.name) !== undefined
    if (value === undefined) {
      if (present) this.#registry.removeSingleMetric(this.name)
      return
    }
    if (!present) this.#registry.registerMetric(this.#gauge)
    this.#gauge.set(value)
  }
}
