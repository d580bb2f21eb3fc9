/**
 * gRPC helpers (@grpc/grpc-js, an optional peer dependency: only this subpath loads it). Calling side:
 * call credentials that put a cached token from a TokenClient into metadata `x-service-token`, composed
 * with TLS channel credentials. Receiving side: wrappers for unary and streaming handlers that verify the
 * token against the peer certificate and decide with the callee policy, answering UNAUTHENTICATED /
 * PERMISSION_DENIED with no details. A handler that throws (or rejects) answers UNKNOWN, as grpc-js itself
 * does for an unwrapped handler; it never becomes an unhandled rejection that ends the process.
 */
import grpc from '@grpc/grpc-js'
import type { RouteRule } from './callee-policy.js'
import { peerThumbprintOf } from './certificate.js'
import { TokenClientError, type DenialReason } from './errors.js'
import { createGuard, safely, type GuardOptions, type Verdict } from './guard.js'
import type { TokenClient } from './token-client.js'
import type { VerifiedCaller } from './verifier.js'

/** The gRPC metadata key that carries the token. */
export const SERVICE_TOKEN_METADATA = 'x-service-token'

/**
 * The status a call fails with when no token can be had, as grpc-go's own token credentials and the Go kit
 * answer: UNAVAILABLE when it may pass by itself (authz unreachable, `slow_down`, a 5xx), UNAUTHENTICATED
 * when authz refused (the message names the OAuth error) or the client is closed.
 */
function credentialsFailure(err: unknown): Error & { code: grpc.status } {
  const retryable = !(err instanceof TokenClientError) || err.retryable
  const failure = new Error(err instanceof Error ? err.message : 'no token', { cause: err }) as Error & { code: grpc.status }
  failure.code = retryable ? grpc.status.UNAVAILABLE : grpc.status.UNAUTHENTICATED
  return failure
}

/** Per-call credentials: a token for `audience` from the client's cache on every call. */
export function serviceCallCredentials(client: TokenClient, audience: string, scopes?: string | string[]): grpc.CallCredentials {
  return grpc.credentials.createFromMetadataGenerator((_params, callback) => {
    client.getToken(audience, scopes).then(
      (token) => {
        const metadata = new grpc.Metadata()
        metadata.set(SERVICE_TOKEN_METADATA, token)
        callback(null, metadata)
      },
      (err: unknown) => callback(credentialsFailure(err)),
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

/** Options of the authorize* wrappers: the edge's (verifier, policy, allowUnlisted, onDecision) and these. */
export interface GrpcAuthOptions extends GuardOptions {
  /** The method's rule; else the callee policy's rule for the full method name. */
  readonly rule?: RouteRule
  /**
   * Called on every denial with what may be logged (never the token): write your one log line here. `sub`
   * and `aud` are there once a token's signature verified.
   */
  readonly onDenied?: (info: { code: grpc.status; reason: DenialReason; path: string; sub?: string; aud?: string }) => void
  /** Called when a handler throws or rejects (the caller gets UNKNOWN and nothing of the error). */
  readonly onHandlerError?: (err: unknown, info: { path: string; sub: string }) => void
}

/** A unary handler that also receives the verified caller. */
export type AuthorizedUnaryHandler<Req, Res> = (
  call: grpc.ServerUnaryCall<Req, Res>,
  callback: grpc.sendUnaryData<Res>,
  caller: VerifiedCaller,
) => void | Promise<void>
/** A client-streaming handler that also receives the verified caller. */
export type AuthorizedClientStreamingHandler<Req, Res> = (
  call: grpc.ServerReadableStream<Req, Res>,
  callback: grpc.sendUnaryData<Res>,
  caller: VerifiedCaller,
) => void | Promise<void>
/** A server-streaming handler that also receives the verified caller. */
export type AuthorizedServerStreamingHandler<Req, Res> = (call: grpc.ServerWritableStream<Req, Res>, caller: VerifiedCaller) => void | Promise<void>
/** A bidi-streaming handler that also receives the verified caller. */
export type AuthorizedBidiStreamingHandler<Req, Res> = (call: grpc.ServerDuplexStream<Req, Res>, caller: VerifiedCaller) => void | Promise<void>

type Fail = (code: grpc.status, details: string) => void
type AnyServerCall =
  | grpc.ServerUnaryCall<unknown, unknown>
  | grpc.ServerReadableStream<unknown, unknown>
  | grpc.ServerWritableStream<unknown, unknown>
  | grpc.ServerDuplexStream<unknown, unknown>

type Guard = (call: AnyServerCall, fail: Fail, handler: (caller: VerifiedCaller) => void | Promise<void>) => void

/**
 * The guard of one wrapped method: verifies the call, decides, and runs `handler` for an allowed caller.
 * Every path ends in exactly one `fail` or a handler run; a handler's synchronous throw or rejection, and
 * anything else that throws on the way (a callback of the options, the policy), becomes UNKNOWN.
 */
function guardOf(options: GrpcAuthOptions): Guard {
  const guard = createGuard(options)
  return (call, fail, handler) => {
    const path = call.getPath()
    const crashed = (err: unknown, caller: VerifiedCaller): void => {
      safely(options.onHandlerError, err, { path, sub: caller.service })
      fail(grpc.status.UNKNOWN, 'Unknown error')
    }
    const answer = (verdict: Verdict): void => {
      if (!verdict.allowed) {
        const code = verdict.status === 401 ? grpc.status.UNAUTHENTICATED : grpc.status.PERMISSION_DENIED
        const { reason, sub, aud } = verdict
        safely(options.onDenied, { code, reason, path, ...(sub === undefined ? {} : { sub }), ...(aud === undefined ? {} : { aud }) })
        return fail(code, code === grpc.status.UNAUTHENTICATED ? 'unauthenticated' : 'permission denied')
      }
      try {
        Promise.resolve(handler(verdict.caller)).catch((err: unknown) => crashed(err, verdict.caller))
      } catch (err) {
        crashed(err, verdict.caller)
      }
    }
    const verdict = guard({
      peerThumbprint: peerThumbprintOf(call.getAuthContext().sslPeerCertificate),
      tokens: call.metadata.get(SERVICE_TOKEN_METADATA),
      key: path,
      rule: options.rule,
      path,
    })
    Promise.resolve(verdict)
      .then(answer)
      .catch(() => fail(grpc.status.UNKNOWN, 'Unknown error'))
  }
}

/** A callback that answers once: a handler that answered and then threw must not answer twice. */
function once<Res>(callback: grpc.sendUnaryData<Res>): { callback: grpc.sendUnaryData<Res>; fail: Fail } {
  let done = false
  const answer: grpc.sendUnaryData<Res> = (...args) => {
    if (done) return
    done = true
    callback(...args)
  }
  return { callback: answer, fail: (code, details) => answer({ code, details }) }
}

/** Ends a stream with a status, once (grpc-js turns an emitted error into the call's status). */
function streamFail(call: grpc.ServerWritableStream<unknown, unknown>): Fail {
  let done = false
  return (code, details) => {
    if (done) return
    done = true
    call.emit('error', { code, details })
  }
}

/** The two handler kinds that answer through a callback (unary, client streaming) wrap the same way. */
function withCallback<Call extends AnyServerCall, Res>(
  handler: (call: Call, callback: grpc.sendUnaryData<Res>, caller: VerifiedCaller) => void | Promise<void>,
  options: GrpcAuthOptions,
): (call: Call, callback: grpc.sendUnaryData<Res>) => void {
  const guard = guardOf(options)
  return (call, callback) => {
    const answer = once(callback)
    guard(call, answer.fail, (caller) => handler(call, answer.callback, caller))
  }
}

/** The two handler kinds that answer on the stream (server streaming, bidi) wrap the same way. */
function onStream<Call>(handler: (call: Call, caller: VerifiedCaller) => void | Promise<void>, options: GrpcAuthOptions): (call: Call) => void {
  const guard = guardOf(options)
  return (call) => {
    const stream = call as unknown as grpc.ServerWritableStream<unknown, unknown>
    guard(stream, streamFail(stream), (caller) => handler(call, caller))
  }
}

/** Wraps a unary handler: it runs only for a verified, allowed caller, which it receives as a third argument. */
export const authorizeUnary: <Req, Res>(handler: AuthorizedUnaryHandler<Req, Res>, options: GrpcAuthOptions) => grpc.handleUnaryCall<Req, Res> = withCallback
/** Wraps a client-streaming handler (the caller arrives as a third argument). */
export const authorizeClientStreaming: <Req, Res>(
  handler: AuthorizedClientStreamingHandler<Req, Res>,
  options: GrpcAuthOptions,
) => grpc.handleClientStreamingCall<Req, Res> = withCallback
/** Wraps a server-streaming handler (the caller arrives as a second argument). */
export const authorizeServerStreaming: <Req, Res>(
  handler: AuthorizedServerStreamingHandler<Req, Res>,
  options: GrpcAuthOptions,
) => grpc.handleServerStreamingCall<Req, Res> = onStream
/** Wraps a bidi-streaming handler (the caller arrives as a second argument). */
export const authorizeBidiStreaming: <Req, Res>(handler: AuthorizedBidiStreamingHandler<Req, Res>, options: GrpcAuthOptions) => grpc.handleBidiStreamingCall<Req, Res> =
  onStream
