/** `--alg` and `--store` of `init` and `rotate`: which algorithm a new key is for, and where it lives. */
import { AuthzError } from '../../errors.js'
import type { NewKeyRequest } from '../../keys/admin.js'
import type { ManifestKey } from '../../keys/manifest.js'
import { ALGORITHMS, type Alg } from '../../keys/material.js'

export const NEW_KEY_OPTIONS = { alg: { type: 'string' }, store: { type: 'string' } } as const

/** The flags given; an absent one is left to the operation (init: RS256 in a file; rotate: like the newest key). */
export function newKeyRequest(values: { alg?: string | undefined; store?: string | undefined }): NewKeyRequest {
  const { alg, store } = values
  if (alg !== undefined && !(ALGORITHMS as readonly string[]).includes(alg)) throw new AuthzError('ERR_USAGE', `--alg is ${ALGORITHMS.join(' or ')}`)
  if (store !== undefined && store !== 'file' && store !== 'pkcs11') throw new AuthzError('ERR_USAGE', '--store is file or pkcs11')
  return { ...(alg === undefined ? {} : { alg: alg as Alg }), ...(store === undefined ? {} : { store }) }
}

/** What a created key's line says about it beyond its kid: nothing for the default (RS256, a file). */
export function keyDetail(key: ManifestKey): string {
  const parts = [...(key.alg === 'RS256' ? [] : [key.alg]), ...(key.store === 'pkcs11' ? [`in the PKCS#11 token as ${key.label}`] : [])]
  return parts.length === 0 ? '' : ` (${parts.join(', ')})`
}
