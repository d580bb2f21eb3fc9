/**
 * gRPC helpers (@grpc/grpc-js, an optional peer dependency: only this subpath loads it). Calling side:
 * `serviceClient`, a client whose calls carry a token for the callee over mTLS with the certificate the token
 * is bound to (following renewals of `TokenClient.tls`) and retry once with a fresh token on UNAUTHENTICATED;
 * or, with fixed material, call credentials that put a cached token into metadata `x-service-token`,
 * composed with TLS channel credentials. Receiving side: wrappers for unary and streaming handlers that verify the
 * token against the peer certificate and decide with the callee policy, answering UNAUTHENTICATED /
 * PERMISSION_DENIED with no details. A handler that throws (or rejects) answers UNKNOWN, as grpc-js itself
 * does for an unwrapped handler; it never becomes an unhandled rejection that ends the process.
 */
import grpc from '@grpc/grpc-js'
import type { RouteRule } from './callee-policy.js'
import { peerThumbprintOf } from './certificate.js'
import { TokenClientError, type DenialReason } from './errors.js'
import { DenialLog, type DenialLogger } from './denial-log.js'
import { createGuard, safely, type GuardOptions, type Verdict } from './guard.js'
import type { TlsMaterial } from './tls-files.js'
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

/** A gRPC client class, generated or made by `grpc.makeGenericClientConstructor`. */
export type GrpcClientConstructor<C extends grpc.Client> = new (address: string, credentials: grpc.ChannelCredentials, options?: grpc.ClientOptions) => C

/** Options of `serviceClient`: grpc-js client options, and a hook for metrics. */
export interface ServiceClientOptions extends grpc.ClientOptions {
  /** Told when a call refused UNAUTHENTICATED was retried with a fresh token. Must not throw (a throw is ignored). */
  readonly onRetry?: (info: { readonly audience: string; readonly method: string }) => void
}

/** One client per TLS material: its channel presents that certificate, its calls carry tokens bound to it. */
interface Generation<C extends grpc.Client> {
  readonly material: TlsMaterial
  client: C
  /** Calls started and not yet ended. */
  active: number
  /** A renewal replaced its material: it takes no new call and closes when its last one ends. */
  retired: boolean
}

const asBuffer = (pem: string | Buffer): Buffer => (typeof pem === 'string' ? Buffer.from(pem) : pem)

/**
 * A client of `Client` for `address` whose every call carries a token for `audience` (and `scopes`) in
 * metadata `x-service-token`, over TLS with `tokens.tls` — the certificate the token is bound to. When the
 * TokenClient's material is renewed, new calls go over a new channel with the new certificate; the old
 * channel finishes its calls and closes. A unary or server-streaming call that the callee refuses
 * UNAUTHENTICATED before any answer is retried once with a fresh token (`TokenClient.invalidate`, at most once
 * per key per cooldown); client-streaming and bidi calls are not retried (their request stream cannot be sent
 * again), and PERMISSION_DENIED never is. Without a token the call fails UNAVAILABLE (authz unreachable,
 * `slow_down`, a 5xx) or UNAUTHENTICATED (authz refused).
 */
export function serviceClient<C extends grpc.Client>(
  Client: GrpcClientConstructor<C>,
  address: string,
  tokens: TokenClient,
  audience: string,
  scopes?: string | readonly string[],
  options: ServiceClientOptions = {},
): C {
  const { onRetry, interceptors = [], interceptor_providers: providers, ...clientOptions } = options
  let current: Generation<C> | undefined
  let closed = false
  const make = (material: TlsMaterial): Generation<C> => {
    const gen = { material, active: 0, retired: false } as Generation<C>
    const ours = authorizedCalls(gen, tokens, audience, scopes, onRetry)
    // Innermost, so that the service's own interceptors see one call however many attempts it took.
    const chain = providers === undefined ? { interceptors: [...interceptors, ours] } : { interceptor_providers: [...providers, () => ours] }
    const { ca, cert, key } = material
    gen.client = new Client(address, grpc.credentials.createSsl(asBuffer(ca), asBuffer(key), asBuffer(cert)), { ...clientOptions, ...chain })
    return gen
  }
  const client = (): C => {
    const material = tokens.tls
    if (current === undefined || current.material !== material) {
      const old = current
      current = make(material)
      if (old !== undefined) {
        old.retired = true
        if (old.active === 0) old.client.close()
      }
    }
    return current.client
  }
  return new Proxy(Object.create(Client.prototype) as C, {
    get(_target, property) {
      if (property === 'close') {
        return () => {
          closed = true
          current?.client.close()
        }
      }
      const target = closed && current !== undefined ? current.client : client()
      const value: unknown = Reflect.get(target, property, target)
      return typeof value === 'function' ? (value as (...args: unknown[]) => unknown).bind(target) : value
    },
  })
}

/** The interceptor of one generation's client: per-call credentials with its token, one retry on UNAUTHENTICATED. */
function authorizedCalls<C extends grpc.Client>(
  gen: Generation<C>,
  tokens: TokenClient,
  audience: string,
  scopes: string | readonly string[] | undefined,
  onRetry: ServiceClientOptions['onRetry'],
): grpc.Interceptor {
  return (options, nextCall) => {
    gen.active++
    const ended = (): void => {
      if (--gen.active === 0 && gen.retired) gen.client.close()
    }
    const open = (): { call: ReturnType<grpc.NextCall>; sent: { token?: string } } => {
      const sent: { token?: string } = {}
      const credentials = grpc.credentials.createFromMetadataGenerator((_params, callback) => {
        tokens.tokenFor(gen.material, audience, scopes).then(
          (token) => {
            sent.token = token
            const metadata = new grpc.Metadata()
            metadata.set(SERVICE_TOKEN_METADATA, token)
            callback(null, metadata)
          },
          (err: unknown) => callback(credentialsFailure(err)),
        )
      })
      const call = nextCall({ ...options, credentials: options.credentials === undefined ? credentials : options.credentials.compose(credentials) })
      return { call, sent }
    }
    const retry = async (token: string): Promise<boolean> => {
      if (!tokens.invalidate(audience, scopes, token)) return false
      const fresh = await tokens.tokenFor(gen.material, audience, scopes).catch(() => undefined)
      if (fresh === undefined || fresh === token) return false
      safely(onRetry, { audience, method: options.method_definition.path })
      return true
    }
    const drop = (token: string): void => void tokens.invalidate(audience, scopes, token)
    return new grpc.InterceptingCall(new RetryOnce(open, retry, drop, !options.method_definition.requestStream, ended))
  }
}

/**
 * A call that may be sent twice: the first attempt's answer is held back while it may still be retried (no
 * message received yet), and a retry replays what the caller did — start, its one request message, half
 * close, the reads it asked for.
 */
class RetryOnce {
  #call: ReturnType<grpc.NextCall>
  #sent: { token?: string }
  #listener: grpc.InterceptingListener | undefined
  #metadata: grpc.Metadata | undefined
  #message: { readonly context: Parameters<ReturnType<grpc.NextCall>['sendMessageWithContext']>[0]; readonly value: unknown } | undefined
  #halfClosed = false
  #reads = 0
  #received = 0
  #held: grpc.Metadata | undefined
  #heldNull = false
  #retryable: boolean
  #cancelled = false

  constructor(
    private readonly open: () => { call: ReturnType<grpc.NextCall>; sent: { token?: string } },
    private readonly retry: (token: string) => Promise<boolean>,
    private readonly drop: (token: string) => void,
    retryable: boolean,
    private readonly ended: () => void,
  ) {
    this.#retryable = retryable
    ;({ call: this.#call, sent: this.#sent } = open())
  }

  start(metadata: grpc.Metadata, listener?: Partial<grpc.InterceptingListener>): void {
    this.#metadata = metadata
    this.#listener = listener as grpc.InterceptingListener
    this.#call.start(metadata, this.#attemptListener())
  }

  sendMessageWithContext(context: Parameters<ReturnType<grpc.NextCall>['sendMessageWithContext']>[0], message: unknown): void {
    if (this.#retryable) this.#message = { context, value: message }
    this.#call.sendMessageWithContext(context, message)
  }

  sendMessage(message: unknown): void {
    this.sendMessageWithContext({}, message)
  }

  startRead(): void {
    this.#reads++
    this.#call.startRead()
  }

  halfClose(): void {
    this.#halfClosed = true
    this.#call.halfClose()
  }

  cancelWithStatus(status: grpc.status, details: string): void {
    this.#cancelled = true
    this.#call.cancelWithStatus(status, details)
  }

  getPeer(): string {
    return this.#call.getPeer()
  }

  getAuthContext(): ReturnType<ReturnType<grpc.NextCall>['getAuthContext']> {
    return this.#call.getAuthContext()
  }

  #attemptListener(): grpc.InterceptingListener {
    const sent = this.#sent
    const listener = this.#listener as grpc.InterceptingListener
    const mayRetry = (): boolean => this.#retryable && this.#received === 0 && !this.#cancelled
    return {
      onReceiveMetadata: (metadata) => {
        if (mayRetry()) this.#held = metadata
        else listener.onReceiveMetadata(metadata)
      },
      onReceiveMessage: (message) => {
        // grpc-js ends a unary call that got no answer with a null message before its status: no message yet.
        if (message === null && mayRetry()) {
          this.#heldNull = true
          return
        }
        this.#received++
        this.#reads = Math.max(0, this.#reads - 1)
        this.#release()
        listener.onReceiveMessage(message)
      },
      onReceiveStatus: (status) => {
        const token = sent.token
        if (status.code !== grpc.status.UNAUTHENTICATED || token === undefined) return this.#end(status)
        if (!mayRetry()) {
          // Not sent again (a request stream, a retry): the token is dropped all the same, for the next call.
          this.drop(token)
          return this.#end(status)
        }
        this.#retryable = false // once
        this.retry(token).then(
          (again) => (again && !this.#cancelled ? this.#again() : this.#end(status)),
          () => this.#end(status),
        )
      },
    }
  }

  #again(): void {
    this.#held = undefined
    this.#heldNull = false
    ;({ call: this.#call, sent: this.#sent } = this.open())
    this.#call.start(this.#metadata as grpc.Metadata, this.#attemptListener())
    if (this.#message !== undefined) this.#call.sendMessageWithContext(this.#message.context, this.#message.value)
    if (this.#halfClosed) this.#call.halfClose()
    for (let i = 0; i < this.#reads; i++) this.#call.startRead()
  }

  #release(): void {
    if (this.#held === undefined) return
    const held = this.#held
    this.#held = undefined
    this.#listener?.onReceiveMetadata(held)
  }

  #end(status: grpc.StatusObject): void {
    this.#release()
    if (this.#heldNull) this.#listener?.onReceiveMessage(null)
    this.#listener?.onReceiveStatus(status)
    this.ended()
  }
}

/** Options of the authorize* wrappers: the edge's (verifier, policy, allowUnlisted, onDecision) and these. */
export interface GrpcAuthOptions extends GuardOptions {
  /** The method's rule; else the callee policy's rule for the full method name. */
  readonly rule?: RouteRule
  /**
   * Denials are logged here, bounded (`DenialLog`: a line at once per reason and caller, then one count per
   * 10 s while they go on); wrappers given the same logger share one log. Fastify's `app.log` or any pino
   * logger will do.
   */
  readonly logger?: DenialLogger
  /**
   * Called on every denial with what may be counted (never the token); `sub` and `aud` are there once a
   * token's signature verified. A line per call here would let a caller flood the log: log with `logger`.
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
/** One bounded denial log per logger, shared by every wrapper given it. */
const denialLogs = new WeakMap<DenialLogger, DenialLog>()
function denialLogOf(logger: DenialLogger): DenialLog {
  let log = denialLogs.get(logger)
  if (log === undefined) {
    log = new DenialLog(logger)
    denialLogs.set(logger, log)
  }
  return log
}

function guardOf(options: GrpcAuthOptions): Guard {
  const guard = createGuard(options)
  const denials = options.logger === undefined ? undefined : denialLogOf(options.logger)
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
        denials?.note(verdict)
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
