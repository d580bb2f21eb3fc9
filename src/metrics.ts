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
  readonly callerCertificatesRefused: Counter<'reason'>
  readonly signingSeconds: Histogram
  readonly policyReloads: Counter<'result'>
  readonly keysetReloads: Counter<'result'>
  readonly tlsReloads: Counter<'result'>
  readonly reloadFailing: Gauge<'what'>
  readonly keysPublished: Gauge
  readonly signerAvailable: Gauge
  readonly activeKeyAgeSeconds: Gauge
  readonly nextActivationSeconds: Gauge
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
  }
}
