/**
 * `@authz/sdk`: what calling and receiving services import. Its only runtime dependency is jose; the
 * Fastify plugin (`@authz/sdk/fastify`) and the gRPC helpers (`@authz/sdk/grpc`) are subpaths of their
 * own, so a service loads fastify or @grpc/grpc-js only when it asks for them.
 *
 * @packageDocumentation
 */

/** Calling side: fetch, cache and refresh tokens from authz over mTLS. */
export { TokenClient, REFRESH_BEFORE_MS, INVALIDATE_COOLDOWN_MS, type TokenClientOptions, type RefreshEvent } from './token-client.js'
/** Calling side: a `fetch` for one callee — its token on every request, the matching certificate, one retry on 401. */
export { serviceFetch, type ServiceFetch, type ServiceFetchInit, type ServiceFetchBody, type ServiceFetchOptions } from './service-fetch.js'
/** Both sides: certificate, key and CA bundle from files, followed as they are renewed. */
export {
  TlsFiles,
  TlsFilesError,
  TLS_FILES_POLL_MS,
  type TlsMaterial,
  type TlsFilePaths,
  type TlsFilesOptions,
  type TlsReloadEvent,
  type TlsFilesErrorCode,
} from './tls-files.js'
/** Receiving side: verify tokens offline against authz's JWKS, or a static key set. */
export {
  createVerifier,
  MAX_LEEWAY_SEC,
  MAX_TOKEN_TTL_SEC,
  type Verifier,
  type VerifierOptions,
  type VerifiedCaller,
  type VerifyContext,
} from './verifier.js'
/** The key set: algorithms a verifier may accept, and the JWKS shape. */
export { SUPPORTED_ALGORITHMS, type Algorithm, type JsonWebKeySet } from './key-set.js'
/** Bounds on the JWKS refresh interval. */
export type { JwksMaxAgeBounds } from './jwks.js'
/** Bounds of the verified-token cache. */
export type { TokenCacheOptions } from './token-cache.js'
/** The certificate thumbprint that binds a token (`cnf.x5t#S256`). */
export { thumbprintOf, type CertificateInput } from './certificate.js'
/** Receiving side: the service's own route → scope policy, and the one decision made with it. */
export {
  CalleePolicy,
  parseCalleePolicy,
  satisfies,
  HTTP_ROUTE_KEY,
  GRPC_ROUTE_KEY,
  type CalleePolicyDocument,
  type CalleePolicyLoadOptions,
  type PolicyLogger,
  type RouteRule,
  type Decision,
  type DecideOptions,
} from './callee-policy.js'
/** Where a callee policy comes from: a file, or a configuration center's URL. */
export { POLICY_POLL_MS, POLICY_PULL_MS, POLICY_FETCH_TIMEOUT_MS, type PolicyTls } from './policy-source.js'
/** Receiving side: the one pipeline of the edge (peer, token, verify, policy) and what it reports. */
export { createGuard, type CallOutcome, type Denial, type GuardOptions, type IncomingCall, type Verdict } from './guard.js'
/** Receiving side: denial log lines, bounded (one at once per reason and caller, then a count per interval). */
export { DenialLog, DENIAL_EVENT, type DenialLogger, type DenialLogOptions } from './denial-log.js'
export { LogSummary, type LogLine, type LogSummaryLogger, type LogSummaryOptions } from './log-summary.js'
/** Callee-side counters: calls let through, calls denied by reason. */
export {
  CalleeCounters,
  reasonLabel,
  CALLEE_VERIFIED_METRIC,
  CALLEE_DENIED_METRIC,
  CALLEE_POLICY_RELOAD_FAILURES_METRIC,
  CALLEE_POLICY_RELOAD_FAILING_METRIC,
} from './callee-counters.js'
/** The grammar shared with the issuer: scope-tokens, service names, SPIFFE IDs, splitting a scope string. */
export {
  SCOPE_TOKEN,
  SERVICE_NAME,
  SPIFFE_ID,
  SPIFFE_ID_MAX_LENGTH,
  isScopeToken,
  isServiceName,
  isSpiffeId,
  isCallerName,
  splitScopes,
} from './grammar.js'
/** Typed errors with stable codes, and the one vocabulary of denial reasons. */
export {
  TokenClientError,
  VerifyError,
  CalleePolicyError,
  VERIFY_ERROR_CODES,
  DENIAL_REASONS,
  CALLEE_POLICY_ERROR_CODES,
  type TokenClientErrorCode,
  type VerifyErrorCode,
  type DenialReason,
  type CalleePolicyErrorCode,
} from './errors.js'
/** Time, injectable everywhere (tests move a ManualClock instead of sleeping). */
export { systemClock, ManualClock, type Clock } from './clock.js'
/** For tools that inspect tokens (the issuer's `authz token inspect`): the verifier's key filter and its HTTP client. */
export { signingKeys } from './key-set.js'
export { httpRequestText, type HttpResult } from './http.js'
