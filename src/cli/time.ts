/** Durations and instants as the CLIs read and write them. */
import { usageError } from './runner.js'

const UNIT_MS = { s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const

/** Parses `90s`, `10m`, `24h`, `7d` (and `0s`) into milliseconds. */
const MAX_DURATION_MS = 3650 * 86_400_000

export function parseDuration(text: string): number {
  const match = /^(\d{1,9})(s|m|h|d)$/.exec(text.trim())
  if (match === null) throw usageError(`invalid duration ${JSON.stringify(text)} (write 90s, 10m, 24h or 7d)`)
  const ms = Number(match[1]) * UNIT_MS[match[2] as keyof typeof UNIT_MS]
  // Ten years is far beyond any key's life, and keeps every instant a four-digit-year ISO 8601 date.
  if (ms > MAX_DURATION_MS) throw usageError(`duration ${JSON.stringify(text)} is longer than 3650d`)
  return ms
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

/** An instant as ISO 8601. */
export function iso(ms: number): string {
  return new Date(ms).toISOString()
}

/** An instant for --json output: ISO 8601, or null when unset. */
export function isoOrNull(ms: number | null | undefined): string | null {
  return ms === null || ms === undefined ? null : iso(ms)
}
