import { watch, type FSWatcher } from 'node:fs'

export interface Watcher {
  close(): void
}

export interface WatchOptions {
  /** Wait this long after the last event before calling back, so a burst of writes is one reload. */
  debounceMs?: number
  /** Also call back every `pollMs`: shared volumes (NFS, Kubernetes Secrets) often deliver no events. */
  pollMs?: number
}

/**
 * Watches a directory (not a file: an atomic rename replaces the inode a file watch holds) and calls
 * `onChange` once per burst of changes, plus on a polling interval as a fallback. The callback decides
 * whether anything really changed.
 */
export function watchDir(dir: string, onChange: () => void, options: WatchOptions = {}): Watcher {
  const debounceMs = options.debounceMs ?? 100
  let timer: NodeJS.Timeout | undefined
  const fire = (): void => {
    if (timer !== undefined) clearTimeout(timer)
    timer = setTimeout(() => {
      timer = undefined
      onChange()
    }, debounceMs)
    timer.unref()
  }
  let watcher: FSWatcher | undefined
  try {
    watcher = watch(dir, { persistent: false }, fire)
    watcher.on('error', () => {
      // The directory went away or the platform gave up on events: polling carries on.
      watcher?.close()
      watcher = undefined
    })
  } catch {
    watcher = undefined
  }
  const poll = options.pollMs === undefined || options.pollMs <= 0 ? undefined : setInterval(onChange, options.pollMs)
  poll?.unref()
  return {
    close(): void {
      watcher?.close()
      if (timer !== undefined) clearTimeout(timer)
      if (poll !== undefined) clearInterval(poll)
    },
  }
}
