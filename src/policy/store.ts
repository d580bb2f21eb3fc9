import { createHash } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { dirname } from 'node:path'
import { AuthzError } from '../errors.js'
import { ReportOnce, Serial, type ReloadResult } from '../util/report-once.js'
import { watchDir, type Watcher } from '../util/watch.js'
import { parsePolicy, type Policy } from './policy.js'

export type PolicyReloadResult = ReloadResult<AuthzError>

/**
 * Holds the policy in force. A reload that finds an invalid file keeps the previous policy and reports
 * the error; the caller logs it and counts it.
 */
export class PolicyStore {
  readonly #serial = new Serial()
  readonly path: string
  #current: Policy
  #watcher: Watcher | undefined
  /** The last file content seen, good or bad: a bad file is reported once, not on every poll. */
  readonly #seen: ReportOnce

  private constructor(path: string, policy: Policy) {
    this.path = path
    this.#current = policy
    this.#seen = new ReportOnce(policy.sha256)
  }

  /** Loads and validates the file; throws AuthzError (naming the bad entry) when it cannot. */
  static async load(path: string): Promise<PolicyStore> {
    return new PolicyStore(path, await readPolicy(path))
  }

  /** Builds a store around an already validated policy (tests, embedding). */
  static of(path: string, policy: Policy): PolicyStore {
    return new PolicyStore(path, policy)
  }

  get current(): Policy {
    return this.#current
  }

  /**
   * Re-reads the file. Unchanged content is a no-op; an invalid file keeps the policy in force and is
   * reported once (until the content changes again). `force` reports a still-invalid file again (SIGHUP).
   */
  /** One reload at a time, in order (see Serial). */
  reload(force = false): Promise<PolicyReloadResult> {
    return this.#serial.run(() => this.#reload(force))
  }

  async #reload(force: boolean): Promise<PolicyReloadResult> {
    let text: string
    try {
      text = await readPolicyText(this.path)
    } catch (err) {
      if (!this.#seen.isNew(`error:${(err as AuthzError).message}`, force)) return { changed: false }
      return { changed: false, error: err as AuthzError }
    }
    if (!this.#seen.isNew(sha256(text), force)) return { changed: false }
    try {
      const next = parsePolicy(text, this.path)
      if (next.sha256 === this.#current.sha256) return { changed: false }
      this.#current = next
      return { changed: true }
    } catch (err) {
      return { changed: false, error: err as AuthzError }
    }
  }

  /** Reloads on changes of the file's directory (events, plus polling as a fallback). */
  watch(onReload: (result: PolicyReloadResult) => void, pollMs = 5000): void {
    this.#watcher?.close()
    this.#watcher = watchDir(
      dirname(this.path),
      () => {
        void this.reload().then(onReload)
      },
      { pollMs },
    )
  }

  close(): void {
    this.#watcher?.close()
    this.#watcher = undefined
  }
}

async function readPolicyText(path: string): Promise<string> {
  try {
    return await readFile(path, 'utf8')
  } catch (err) {
    throw new AuthzError('ERR_POLICY_READ', `cannot read policy ${path}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`)
  }
}

async function readPolicy(path: string): Promise<Policy> {
  return parsePolicy(await readPolicyText(path), path)
}

function sha256(text: string): string {
  return createHash('sha256').update(text).digest('hex')
}
