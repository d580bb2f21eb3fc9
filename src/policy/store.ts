import { dirname } from 'node:path'
import { AuthzError } from '../errors.js'
import { CN_IDENTITY, type IdentityMode } from '../identity/mode.js'
import { MiB, readFailure, readRegularFile } from '../util/read-file.js'
import { Reloader, type ReloadEvent, type ReloadResult } from '../util/reloader.js'
import { parsePolicy, type Policy } from './policy.js'

export type PolicyReloadResult = ReloadResult<AuthzError>

/**
 * Holds the policy in force. A reload that finds an invalid file keeps the previous policy, reports the
 * error once and retries (see Reloader) until a valid file is there.
 */
export class PolicyStore {
  readonly path: string
  /** The identity mode the policy's callers must fit (on every reload too). */
  readonly identity: IdentityMode
  #current: Policy
  readonly #reloader: Reloader<AuthzError>
  #unsubscribe: (() => void) | undefined

  private constructor(path: string, policy: Policy, identity: IdentityMode) {
    this.path = path
    this.identity = identity
    this.#current = policy
    this.#reloader = new Reloader({ attempt: () => this.#attempt(), toError: (err) => err as AuthzError })
  }

  /**
   * Loads and validates the file, whose callers must fit `identity` (CNs by default); throws AuthzError
   * (naming the bad entry) when it cannot.
   */
  static async load(path: string, identity: IdentityMode = CN_IDENTITY): Promise<PolicyStore> {
    return new PolicyStore(path, await readPolicy(path, identity), identity)
  }

  /** Builds a store around an already validated policy (tests, embedding). */
  static of(path: string, policy: Policy, identity: IdentityMode = CN_IDENTITY): PolicyStore {
    return new PolicyStore(path, policy, identity)
  }

  get current(): Policy {
    return this.#current
  }

  /** Since when (ms) the file has failed to load, or undefined while the policy in force is the file's. */
  get failingSince(): number | undefined {
    return this.#reloader.failingSince
  }

  /**
   * Re-reads the file. Unchanged content is a no-op; an invalid file keeps the policy in force and is
   * reported once (until the content changes again). `force` reports a still-invalid file again (SIGHUP).
   */
  reload(force = false): Promise<PolicyReloadResult> {
    return this.#reloader.reload(force)
  }

  /** Reloads on changes of the file's directory (events, plus polling as a fallback), retrying failures. */
  watch(onEvent: (event: ReloadEvent<AuthzError>) => void, pollMs = 5000): void {
    this.#unsubscribe?.()
    this.#unsubscribe = this.#reloader.onEvent(onEvent)
    this.#reloader.watch([dirname(this.path)], pollMs)
  }

  close(): void {
    this.#unsubscribe?.()
    this.#unsubscribe = undefined
    this.#reloader.close()
  }

  async #attempt(): Promise<boolean> {
    const next = parsePolicy(await readPolicyText(this.path), this.path, this.identity)
    if (next.sha256 === this.#current.sha256) return false
    this.#current = next
    return true
  }
}

async function readPolicyText(path: string): Promise<string> {
  try {
    return (await readRegularFile(path, { maxBytes: MiB })).toString('utf8')
  } catch (err) {
    throw new AuthzError('ERR_POLICY_READ', `cannot read policy ${path}: ${readFailure(err)}`)
  }
}

async function readPolicy(path: string, identity: IdentityMode): Promise<Policy> {
  return parsePolicy(await readPolicyText(path), path, identity)
}
