/**
 * A PKCS#11 token as the server and the keys CLI see it: keys found by label (their kid checked against
 * the public key the token holds), signatures made inside the token, key pairs generated and destroyed
 * there. All calls into the module run on a worker thread (worker.ts). A token that cannot be reached at
 * start is a ConfigError naming the variable; one that fails later makes signing fail fast (the issuer
 * answers 503 and /readyz fails) while the module is reloaded with backoff until it works again.
 */
import { Worker } from 'node:worker_threads'
import { calculateJwkThumbprint, type JWK } from 'jose'
import type { Pkcs11Settings } from '../../config.js'
import { AuthzError, ConfigError } from '../../errors.js'
import type { TokenAdmin } from '../admin.js'
import type { TokenKeys } from '../keyset.js'
import type { Pkcs11Key } from '../manifest.js'
import { publicJwkFrom, type Alg, type PublicJwk } from '../material.js'
import type { KeySigner } from '../signing.js'
import { KiB, readFailure, readRegularFile } from '../../util/read-file.js'
import { backoffMs } from '../../util/reloader.js'
import type { Pkcs11Operation, Pkcs11Reply, Pkcs11WorkerData } from './protocol.js'

export interface Pkcs11Config extends Pkcs11WorkerData {
  /** Prefix of the labels of the keys authz makes (`AUTHZ_PKCS11_LABEL_PREFIX`). */
  readonly labelPrefix: string
}

export interface Pkcs11Options {
  /** Told when the token becomes unavailable (with why) and available again. */
  readonly onState?: (available: boolean, reason?: string) => void
  /** First and longest wait between attempts to reload a failed module, ms (default 1 s and 30 s). */
  readonly backoff?: { readonly initialMs?: number; readonly maxMs?: number }
}

/** Signing is impossible right now (the token is down or being reloaded): the issuer answers 503. */
export class TokenUnavailable extends AuthzError {
  constructor(reason: string) {
    super('ERR_TOKEN_UNAVAILABLE', `the PKCS#11 token is unavailable: ${reason}`)
  }
}

type Pending = { resolve(value: unknown): void; reject(err: Error): void }

/** One running worker: the module loaded, logged in, with its session pool. */
class Connection {
  readonly worker: Worker
  readonly #pending = new Map<number, Pending>()
  #next = 0
  #ended: Error | undefined

  private constructor(worker: Worker) {
    this.worker = worker
  }

  static start(data: Pkcs11WorkerData, onEnd: (err: Error) => void): Promise<Connection> {
    const worker = new Worker(new URL('./worker.js', import.meta.url), { workerData: data })
    const connection = new Connection(worker)
    return new Promise((resolve, reject) => {
      worker.on('message', (reply: Pkcs11Reply) => {
        if (reply.type === 'ready') {
          // An idle module thread never keeps a process alive (the server's listeners do; a CLI ends when
          // done); a request in flight does (see request()).
          worker.unref()
          resolve(connection)
        } else if (reply.type === 'failed') reject(new ConfigError(reply.variable, reply.message))
        else connection.#settle(reply)
      })
      const end = (err: Error): void => {
        if (connection.#ended !== undefined) return
        connection.#ended = err
        for (const pending of connection.#pending.values()) pending.reject(err)
        connection.#pending.clear()
        reject(err)
        onEnd(err)
      }
      worker.on('error', end)
      worker.on('exit', (code) => end(new Error(`the PKCS#11 worker exited (${code})`)))
    })
  }

  request(request: Pkcs11Operation): Promise<unknown> {
    if (this.#ended !== undefined) return Promise.reject(this.#ended)
    const id = this.#next++
    return new Promise((resolve, reject) => {
      if (this.#pending.size === 0) this.worker.ref()
      this.#pending.set(id, { resolve, reject })
      this.worker.postMessage({ ...request, id })
    })
  }

  #settle(reply: Extract<Pkcs11Reply, { type: 'result' }>): void {
    const pending = this.#pending.get(reply.id)
    if (pending === undefined) return
    this.#pending.delete(reply.id)
    if (this.#pending.size === 0) this.worker.unref()
    if (reply.error === undefined) pending.resolve(reply.result)
    else pending.reject(Object.assign(new Error(reply.error.message), { code: reply.error.code }))
  }

  /** Finalizes the module (so another worker can initialize it), then stops the thread; at most 2 s. */
  async close(): Promise<void> {
    if (this.#ended === undefined) {
      const timer = setTimeout(() => void this.worker.terminate(), 2000)
      await this.request({ op: 'close' }).catch(() => undefined)
      clearTimeout(timer)
    }
    await this.worker.terminate()
  }
}

export class Pkcs11Token implements TokenKeys, TokenAdmin {
  readonly #config: Pkcs11Config
  readonly #options: Pkcs11Options
  #connection: Connection | undefined
  /** A failed connection being closed: the next one starts after it (one module init per process). */
  #closing: Promise<void> = Promise.resolve()
  #reason = ''
  #retry: NodeJS.Timeout | undefined
  #attempts = 0
  #closed = false
  /** The kid each loaded label must still hold: checked again whenever the module is reloaded. */
  readonly #expected = new Map<string, string>()

  private constructor(config: Pkcs11Config, options: Pkcs11Options) {
    this.#config = config
    this.#options = options
  }

  /** Loads the module and logs in; throws ConfigError naming the variable that is wrong. */
  static async open(config: Pkcs11Config, options: Pkcs11Options = {}): Promise<Pkcs11Token> {
    const token = new Pkcs11Token(config, options)
    token.#connection = await Connection.start(config, (err) => token.#lost(err))
    return token
  }

  /** Whether signatures can be made now. */
  get available(): boolean {
    return this.#connection !== undefined
  }

  /** Finds the key pair of `entry` and checks it is the key its kid names, for its algorithm. */
  async load(entry: Pkcs11Key): Promise<{ readonly signer: KeySigner; readonly publicJwk: PublicJwk }> {
    let members: JWK
    try {
      members = (await this.#request({ op: 'public', label: entry.label })) as JWK
    } catch (err) {
      throw new AuthzError('ERR_KEYSET_READ', `key ${entry.kid}: ${(err as Error).message}`)
    }
    if ((entry.alg === 'ES256') !== (members.kty === 'EC')) {
      throw new AuthzError('ERR_KEYSET_INVALID', `key ${entry.kid}: the token's key ${entry.label} is not a ${entry.alg} key`, { reason: 'key_type' })
    }
    if ((await calculateJwkThumbprint(members, 'sha256')) !== entry.kid) {
      throw new AuthzError('ERR_KEYSET_INVALID', `key ${entry.kid}: the token's key ${entry.label} is a different key (thumbprint mismatch)`, { reason: 'key_mismatch' })
    }
    this.#expected.set(entry.label, entry.kid)
    return { signer: { sign: (input) => this.sign(entry.label, entry.alg, input) }, publicJwk: publicJwkFrom(members, entry.kid, entry.alg) }
  }

  /** A signature by the key `label`, made in the token. Fails fast with TokenUnavailable while it is down. */
  async sign(label: string, alg: Alg, input: Uint8Array): Promise<Uint8Array> {
    const result = await this.#request({ op: 'sign', label, alg, input })
    return new Uint8Array(result as Uint8Array)
  }

  async generate(alg: Alg): Promise<{ readonly kid: string; readonly label: string }> {
    return (await this.#request({ op: 'generate', alg, prefix: this.#config.labelPrefix })) as { kid: string; label: string }
  }

  async destroy(label: string): Promise<void> {
    await this.#request({ op: 'destroy', label })
  }

  async close(): Promise<void> {
    this.#closed = true
    if (this.#retry !== undefined) clearTimeout(this.#retry)
    const connection = this.#connection
    this.#connection = undefined
    await connection?.close()
  }

  async #request(request: Pkcs11Operation): Promise<unknown> {
    const connection = this.#connection
    if (connection === undefined) throw new TokenUnavailable(this.#reason)
    try {
      return await connection.request(request)
    } catch (err) {
      // A sign that fails means the token cannot sign (it was reset, removed, logged out, or lost the
      // key): reload the module rather than fail every request the same way.
      if (request.op === 'sign' && this.#connection === connection) {
        this.#reason = (err as Error).message
        this.#connection = undefined
        this.#closing = connection.close()
        this.#down()
      }
      if (request.op === 'sign') throw new TokenUnavailable((err as Error).message)
      throw err
    }
  }

  #lost(err: Error): void {
    if (this.#connection === undefined || this.#closed) return
    this.#reason = err.message
    this.#connection = undefined
    this.#down()
  }

  #down(): void {
    this.#options.onState?.(false, this.#reason)
    this.#schedule()
  }

  #schedule(): void {
    if (this.#closed) return
    const delay = backoffMs(++this.#attempts, this.#options.backoff?.initialMs ?? 1000, this.#options.backoff?.maxMs ?? 30_000)
    this.#retry = setTimeout(() => void this.#reconnect(), delay)
    this.#retry.unref()
  }

  async #reconnect(): Promise<void> {
    this.#retry = undefined
    try {
      await this.#closing
      const connection = await Connection.start(this.#config, (err) => this.#lost(err))
      if (this.#closed) {
        await connection.close()
        return
      }
      // The token that answers must hold the keys it held: a token replaced under the same label with
      // other keys would sign tokens no verifier accepts, behind a passing readiness probe.
      try {
        for (const [label, kid] of this.#expected) {
          const members = (await connection.request({ op: 'public', label })) as JWK
          if ((await calculateJwkThumbprint(members, 'sha256')) !== kid) throw new Error(`the token's key ${label} is no longer key ${kid}`)
        }
      } catch (err) {
        await connection.close()
        throw err
      }
      this.#connection = connection
      this.#attempts = 0
      this.#options.onState?.(true)
    } catch (err) {
      this.#reason = (err as Error).message
      // Said at every failed attempt (at most twice a minute once backed off): why it is still down.
      this.#options.onState?.(false, this.#reason)
      this.#schedule()
    }
  }
}

/** Opens the token that `settings` names (reading the PIN file now); a ConfigError names what is wrong. */
export async function openPkcs11(settings: Pkcs11Settings, options: Pkcs11Options = {}): Promise<Pkcs11Token> {
  let pin: string
  if ('file' in settings.pin) {
    try {
      pin = (await readRegularFile(settings.pin.file, { maxBytes: 4 * KiB })).toString('utf8').replace(/\r?\n$/, '')
    } catch (err) {
      throw new ConfigError('AUTHZ_PKCS11_PIN_FILE', `cannot read ${settings.pin.file} (${readFailure(err)})`)
    }
    // An empty PIN is a mistake, and a failed login counts toward the token's lockout.
    if (pin === '') throw new ConfigError('AUTHZ_PKCS11_PIN_FILE', `${settings.pin.file} is empty`)
  } else {
    pin = settings.pin.value
  }
  return Pkcs11Token.open(
    { module: settings.module, token: settings.token, pin, pinVariable: settings.pin.variable, sessions: settings.sessions, labelPrefix: settings.labelPrefix },
    options,
  )
}

/**
 * The token for the keys CLI: opened on first use (a command that touches no PKCS#11 key never loads the
 * module), closed by `close()`.
 */
export function lazyToken(settings: Pkcs11Settings): TokenAdmin & TokenKeys & { readonly available: boolean; close(): Promise<void> } {
  let opened: Promise<Pkcs11Token> | undefined
  const token = (): Promise<Pkcs11Token> => (opened ??= openPkcs11(settings))
  return {
    available: true,
    load: async (entry) => (await token()).load(entry),
    generate: async (alg) => (await token()).generate(alg),
    destroy: async (label) => (await token()).destroy(label),
    close: async () => {
      if (opened !== undefined) await (await opened).close()
    },
  }
}
