/**
 * POST /token: OAuth 2.0 client credentials (RFC 6749 §4.4) with mTLS client authentication (RFC 8705).
 * The caller is named by the certificate (its CN, or its SPIFFE ID: AUTHZ_IDENTITY); the body only chooses
 * the audience and scopes. Faults are reported in
 * the order DESIGN.md fixes: invalid_client, invalid_request, unsupported_grant_type, invalid_target,
 * invalid_scope.
 */
import { randomUUID } from 'node:crypto'
import type { TLSSocket } from 'node:tls'
import { Ajv } from 'ajv'
import type { FastifyBaseLogger, FastifyInstance, FastifyRequest } from 'fastify'
import type { FromSchema } from 'json-schema-to-ts'
import type { Logger } from 'pino'
import type { Config } from '../config.js'
import type { Clock } from '../clock.js'
import {
  InvalidClient,
  InvalidRequest,
  InvalidScope,
  InvalidTarget,
  SlowDown,
  TemporarilyUnavailable,
  UnsupportedGrantType,
  type UnavailableReason,
} from '../errors.js'
import { PeerJudge, type PeerIdentity } from '../identity/peer.js'
import { SPIFFE_ID_MAX_LENGTH } from '../identity/spiffe-id.js'
import type { KeyStore } from '../keys/store.js'
import type { Metrics } from '../metrics.js'
import { explainDecision } from '../policy/explain.js'
import { decide, isKnownCaller } from '../policy/policy.js'
import type { PolicyStore } from '../policy/store.js'
import type { RateLimiter } from '../rate-limit.js'
import type { ConnectionLifetimes } from '../tls/connections.js'
import { buildClaims } from '../tokens/claims.js'
import { signAccessToken } from '../tokens/signer.js'
import { LogSummary } from '@authz/sdk'
import './errors.js' // FastifyRequest.peer
import { repeatedTopLevelKey } from './json-keys.js'

export const TOKEN_BODY_LIMIT = 8 * 1024

/** The request body, after content-type parsing; the same schema for JSON and form bodies. */
export const tokenRequestSchema = {
  type: 'object',
  additionalProperties: false,
  properties: {
    grant_type: { type: 'string', maxLength: 128 },
    audience: { type: 'string', minLength: 1, maxLength: 255 },
    resource: { type: 'string', minLength: 1, maxLength: 255 },
    scope: {
      anyOf: [
        { type: 'string', maxLength: 4096 },
        { type: 'array', maxItems: 64, items: { type: 'string', maxLength: 128 } },
      ],
    },
    // A CN (≤ 255) or a SPIFFE ID (≤ 2048).
    client_id: { type: 'string', maxLength: SPIFFE_ID_MAX_LENGTH },
  },
} as const

export const tokenResponseSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['access_token', 'token_type', 'expires_in'],
  properties: {
    access_token: { type: 'string' },
    token_type: { type: 'string', const: 'Bearer' },
    expires_in: { type: 'integer' },
    scope: { type: 'string' },
  },
} as const

/** The body after parsing and validation: derived from the schema. */
type TokenRequestBody = FromSchema<typeof tokenRequestSchema>

const validateBody = new Ajv({ strict: true, coerceTypes: false, useDefaults: false }).compile<TokenRequestBody>(
  tokenRequestSchema,
)

export interface TokenRouteDeps {
  readonly config: Config
  readonly clock: Clock
  readonly keys: KeyStore
  readonly policy: PolicyStore
  readonly metrics: Metrics
  readonly rateLimiter: RateLimiter
  readonly connections: ConnectionLifetimes
  readonly randomUUID?: () => string
}

/**
 * A form parameter given more than once (RFC 6749 §3.2: "MUST NOT be included more than once"). It fails
 * the schema, so the request is `invalid_request` — unless a stronger fault (a client_id that is not the
 * certificate's CN) comes first.
 */
export class RepeatedParameter {
  readonly values: string[]
  constructor(values: string[]) {
    this.values = values
  }
}

/**
 * Parses a form body into a null-prototype record; a repeated parameter becomes a RepeatedParameter.
 * Linear in the body: a repeat appends to its list in place (copying the list per repeat made an 8 KiB
 * body of `a&a&a…` cost ~23 ms of the event loop, a stall for every other caller).
 */
export function parseForm(body: string): Record<string, string | RepeatedParameter> {
  const out: Record<string, string | RepeatedParameter> = Object.create(null) as Record<string, string | RepeatedParameter>
  for (const [name, value] of new URLSearchParams(body)) {
    const seen = out[name]
    if (seen === undefined) out[name] = value
    else if (typeof seen === 'string') out[name] = new RepeatedParameter([seen, value])
    else seen.values.push(value)
  }
  return out
}

function checkBody(body: unknown, caller: string): { audience: string; scope: string | string[] | undefined } {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new InvalidRequest('body must be an object')
  const clientId = (body as Record<string, unknown>).client_id
  // client_id never sets the identity: when present it must be exactly the caller's name, and a
  // mismatch (whatever its type) is an authentication failure that outranks every other fault.
  if (clientId !== undefined && clientId !== caller) throw new InvalidClient('client_id does not match the certificate')
  if (!validateBody(body)) throw new InvalidRequest('body does not match the schema')
  const { audience, resource } = body
  if (audience !== undefined && resource !== undefined && audience !== resource) throw new InvalidRequest('audience and resource differ')
  const target = audience ?? resource
  if (target === undefined) throw new InvalidRequest('missing audience')
  if (body.grant_type !== undefined && body.grant_type !== 'client_credentials') throw new UnsupportedGrantType()
  return { audience: target, scope: body.scope }
}

/** pino's level check (Fastify's logger type does not declare it); true when the logger cannot say. */
function debugEnabled(log: FastifyBaseLogger): boolean {
  return (log as FastifyBaseLogger & { isLevelEnabled?: (level: string) => boolean }).isLevelEnabled?.('debug') ?? true
}

/** Retry-After of a 503 while the signer cannot sign (a PKCS#11 token reconnects within 1–30 s). */
export const SIGNER_RETRY_AFTER_SEC = 5
/** Retry-After of a 503 while no key is active and none is scheduled: an operator has to act. */
export const NO_KEY_RETRY_AFTER_SEC = 30

/** While no key signs: until the next key activates (1–60 s), or NO_KEY_RETRY_AFTER_SEC when none is scheduled. */
export function noKeyRetryAfter(keys: Pick<KeyStore, 'statuses'>, now: number): number {
  const next = keys.statuses().find((s) => s.state === 'next')
  if (next === undefined) return NO_KEY_RETRY_AFTER_SEC
  return Math.min(60, Math.max(1, Math.ceil((next.key.activatesAt - now) / 1000)))
}

export async function tokenRoutes(app: FastifyInstance, deps: TokenRouteDeps): Promise<void> {
  const { config, clock, keys, policy, metrics, rateLimiter, connections } = deps
  const unavailable = (reason: UnavailableReason, retryAfter: number): TemporarilyUnavailable => {
    metrics.tokenUnavailable.inc({ reason })
    return new TemporarilyUnavailable(reason, retryAfter)
  }
  const newJti = deps.randomUUID ?? randomUUID
  // A certificate that passed the handshake but names no caller (judged once per connection): counted by
  // reason, and one log line per reason (then a count per interval), whatever the traffic.
  const refusals = new LogSummary({
    logger: app.log as unknown as Logger,
    event: 'caller_certificate_refused',
    message: 'a client certificate that passed the TLS handshake names no caller',
  })
  app.addHook('onClose', async () => refusals.close())
  const judge = new PeerJudge(config.identity, (refusal) => {
    metrics.callerCertificatesRefused.inc({ reason: refusal.reason })
    const trustDomain = refusal.trustDomain === undefined ? {} : { trust_domain: refusal.trustDomain }
    refusals.note(`${refusal.reason} ${refusal.trustDomain ?? ''}`, { reason: refusal.reason, identity: config.identity.kind, ...trustDomain })
  })

  app.addContentTypeParser(
    'application/x-www-form-urlencoded',
    { parseAs: 'string', bodyLimit: TOKEN_BODY_LIMIT },
    (_request: FastifyRequest, body: string | Buffer, done: (err: Error | null, body?: unknown) => void) => {
      try {
        done(null, parseForm(body.toString()))
      } catch (err) {
        done(err as Error)
      }
    },
  )

  // JSON as Fastify parses it (prototype-poisoning checks included), plus one rule: a key given twice is a
  // repeated parameter, as in a form body (JSON.parse would silently keep the last).
  const parseJson = app.getDefaultJsonParser('error', 'error')
  app.removeContentTypeParser('application/json')
  app.addContentTypeParser('application/json', { parseAs: 'string', bodyLimit: TOKEN_BODY_LIMIT }, (request, body, done) => {
    parseJson(request, body.toString(), (err: Error | null, parsed?: unknown) => {
      if (err !== null) return done(err)
      const repeated = repeatedTopLevelKey(body.toString())
      if (repeated !== undefined && typeof parsed === 'object' && parsed !== null && !Array.isArray(parsed)) {
        ;(parsed as Record<string, unknown>)[repeated] = new RepeatedParameter([])
      }
      done(null, parsed)
    })
  })

  app.route({
    method: 'POST',
    url: '/token',
    bodyLimit: TOKEN_BODY_LIMIT,
    schema: { response: { 200: tokenResponseSchema } },
    // Identity and rate limit come before the body is even read.
    onRequest: async (request) => {
      const socket = request.raw.socket as TLSSocket
      // The certificate is judged at every request, not only at the handshake: a keep-alive connection or
      // a resumed session outlives its validity, and a new CA bundle or CRL may no longer trust it.
      const result = judge.identify(socket, clock.now())
      if (!result.ok) {
        connections.closeAfterAnswer(socket)
        throw new InvalidClient(result.reason)
      }
      if (connections.isRetired(socket) && !(await connections.stillTrusted(socket))) {
        connections.closeAfterAnswer(socket)
        throw new InvalidClient('certificate no longer trusted')
      }
      request.peer = result.identity
      if (!isKnownCaller(policy.current, result.identity.subject)) {
        // The explanation is built only when someone reads it: unknown callers must stay cheap to refuse.
        if (debugEnabled(request.log)) {
          const decision = decide(policy.current, result.identity.subject, '', undefined)
          request.log.debug({ event: 'policy_denied', sub: result.identity.subject, ...explainDecision(decision, result.identity.subject, '') }, 'policy denied')
        }
        throw new InvalidClient('unknown caller')
      }
      const rate = rateLimiter.take(result.identity.subject)
      if (!rate.allowed) {
        metrics.tokenRateLimited.inc({ caller: result.identity.subject })
        throw new SlowDown(rate.retryAfter)
      }
    },
    onResponse: async (request, reply) => {
      const outcome = reply.statusCode === 200 ? 'issued' : (request.answeredWith ?? 'server_error')
      metrics.tokenRequestSeconds.observe({ outcome }, reply.elapsedTime / 1000)
    },
    handler: async (request, reply) => {
      const peer = request.peer as PeerIdentity
      const { audience, scope } = checkBody(request.body, peer.subject)
      const decision = decide(policy.current, peer.subject, audience, scope)
      if (!decision.allowed) {
        if (debugEnabled(request.log)) {
          request.log.debug({ event: 'policy_denied', sub: peer.subject, aud: audience, ...explainDecision(decision, peer.subject, audience, scope) }, 'policy denied')
        }
        if (decision.error === 'invalid_client') throw new InvalidClient(decision.reason)
        if (decision.error === 'invalid_target') throw new InvalidTarget(decision.reason)
        throw new InvalidScope(decision.reason)
      }
      const key = keys.signingKey()
      if (key === undefined) throw unavailable('no_active_key', noKeyRetryAfter(keys, clock.now()))
      const claims = buildClaims({
        issuer: config.issuer,
        subject: peer.subject,
        thumbprint: peer.thumbprint,
        audience,
        scopes: decision.scopes,
        ttl: config.tokenTtl,
        now: clock.now(),
        jti: newJti(),
      })
      const started = process.hrtime.bigint()
      let accessToken: string
      try {
        accessToken = await signAccessToken(claims, key)
      } catch (err) {
        // The key cannot sign right now (a PKCS#11 token down or being reloaded, which is reported once
        // where it is noticed): try again shortly. Any other failure is logged here.
        if ((err as { code?: unknown }).code === 'ERR_TOKEN_UNAVAILABLE') throw unavailable('signer_unavailable', SIGNER_RETRY_AFTER_SEC)
        request.log.error({ event: 'signing_failed', kid: key.kid, err }, 'signing failed')
        throw unavailable('signing_failed', SIGNER_RETRY_AFTER_SEC)
      }
      metrics.signingSeconds.observe(Number(process.hrtime.bigint() - started) / 1e9)
      metrics.tokensIssued.inc({ audience })
      request.log.info(
        { event: 'token_issued', sub: claims.sub, aud: claims.aud, scope: claims.scope, jti: claims.jti, kid: key.kid, x5t: peer.thumbprint },
        'token issued',
      )
      void reply.header('cache-control', 'no-store').header('pragma', 'no-cache')
      return {
        access_token: accessToken,
        token_type: 'Bearer',
        expires_in: claims.exp - claims.iat,
        ...(claims.scope === undefined ? {} : { scope: claims.scope }),
      }
    },
  })
}
