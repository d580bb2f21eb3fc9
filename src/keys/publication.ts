/**
 * What publishing a keys directory now would do to the JWKS verifiers already have. Removing a revoked or
 * expired key is intended; removing a kid the directory does not know at all means the directory is a stale
 * copy, and the key it would unpublish may sign now: every token it signed would fail at every verifier.
 * The other sign of a stale copy is a key coming back: one older than a key still live, but gone from the
 * live JWKS — revoked or pruned there. Publishing it would republish it (a revoked key as the signing key).
 */
import { activeAt, published, type KeyStatus } from './lifecycle.js'
import type { Manifest, ManifestKey } from './manifest.js'

export interface PublicationChange {
  /** False when a key the directory does not know would be unpublished, or a removed key would come back. */
  readonly safe: boolean
  /** Kids the live JWKS has and the directory would keep publishing. */
  readonly kept: string[]
  /** Kids the directory would add to the JWKS. */
  readonly added: string[]
  /** Added kids removed on the live side (older than a live key, or revoked in the live manifest): they would come back. */
  readonly returning: string[]
  /** Kids the live JWKS has that the directory would unpublish, and why that is or is not expected. */
  readonly removed: { kid: string; why: 'revoked' | 'expired' | 'unknown' }[]
  /** The key the directory makes sign now, and whether verifiers already know it. */
  readonly active: { kid: string; published: boolean } | null
}

/**
 * Compares what `manifest` (in `statuses` at now) would publish with the kids of a live JWKS. With the
 * live manifest's revoked kids, a key revoked there before it ever signed is caught too (the JWKS alone
 * cannot tell it from a key new in this copy).
 */
export function publicationChange(
  liveKids: Iterable<string>,
  manifest: Manifest,
  statuses: readonly KeyStatus<ManifestKey>[],
  liveRevoked: ReadonlySet<string> = new Set(),
): PublicationChange {
  const live = new Set(liveKids)
  const publishing = new Set(published(statuses).map((k) => k.kid))
  const revoked = new Set(manifest.revoked.map((r) => r.kid))
  const expired = new Set(statuses.filter((s) => s.state === 'expired').map((s) => s.key.kid))
  const removed = [...live]
    .filter((kid) => !publishing.has(kid))
    .map((kid) => ({ kid, why: revoked.has(kid) ? ('revoked' as const) : expired.has(kid) ? ('expired' as const) : ('unknown' as const) }))
  const active = activeAt(statuses)?.kid
  const kept = [...publishing].filter((kid) => live.has(kid))
  const added = [...publishing].filter((kid) => !live.has(kid))
  // A key made after the live keys is new; one made before the newest live key was live once and is gone.
  const createdAt = new Map(manifest.keys.map((k) => [k.kid, k.createdAt]))
  const newestLive = Math.max(...kept.map((kid) => createdAt.get(kid) ?? Number.NEGATIVE_INFINITY))
  const returning = added.filter((kid) => (createdAt.get(kid) ?? Number.POSITIVE_INFINITY) < newestLive || liveRevoked.has(kid))
  return {
    safe: removed.every((r) => r.why !== 'unknown') && returning.length === 0,
    kept,
    added,
    returning,
    removed,
    active: active === undefined ? null : { kid: active, published: live.has(active) },
  }
}
