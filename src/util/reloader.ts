/**
 * The one reload machinery of policy, keys and TLS material. A store says how to bring its source in
 * force (`attempt`); this runs attempts one at a time, on file events, on a poll and on demand (SIGHUP),
 * and retries a failed one with bounded backoff until it succeeds. A failure is never remembered as
 * done: the retry re-reads the source, so a manifest that named a key file not there yet loads as soon
 * as the file arrives. What is reported is deduplicated (one report per distinct failure), what is
 * retried is not.
 */
import { watchDir, type Watcher } from './watch.js'

/** The result of any reload: whether something changed, or why nothing could (set once per distinct failure). */
export interface ReloadResult<E extends Error = Error> {
  readonly changed: boolean
  readonly error?: E
}

/** What a reload did, for logs and metrics. */
export type ReloadEvent<E extends Error = Error> =
  | { readonly kind: 'changed' }
  /** A failure not reported before (or reported again on demand); the last good state stays in force. */
  | { readonly kind: 'failed'; readonly error: E; readonly retryInMs: number }
  /** The source loads again after failing; `changed` tells whether it differed from what was in force. */
  | { readonly kind: 'recovered'; readonly changed: boolean; readonly failedFor: number }

export interface BackoffOptions {
  /** First retry after a failure, ms (default 500). */
  readonly initialMs?: number
  /** Longest wait between retries, ms (default 30 s). */
  readonly maxMs?: number
}

export interface ReloaderOptions<E extends Error> {
  /** Brings the source in force when it differs from what is; resolves true when it did. Throws on failure. */
  readonly attempt: () => Promise<boolean>
  /** Turns what `attempt` threw into the store's error type. */
  readonly toError: (err: unknown) => E
  readonly backoff?: BackoffOptions
  /** ms since epoch; only used to say how long a failure lasted. */
  readonly now?: () => number
  /** Runs `fn` after `ms` (default: an unref'd setTimeout); tests drive retries with their own. */
  readonly schedule?: Schedule
}

/** The wait before retry number `attempt` (1, 2, …): doubling from `initialMs`, never above `maxMs`. */
export const backoffMs = (attempt: number, initialMs: number, maxMs: number): number => Math.min(initialMs * 2 ** Math.min(attempt - 1, 30), maxMs)

/** A timer: runs `fn` after `ms` unless cancelled. */
export type Schedule = (fn: () => unknown, ms: number) => { cancel(): void }

const unrefTimeout: Schedule = (fn, ms) => {
  const timer = setTimeout(fn, ms)
  timer.unref()
  return { cancel: () => clearTimeout(timer) }
}

/**
 * Runs tasks one after another. Reloads come from a file watcher, a poll timer, a retry and SIGHUP at
 * once; run concurrently, an older read could finish last and put a stale version back in force.
 */
export class Serial {
  #tail: Promise<unknown> = Promise.resolve()

  run<T>(task: () => Promise<T>): Promise<T> {
    const result = this.#tail.then(task, task)
    this.#tail = result.catch(() => undefined)
    return result
  }
}

export class Reloader<E extends Error = Error> {
  readonly #options: ReloaderOptions<E>
  readonly #serial = new Serial()
  readonly #listeners = new Set<(event: ReloadEvent<E>) => void>()
  #failure: { readonly message: string; readonly since: number; readonly attempts: number } | undefined
  #retry: { cancel(): void } | undefined
  #watchers: Watcher[] = []
  /** Retries run only while watching: a store used without watch() (tools, tests) never works in the background. */
  #closed = true

  constructor(options: ReloaderOptions<E>) {
    this.#options = options
  }

  /** Since when (ms) the source has failed to load, or undefined while it loads. */
  get failingSince(): number | undefined {
    return this.#failure?.since
  }

  /** Called with every reportable event, whoever triggered the reload. */
  onEvent(listener: (event: ReloadEvent<E>) => void): () => void {
    this.#listeners.add(listener)
    return () => this.#listeners.delete(listener)
  }

  /**
   * One attempt now (after any attempt in progress). `force` reports a failure that was reported before
   * (SIGHUP: the operator asked).
   */
  reload(force = false): Promise<ReloadResult<E>> {
    return this.#serial.run(() => this.#run(force))
  }

  /** Reloads on changes in `dirs` (events) and every `pollMs` (shared volumes often deliver no events). */
  watch(dirs: readonly string[], pollMs = 5000): void {
    this.#closeWatchers()
    this.#closed = false
    // One poll for all, one event watcher per directory.
    this.#watchers = [...new Set(dirs)].map((dir, i) => watchDir(dir, () => void this.reload(), i === 0 ? { pollMs } : {}))
  }

  /** Stops watching and retrying. */
  close(): void {
    this.#closed = true
    this.#closeWatchers()
    this.#retry?.cancel()
    this.#retry = undefined
  }

  #closeWatchers(): void {
    for (const w of this.#watchers) w.close()
    this.#watchers = []
  }

  async #run(force: boolean): Promise<ReloadResult<E>> {
    const now = this.#options.now ?? Date.now
    let changed: boolean
    try {
      changed = await this.#options.attempt()
    } catch (thrown) {
      const error = this.#options.toError(thrown)
      const previous = this.#failure
      const attempts = (previous?.attempts ?? 0) + 1
      this.#failure = { message: error.message, since: previous?.since ?? now(), attempts }
      const retryInMs = this.#scheduleRetry(attempts)
      if (previous !== undefined && previous.message === error.message && !force) return { changed: false }
      this.#emit({ kind: 'failed', error, retryInMs })
      return { changed: false, error }
    }
    const failure = this.#failure
    this.#failure = undefined
    this.#retry?.cancel()
    this.#retry = undefined
    if (failure !== undefined) this.#emit({ kind: 'recovered', changed, failedFor: now() - failure.since })
    else if (changed) this.#emit({ kind: 'changed' })
    return { changed }
  }

  #scheduleRetry(attempts: number): number {
    const delay = backoffMs(attempts, this.#options.backoff?.initialMs ?? 500, this.#options.backoff?.maxMs ?? 30_000)
    if (this.#closed) return delay
    this.#retry?.cancel()
    this.#retry = (this.#options.schedule ?? unrefTimeout)(() => {
      this.#retry = undefined
      return this.reload()
    }, delay)
    return delay
  }

  #emit(event: ReloadEvent<E>): void {
    for (const listener of this.#listeners) listener(event)
  }
}
