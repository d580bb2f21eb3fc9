/**
 * Reloads poll files every few seconds; a bad file must be reported once, not on every poll. This
 * remembers the last content (or error) seen and says whether a new one is worth acting on.
 */
export class ReportOnce {
  #last: string | undefined

  constructor(initial?: string) {
    this.#last = initial
  }

  /** True when `key` differs from the last one seen (or `force`); remembers it either way. */
  isNew(key: string, force = false): boolean {
    if (key === this.#last && !force) return false
    this.#last = key
    return true
  }
}

/** The result of any reload: whether something changed, or why nothing could. */
export interface ReloadResult<E extends Error = Error> {
  readonly changed: boolean
  readonly error?: E
}

/**
 * Runs tasks one after another. Reloads come from a file watcher, a poll timer and SIGHUP at once; run
 * concurrently, an older read could finish last and put a stale version back in force.
 */
export class Serial {
  #tail: Promise<unknown> = Promise.resolve()

  run<T>(task: () => Promise<T>): Promise<T> {
    const result = this.#tail.then(task, task)
    this.#tail = result.catch(() => undefined)
    return result
  }
}
