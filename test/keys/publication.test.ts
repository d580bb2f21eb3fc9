import t from 'tap'
import { keyStates } from '../../src/keys/lifecycle.js'
import type { Manifest } from '../../src/keys/manifest.js'
import { publicationChange } from '../../src/keys/publication.js'

const timing = { tokenTtl: 600, jwksMaxAge: 600, marginSec: 300 }
const min = 60_000
const key = (kid: string, activatesAt: number) => ({ kid, activatesAt, createdAt: activatesAt, alg: 'RS256' as const, store: 'file' as const, file: `${kid}.pem` })

t.test('publishing a directory: kept, added, and why a live kid would be removed', async (t) => {
  // a retired at 20 min and expired 25 min later; b active; c next.
  const manifest: Manifest = { version: 1, keys: [key('a', 0), key('b', 20 * min), key('c', 80 * min)], revoked: [{ kid: 'r', revokedAt: 10 * min }] }
  const statuses = keyStates(manifest.keys, 60 * min, timing)
  const change = publicationChange(['a', 'b', 'r'], manifest, statuses)
  t.same(change, {
    safe: true,
    kept: ['b'],
    added: ['c'],
    returning: [],
    removed: [
      { kid: 'a', why: 'expired' },
      { kid: 'r', why: 'revoked' },
    ],
    active: { kid: 'b', published: true },
  })
})

t.test('a stale copy that would unpublish a kid it does not know is not safe', async (t) => {
  const manifest: Manifest = { version: 1, keys: [key('a', 0)], revoked: [] }
  const change = publicationChange(['a', 'newer'], manifest, keyStates(manifest.keys, min, timing))
  t.equal(change.safe, false)
  t.same(change.removed, [{ kid: 'newer', why: 'unknown' }])
  t.same(publicationChange([], manifest, keyStates(manifest.keys, min, timing)).active, { kid: 'a', published: false }, 'verifiers have not seen the signing key')
})

t.test('a copy taken before an emergency revoke would bring the revoked key back: not safe (regression)', async (t) => {
  // The copy: a active, b next. Live: a revoked, b active now; the live JWKS is [b].
  const manifest: Manifest = { version: 1, keys: [key('a', 0), key('b', 30 * min)], revoked: [] }
  const change = publicationChange(['b'], manifest, keyStates(manifest.keys, 10 * min, timing))
  t.equal(change.safe, false)
  t.same(change.returning, ['a'])
  t.same(change.removed, [])
  // The same copy after its own revoke of a (the live state): safe.
  const revoked: Manifest = { version: 1, keys: [{ ...key('b', 10 * min), createdAt: 30 * min }], revoked: [{ kid: 'a', revokedAt: 10 * min }] }
  t.equal(publicationChange(['b'], revoked, keyStates(revoked.keys, 10 * min, timing)).safe, true)
  // A new key made in the copy after every live key (a rotation, or a revoke that had no next key): safe.
  const rotated: Manifest = { version: 1, keys: [key('b', 0), { ...key('c', 40 * min), createdAt: 20 * min }], revoked: [] }
  t.same(publicationChange(['b'], rotated, keyStates(rotated.keys, 20 * min, timing)), {
    safe: true,
    kept: ['b'],
    added: ['c'],
    returning: [],
    removed: [],
    active: { kid: 'b', published: true },
  })
})

t.test('a key revoked on the live side before it ever signed: only the live manifest tells (regression)', async (t) => {
  // The copy: a active, b next (made after a). Live: b revoked, so the live JWKS is [a] — exactly what a
  // copy with a new key b would see.
  const manifest: Manifest = { version: 1, keys: [key('a', 0), { ...key('b', 40 * min), createdAt: 20 * min }], revoked: [] }
  const statuses = keyStates(manifest.keys, 30 * min, timing)
  t.equal(publicationChange(['a'], manifest, statuses).safe, true, 'from the JWKS alone, b looks new')
  const change = publicationChange(['a'], manifest, statuses, new Set(['b']))
  t.equal(change.safe, false, 'with the live manifest: b was revoked there')
  t.same(change.returning, ['b'])
})
