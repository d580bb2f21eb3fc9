/**
 * authz as a library: what calling and receiving services import, and the issuer's building blocks.
 *
 * @packageDocumentation
 */

/** Calling side: fetch, cache and refresh tokens from authz over mTLS. */
export { TokenClient, type TokenClientOptions } from './sdk/token-client.js'
/** Receiving side: verify tokens offline against authz's JWKS. */
export {
  createVerifier,
  thumbprintOf,
  MAX_LEEWAY_SEC,
  type Verifier,
  type VerifierOptions,
  type VerifiedCaller,
  type CertificateInput,
} from './sdk/verifier.js'
/** Receiving side: the service's own route → scope policy. */
export { CalleePolicy, parseCalleePolicy, satisfies, type CalleePolicyDocument, type RouteRule } from './sdk/callee-policy.js'
/** Receiving side: the Fastify plugin (`X-Service-Token`, bare 401/403, `request.caller`). */
export { serviceAuth, SERVICE_TOKEN_HEADER, type ServiceAuthOptions, type ServiceAuthRouteConfig, type RequestCaller } from './sdk/fastify.js'
/** gRPC: call credentials for callers, a unary handler wrapper for servers. */
export {
  serviceCallCredentials,
  serviceChannelCredentials,
  authorizeUnary,
  SERVICE_TOKEN_METADATA,
  type GrpcAuthOptions,
  type AuthorizedUnaryHandler,
} from './sdk/grpc.js'
/** Typed errors with stable codes. */
export { TokenClientError, VerifyError, type TokenClientErrorCode, type VerifyErrorCode } from './sdk/errors.js'
/** Time, injectable everywhere (tests move a ManualClock instead of sleeping). */
export { systemClock, ManualClock, type Clock } from './clock.js'
/** Starting the issuer from code (what `authz-server` does). */
export { startServer, type RunningServer, type StartOptions } from './server.js'
/** Building the issuer's apps without listening (embedding, tests). */
export { buildApp, buildOpsApp, type AppDeps, type TlsMaterial } from './app.js'
/** Configuration, validated from the environment. */
export { loadConfig, configSchema, type Config } from './config.js'
/** The dev PKI (node-forge): for development and tests only. */
export { createCa, createServerCert, createClientCert, type KeyPairPem } from './pki/dev-pki.js'
