/**
 * Prometheus metrics on a registry of the app's own (never the global one), so two apps in one process
 * (tests, several listeners) do not collide.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'

export interface Metrics {
  readonly registry: Registry
  readonly tokensIssued: Counter<'audience'>
  readonly tokenDenied: Counter<'error'>
  readonly requestsDenied: Counter<'route' | 'error'>
  readonly signingSeconds: Histogram
  readonly policyReloads: Counter<'result'>
  readonly keysetReloads: Counter<'result'>
  readonly tlsReloads: Counter<'result'>
  readonly reloadFailing: Gauge<'what'>
  readonly keysPublished: Gauge
  readonly signerAvailable: Gauge
  readonly activeKeyAgeSeconds: Gauge
  readonly nextActivationSeconds: Gauge
  readonly tlsHandshakeFailures: Counter<'reason'>
  readonly tlsConnections: Gauge<'state'>
  readonly tlsConnectionsShed: Counter<'reason'>
  readonly tlsServerCertificateExpiry: Gauge
  readonly tlsClientCaExpiry: Gauge
  /** Registered only while a CRL with a nextUpdate is in force (see setCrlNextUpdate): absent otherwise, never 0. */
  readonly tlsCrlNextUpdate: Gauge
}

const CRL_NEXT_UPDATE = 'authz_tls_crl_next_update_timestamp_seconds'

/** Sets the CRL's nextUpdate gauge, or removes the series when no CRL (with a nextUpdate) is in force. */
export function setCrlNextUpdate(metrics: Metrics, nextUpdateMs: number | null): void {
  const { registry, tlsCrlNextUpdate: gauge } = metrics
  const registered = registry.getSingleMetric(CRL_NEXT_UPDATE) !== undefined
  if (nextUpdateMs === null) {
    if (registered) registry.removeSingleMetric(CRL_NEXT_UPDATE)
    return
  }
  if (!registered) registry.registerMetric(gauge)
  gauge.set(nextUpdateMs / 1000)
}

export function createMetrics(options: { defaults?: boolean } = {}): Metrics {
  const registry = new Registry()
  if (options.defaults !== false) collectDefaultMetrics({ register: registry })
  return {
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
    signerAvailable: new Gauge({
      name: 'authz_pkcs11_available',
      help: '1 while the PKCS#11 token answers, 0 while it is being reloaded (/token answers 503 meanwhile); 0 too when no token is configured',
      registers: [registry],
    }),
    activeKeyAgeSeconds: new Gauge({
      name: 'authz_active_key_age_seconds',
      help: 'Seconds since the signing key activated (-1 when none signs)',
      registers: [registry],
    }),
    nextActivationSeconds: new Gauge({
      name: 'authz_next_key_activation_seconds',
      help: 'Seconds until the next key activates (-1 when none is scheduled)',
      registers: [registry],
    }),
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
    tlsCrlNextUpdate: new Gauge({
      name: CRL_NEXT_UPDATE,
      help: 'The earliest nextUpdate of the CRLs in force, seconds since the epoch (absent without AUTHZ_CRL); past it every client certificate the CRL covers is refused',
      registers: [],
    }),
  }
}
