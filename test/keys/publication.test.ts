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
