/**
 * A keyset read from the keys directory: the manifest plus every key it names, each checked (usable for
 * its algorithm, kid = RFC 7638 thumbprint of its public key) and made ready to sign once: a PKCS#8 file
 * is read and imported, a PKCS#11 key is found in its token. Loading is all-or-nothing: a corrupt manifest
 * or a missing or bad key throws, and the server keeps the keyset it had.
 */
import { readFile, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { AuthzError } from '../errors.js'
import { MANIFEST_FILE, manifestHash, parseManifest, readManifestText, type FileKey, type Manifest, type ManifestKey, type Pkcs11Key } from './manifest.js'
import { fromPkcs8Pem, kidOf, publicJwkOf, type PublicJwk } from './material.js'
import { fileSigner, type KeySigner } from './signing.js'

/** A key ready to sign: its manifest entry, its signer and its public JWK. */
export type LoadedKey = ManifestKey & {
  readonly signer: KeySigner
  readonly publicJwk: PublicJwk
}

/** The keys of a PKCS#11 token (keys/pkcs11/): finds a key by its label and checks its kid. */
export interface TokenKeys {
  load(entry: Pkcs11Key): Promise<{ readonly signer: KeySigner; readonly publicJwk: PublicJwk }>
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

export interface LoadOptions {
  readonly passphrase?: string | undefined
  /** The keyset in force: keys already loaded are reused (a reload loads only new kids). */
  readonly previous?: Keyset | undefined
  readonly manifestText?: string
  /** The PKCS#11 token, when one is configured. */
  readonly token?: TokenKeys | undefined
}

/** Loads the keyset. */
export async function loadKeyset(dir: string, options: LoadOptions = {}): Promise<Keyset> {
  const text = options.manifestText ?? (await requireManifestText(dir))
  const manifest = parseManifest(text)
  const reuse = new Map(options.previous?.keys.map((k) => [k.kid, k]))
  const warnings: string[] = []
  const keys = await Promise.all(
    manifest.keys.map(async (entry): Promise<LoadedKey> => {
      const known = reuse.get(entry.kid)
      if (known !== undefined && known.alg === entry.alg && known.store === entry.store) return Object.freeze({ ...entry, signer: known.signer, publicJwk: known.publicJwk })
      if (entry.store === 'pkcs11') {
        if (options.token === undefined) {
          throw new AuthzError('ERR_KEYSET_INVALID', `key ${entry.kid} lives in a PKCS#11 token, and AUTHZ_PKCS11_MODULE is not set`)
        }
        return Object.freeze({ ...entry, ...(await options.token.load(entry)) })
      }
      return loadFileKey(dir, entry, options.passphrase, warnings)
    }),
  )
  return Object.freeze({ manifest, keys: Object.freeze(keys), sha256: manifestHash(text), warnings: Object.freeze(warnings) })
}

async function loadFileKey(dir: string, entry: FileKey, passphrase: string | undefined, warnings: string[]): Promise<LoadedKey> {
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
  const keyObject = fromPkcs8Pem(pem, passphrase, `key ${entry.kid}`, entry.alg)
  if ((await kidOf(keyObject)) !== entry.kid) {
    throw new AuthzError('ERR_KEYSET_INVALID', `key ${entry.kid}: ${entry.file} holds a different key (thumbprint mismatch)`, { reason: 'key_mismatch' })
  }
  return Object.freeze({ ...entry, signer: fileSigner(keyObject, entry.alg), publicJwk: publicJwkOf(keyObject, entry.kid, entry.alg) })
}
