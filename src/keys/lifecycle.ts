/**
 * Signing-key lifecycle as pure functions of (keys, now, timing). Every replica that reads the same
 * manifest computes the same states at the same instant, so they switch keys together without talking.
 *
 *   next     published in the JWKS, not signing yet (activatesAt > now)
 *   active   the newest key whose activation has passed: the only one that signs
 *   retired  superseded by a newer active key; still published so its tokens verify
 *   expired  retired long enough that no token it signed can still be valid: unpublished, prunable
 *
 * A key retires when a newer one activates. Once that has happened the keys CLI records the instant in
 * the manifest (`retiredAt`), so history stays what happened: removing a key later (a revoke) never
 * changes when another key retired, and never brings an expired key back into the JWKS.
 */

export type KeyState = 'next' | 'active' | 'retired' | 'expired'

/** What the lifecycle needs to know about a key. */
export interface KeyTimes {
  readonly kid: string
  /** ms since epoch */
  readonly createdAt: number
  /** ms since epoch */
  readonly activatesAt: number
  /** ms since epoch: when it stopped signing, once recorded (see recordRetirements). */
  readonly retiredAt?: number | undefined
}

export interface Timing {
  /** Max token lifetime, seconds (`AUTHZ_TOKEN_TTL`). */
  readonly tokenTtl: number
  /** JWKS `max-age`, seconds (`AUTHZ_JWKS_MAX_AGE`). */
  readonly jwksMaxAge: number
  /** Extra time a retired key stays published, seconds: clock skew plus verifier leeway. */
  readonly marginSec?: number
}

export interface KeyStatus<K extends KeyTimes = KeyTimes> {
  readonly key: K
  readonly state: KeyState
  /** When a newer key took over (ms), or null while it is next or active. */
  readonly retiredAt: number | null
  /** When it may be pruned (ms), or null while it is next or active. */
  readonly prunableAt: number | null
}

/** Default margin: verifiers accept up to 30 s of leeway; allow clock skew on top. */
export const DEFAULT_MARGIN_SEC = 300

/** How long a retired key stays published, ms: max token TTL + JWKS max-age + margin. */
export function retentionMs(timing: Timing): number {
  return (timing.tokenTtl + timing.jwksMaxAge + (timing.marginSec ?? DEFAULT_MARGIN_SEC)) * 1000
}

/**
 * How often verifiers refresh a JWKS at most, seconds: both SDKs raise a shorter `max-age` to this, and
 * refetch on an unknown kid at most once per this long.
 */
export const VERIFIER_REFRESH_FLOOR_SEC = 30

/**
 * The shortest safe activation delay, ms: twice the time a verifier may keep a JWKS — its max-age, or the
 * SDKs' refresh floor when that is longer — so every verifier has fetched the key before it signs.
 */
export function safeActivationDelayMs(timing: Timing): number {
  return 2 * Math.max(timing.jwksMaxAge, VERIFIER_REFRESH_FLOOR_SEC) * 1000
}

/** Activation order: by activation instant, then creation instant, then kid (a total order). */
export function byActivation(a: KeyTimes, b: KeyTimes): number {
  return a.activatesAt - b.activatesAt || a.createdAt - b.createdAt || (a.kid < b.kid ? -1 : a.kid > b.kid ? 1 : 0)
}

/** The state of every key at `now`, in activation order. */
export function keyStates<K extends KeyTimes>(keys: readonly K[], now: number, timing: Timing): KeyStatus<K>[] {
  const ordered = [...keys].sort(byActivation)
  // The newest activated key that has not been recorded as retired signs.
  let activeIndex = -1
  for (let i = 0; i < ordered.length; i++) {
    const key = ordered[i] as K
    if (key.activatesAt <= now && (key.retiredAt === undefined || key.retiredAt > now)) activeIndex = i
  }
  const retention = retentionMs(timing)
  return ordered.map((key, i) => {
    if (key.activatesAt > now) return { key, state: 'next', retiredAt: null, prunableAt: null }
    if (i === activeIndex) return { key, state: 'active', retiredAt: null, prunableAt: null }
    const retiredAt = key.retiredAt ?? (ordered[i + 1] as K).activatesAt
    const prunableAt = retiredAt + retention
    return { key, state: now >= prunableAt ? 'expired' : 'retired', retiredAt, prunableAt }
  })
}

/** The keys with the retirement instant of each retired or expired one written down (what the CLI stores). */
export function recordRetirements<K extends KeyTimes>(keys: readonly K[], now: number, timing: Timing): K[] {
  const retiredAt = new Map(keyStates(keys, now, timing).map((s) => [s.key.kid, s.retiredAt]))
  return keys.map((key) => {
    const at = retiredAt.get(key.kid)
    return key.retiredAt !== undefined || at === null || at === undefined ? key : Object.freeze({ ...key, retiredAt: at })
  })
}

/** The one key that signs at `now`, or undefined when none has activated. */
export function activeAt<K extends KeyTimes>(statuses: readonly KeyStatus<K>[]): K | undefined {
  return statuses.find((s) => s.state === 'active')?.key
}

/** Keys that belong in the JWKS at `now`: next, active and retired (not expired). */
export function published<K extends KeyTimes>(statuses: readonly KeyStatus<K>[]): K[] {
  return statuses.filter((s) => s.state !== 'expired').map((s) => s.key)
}

/** The next instant (ms) at which some key changes state, or null when nothing is scheduled. */
export function nextTransition(statuses: readonly KeyStatus[], now: number): number | null {
  let next: number | null = null
  for (const s of statuses) {
    for (const t of [s.key.activatesAt, s.prunableAt]) {
      if (t !== null && t > now && (next === null || t < next)) next = t
    }
  }
  return next
}
