/**
 * A keyset read from the keys directory: the manifest plus every key it names, each checked (PKCS#8, RSA
 * ≥ 2048, file kid = RFC 7638 thumbprint) and imported once. Loading is all-or-nothing: a corrupt manifest
 * or a missing or bad key file throws, and the server keeps the keyset it had.
 */
import { readFile, stat } from 'node:fs/promises'
import { join } from 'node:path'
import type { CryptoKey } from 'jose'
import { AuthzError } from '../errors.js'
import { MANIFEST_FILE, manifestHash, parseManifest, readManifestText, type Manifest, type ManifestKey } from './manifest.js'
import { fromPkcs8Pem, kidOf, publicJwkOf, toSigningKey, type PublicJwk } from './material.js'

export interface LoadedKey extends ManifestKey {
  readonly privateKey: CryptoKey
  readonly publicJwk: PublicJwk
}

export interface Keyset {
  readonly manifest: Manifest
  readonly keys: readonly LoadedKey[]
  /** SHA-256 of the manifest's bytes: key files are immutable (named by kid), so this identifies the set. */
  readonly sha256: string
  /** Non-fatal findings for the log (e.g. a key file readable by group or others). */
  readonly warnings: readonly string[]
}

/** The manifest's bytes; a missing manifest is an error here (a server needs a keyset). */
export async function requireManifestText(dir: string): Promise<string> {
  const text = await readManifestText(dir)
  if (text === null) throw new AuthzError('ERR_KEYSET_READ', `cannot read ${MANIFEST_FILE} in ${dir}: ENOENT`)
  return text
}

/**
 * Loads the keyset. `previous` lets already-imported keys be reused (a reload re-imports only new kids).
 */
export async function loadKeyset(
  dir: string,
  options: { passphrase?: string | undefined; previous?: Keyset | undefined; manifestText?: string } = {},
): Promise<Keyset> {
  const text = options.manifestText ?? (await requireManifestText(dir))
  const manifest = parseManifest(text)
  const reuse = new Map(options.previous?.keys.map((k) => [k.kid, k]))
  const warnings: string[] = []
  const keys = await Promise.all(
    manifest.keys.map(async (entry): Promise<LoadedKey> => {
      const path = join(dir, entry.file)
      let pem: string
      try {
        pem = await readFile(path, 'utf8')
        const mode = (await stat(path)).mode & 0o777
        // Group read is how Kubernetes hands Secret files to a non-root pod (0440 + fsGroup); world read is a leak.
        if ((mode & 0o007) !== 0) warnings.push(`${entry.file}: mode ${mode.toString(8)} lets any user read a private key (want 600 or 400)`)
      } catch (err) {
        throw new AuthzError('ERR_KEYSET_READ', `key ${entry.kid}: cannot read ${entry.file}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`)
      }
      const known = reuse.get(entry.kid)
      if (known !== undefined) return { ...entry, privateKey: known.privateKey, publicJwk: known.publicJwk }
      const keyObject = fromPkcs8Pem(pem, options.passphrase, `key ${entry.kid}`)
      if ((await kidOf(keyObject)) !== entry.kid) {
        throw new AuthzError('ERR_KEYSET_INVALID', `key ${entry.kid}: ${entry.file} holds a different key (thumbprint mismatch)`, { reason: 'key_mismatch' })
      }
      return Object.freeze({
        ...entry,
        privateKey: await toSigningKey(keyObject),
        publicJwk: publicJwkOf(keyObject, entry.kid),
      })
    }),
  )
  return Object.freeze({ manifest, keys: Object.freeze(keys), sha256: manifestHash(text), warnings: Object.freeze(warnings) })
}
