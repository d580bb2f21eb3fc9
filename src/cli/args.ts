/** Tiny shared helpers of the CLIs: duration parsing, usage errors, exit codes (0 ok, 1 failure, 2 usage). */
import { parseArgs, type ParseArgsConfig } from 'node:util'
import { loadConfig, type Config } from '../config.js'
import { AuthzError } from '../errors.js'

export const EXIT_OK = 0
export const EXIT_FAILURE = 1
export const EXIT_USAGE = 2

/** Parses `90s`, `10m`, `24h`, `7d` (and `0s`) into milliseconds. */
export function parseDuration(text: string): number {
  const match = /^(\d{1,9})(s|m|h|d)$/.exec(text.trim())
  if (match === null) throw new AuthzError('ERR_USAGE', `invalid duration ${JSON.stringify(text)} (write 90s, 10m, 24h or 7d)`)
  const unit = { s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 }[match[2] as 's' | 'm' | 'h' | 'd']
  return Number(match[1]) * unit
}

/** Formats milliseconds as the largest exact unit: 20m, 90s, 1h30m. */
export function formatDuration(ms: number): string {
  if (ms < 0) return `-${formatDuration(-ms)}`
  let s = Math.round(ms / 1000)
  const parts: string[] = []
  for (const [unit, size] of [['d', 86400], ['h', 3600], ['m', 60]] as const) {
    if (s >= size) {
      parts.push(`${Math.floor(s / size)}${unit}`)
      s %= size
    }
  }
  if (s > 0 || parts.length === 0) parts.push(`${s}s`)
  return parts.join('')
}

export function parse<T extends ParseArgsConfig>(config: T): ReturnType<typeof parseArgs<T>> {
  try {
    return parseArgs(config)
  } catch (err) {
    throw new AuthzError('ERR_USAGE', (err as Error).message)
  }
}

export interface Io {
  out(line: string): void
  err(line: string): void
}

export const processIo: Io = {
  out: (line) => process.stdout.write(`${line}\n`),
  err: (line) => process.stderr.write(`${line}\n`),
}

/** An instant for --json output: ISO 8601, or null when unset. */
export function isoOrNull(ms: number | null | undefined): string | null {
  return ms === null || ms === undefined ? null : new Date(ms).toISOString()
}

/** The configuration as the CLIs read it: the server's variables, without requiring TLS files. */
export function toolConfig(env: NodeJS.ProcessEnv): Config {
  return loadConfig(env, process.cwd(), { requireTls: false })
}
