import type { Io } from '../runner.js'

/** Every change first removes what an interrupted run left (temp files, key files no manifest names): say so. */
export function reportLeftovers(leftovers: readonly string[], io: Io): void {
  if (leftovers.length > 0) io.err(`removed what an interrupted run left: ${leftovers.join(', ')}`)
}
