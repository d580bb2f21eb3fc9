/**
 * gRPC helpers (@grpc/grpc-js). Calling side: call credentials that put a cached token from a
 * TokenClient into metadata `x-service-token`, composed with TLS channel credentials. Receiving side: a
 * wrapper for unary handlers that verifies the token against the peer certificate and the method's rule,
 * answering UNAUTHENTICATED / PERMISSION_DENIED with no details.
 */
import grpc from '@grpc/grpc-js'
import type { CalleePolicy, RouteRule } from './callee-policy.js'
import { satisfies } from './callee-policy.js'
import { VerifyError } from './errors.js'
import type { TokenClient } from './token-client.js'
import type { VerifiedCaller, Verifier } from './verifier.js'

/** The gRPC metadata key that carries the token. */
export const SERVICE_TOKEN_METADATA = 'x-service-token'

/** Per-call credentials: a token for `audience` from the client's cache on every call. */
export function serviceCallCredentials(client: TokenClient, audience: string, scopes?: string | string[]): grpc.CallCredentials {
  return grpc.credentials.createFromMetadataGenerator((_params, callback) => {
    client.getToken(audience, scopes).then(
      (token) => {
        const metadata = new grpc.Metadata()
        metadata.set(SERVICE_TOKEN_METADATA, token)
        callback(null, metadata)
      },
      (err: Error) => callback(err),
    )
  })
}

/** mTLS channel credentials carrying the service token on every call. */
export function serviceChannelCredentials(
  tls: { ca: Buffer; cert: Buffer; key: Buffer },
  client: TokenClient,
  audience: string,
  scopes?: string | string[],
): grpc.ChannelCredentials {
  return grpc.credentials.combineChannelCredentials(
    grpc.credentials.createSsl(tls.ca, tls.key, tls.cert),
    serviceCallCredentials(client, audience, scopes),
  )
}

/** Options of authorizeUnary. */
export interface GrpcAuthOptions {
  readonly verifier: Verifier
  /** The method's rule; else the callee policy's rule for the method path. */
  readonly rule?: RouteRule
  readonly policy?: CalleePolicy
  readonly allowUnlisted?: boolean
  /** Called on every denial with what may be logged (never the token). */
  readonly onDenied?: (info: { code: grpc.status; reason: string; path: string; sub?: string; aud?: string }) => void
}

/** A unary handler that also receives the verified caller. */
export type AuthorizedUnaryHandler<Req, Res> = (
  call: grpc.ServerUnaryCall<Req, Res>,
  callback: grpc.sendUnaryData<Res>,
  caller: VerifiedCaller,
) => void | Promise<void>

/** Wraps a unary handler: it runs only for a verified, allowed caller, which it receives as a third argument. */
export function authorizeUnary<Req, Res>(handler: AuthorizedUnaryHandler<Req, Res>, options: GrpcAuthOptions): grpc.handleUnaryCall<Req, Res> {
  return (call, callback) => {
    const path = call.getPath()
    const deny = (code: grpc.status, reason: string, caller?: VerifiedCaller): void => {
      options.onDenied?.({ code, reason, path, ...(caller === undefined ? {} : { sub: caller.service, aud: caller.audience }) })
      callback({ code, details: code === grpc.status.UNAUTHENTICATED ? 'unauthenticated' : 'permission denied' })
    }
    const peer = call.getAuthContext().sslPeerCertificate
    if (peer === undefined || peer.raw === undefined) return deny(grpc.status.UNAUTHENTICATED, 'no peer certificate')
    const token = call.metadata.get(SERVICE_TOKEN_METADATA)
    if (token.length !== 1 || typeof token[0] !== 'string') return deny(grpc.status.UNAUTHENTICATED, 'ERR_TOKEN_MISSING')
    options.verifier.verify(token[0], { peerCertificate: peer }).then(
      (caller) => {
        const rule = options.rule ?? options.policy?.rule(path)
        if (rule === undefined ? options.allowUnlisted !== true : !satisfies(caller, rule)) {
          return deny(grpc.status.PERMISSION_DENIED, rule === undefined ? 'method not in policy' : 'scope or caller not allowed', caller)
        }
        return Promise.resolve(handler(call, callback, caller)).catch(() => callback({ code: grpc.status.INTERNAL, details: 'internal error' }))
      },
      (err: unknown) => deny(grpc.status.UNAUTHENTICATED, err instanceof VerifyError ? err.code : 'ERR_TOKEN_INVALID'),
    )
  }
}
