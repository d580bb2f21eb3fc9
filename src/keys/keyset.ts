/**
 * A keyset read from the keys directory: the manifest plus every key it names, each checked (usable for
 * its algorithm, kid = RFC 7638 thumbprint of its public key) and made ready to sign once: a PKCS#8 file
 * is read and imported, a PKCS#11 key is found in its token. Loading is all-or-nothing: a corrupt manifest
 * or a missing or bad key throws, and the server keeps the keyset it had. Every load reads every key file
 * again: a file replaced under an unchanged manifest is checked against its kid like a new one.
 */
import { stat } from 'node:fs/promises'
import { join } from 'node:path'
import { AuthzError } from '../errors.js'
import { sha256Hex } from '../util/digest.js'
import { KiB, readFailure, readRegularFile } from '../util/read-file.js'
import { MANIFEST_FILE, manifestHash, parseManifest, readManifestText, type FileKey, type Manifest, type ManifestKey, type Pkcs11Key } from './manifest.js'
import { fromPkcs8Pem, kidOf, publicJwkOf, type PublicJwk } from './material.js'
import { fileSigner, type KeySigner } from './signing.js'

/** The largest key file read: a PKCS#8 PEM of an RSA-16384 key is about 12 KiB. */
export const KEY_FILE_MAX_BYTES = 64 * KiB

/** A key ready to sign: its manifest entry, its signer and its public JWK. */
export type LoadedKey = ManifestKey & {
  readonly signer: KeySigner
  readonly publicJwk: PublicJwk
  /** SHA-256 of the key file's bytes (file keys): a reload reuses the key only while they are the same. */
  readonly fileSha256?: string
}

/** The keys of a PKCS#11 token (keys/pkcs11/): finds a key by its label and checks its kid. */
export interface TokenKeys {
  load(entry: Pkcs11Key): Promise<{ readonly signer: KeySigner; readonly publicJwk: PublicJwk }>
}

export interface Keyset {
  readonly manifest: Manifest
  readonly keys: readonly LoadedKey[]
  /** SHA-256 of the manifest's bytes. */
  readonly sha256: string
  /** SHA-256 of the manifest and of every key file: what a reload compares to tell whether anything changed. */
  readonly fingerprint: string
  /** Non-fatal findings for the log (e.g. a key file readable by group or others). */
  readonly warnings: readonly string[]
}

/** The manifest's bytes; a missing manifest is an error here (a server needs a keyset). */
export async function requireManifestText(dir: string): Promise<string> {
  const text = await readManifestText(dir)
  if (text === null) throw new AuthzError('ERR_KEYSET_READ', `cannot read ${MANIFEST_FILE} in ${dir}: ENOENT`, { reason: 'manifest_missing' })
  return text
}

export interface LoadOptions {
  readonly passphrase?: string | undefined
  /** The keyset in force: a key whose file is byte for byte the one loaded before is reused, not parsed again. */
  readonly previous?: Keyset | undefined
  /** The PKCS#11 token, when one is configured. */
  readonly token?: TokenKeys | undefined
}

/** Loads the keyset. */
export async function loadKeyset(dir: string, options: LoadOptions = {}): Promise<Keyset> {
  const text = await requireManifestText(dir)
  const manifest = parseManifest(text)
  const previous = new Map(options.previous?.keys.map((k) => [k.kid, k]))
  const warnings = (manifest.revokedButListed ?? []).map(
    (kid) => `manifest: key ${kid} is listed under "keys" and under "revoked": it is treated as revoked (never published, never signing); remove it from "keys"`,
  )
  const keys = await Promise.all(
    manifest.keys.map(async (entry): Promise<LoadedKey> => {
      const known = previous.get(entry.kid)
      const same = known !== undefined && known.alg === entry.alg && known.store === entry.store
      if (entry.store === 'pkcs11') {
        if (same) return Object.freeze({ ...entry, signer: known.signer, publicJwk: known.publicJwk })
        if (options.token === undefined) {
          throw new AuthzError('ERR_KEYSET_INVALID', `key ${entry.kid} lives in a PKCS#11 token, and AUTHZ_PKCS11_MODULE is not set`, { kid: entry.kid })
        }
        return Object.freeze({ ...entry, ...(await options.token.load(entry)) })
      }
      return loadFileKey(dir, entry, options.passphrase, warnings, same ? known : undefined)
    }),
  )
  const sha256 = manifestHash(text)
  const fingerprint = sha256Hex(sha256, ...keys.map((k) => `${k.kid}:${k.fileSha256 ?? k.store}`))
  return Object.freeze({ manifest, keys: Object.freeze(keys), sha256, fingerprint, warnings: Object.freeze(warnings) })
}

/** Reads, checks and imports a key file; `known` (the same kid loaded before) is reused while the file's bytes are unchanged. */
async function loadFileKey(dir: string, entry: FileKey, passphrase: string | undefined, warnings: string[], known: LoadedKey | undefined): Promise<LoadedKey> {
  const path = join(dir, entry.file)
  let pem: Buffer
  try {
    pem = await readRegularFile(path, { maxBytes: KEY_FILE_MAX_BYTES })
    const mode = (await stat(path)).mode & 0o777
    // Group read is how Kubernetes hands Secret files to a non-root pod (0440 + fsGroup); world read is a leak.
    if ((mode & 0o007) !== 0) warnings.push(`${entry.file}: mode ${mode.toString(8)} lets any user read a private key (want 600 or 400)`)
  } catch (err) {
    const missing = (err as NodeJS.ErrnoException).code === 'ENOENT'
    throw new AuthzError('ERR_KEYSET_READ', `key ${entry.kid}: cannot read ${entry.file}: ${readFailure(err)}`, { kid: entry.kid, ...(missing ? { reason: 'key_file_missing' as const } : {}) })
  }
  const fileSha256 = sha256Hex(pem)
  if (known !== undefined && known.fileSha256 === fileSha256) return Object.freeze({ ...entry, signer: known.signer, publicJwk: known.publicJwk, fileSha256 })
  let keyObject
  try {
    keyObject = fromPkcs8Pem(pem.toString('utf8'), passphrase, `key ${entry.kid}`, entry.alg)
  } catch (err) {
    throw err instanceof AuthzError ? new AuthzError(err.code, err.message, { kid: entry.kid, ...(err.reason === undefined ? {} : { reason: err.reason }) }) : err
  }
  if ((await kidOf(keyObject)) !== entry.kid) {
    throw new AuthzError('ERR_KEYSET_INVALID', `key ${entry.kid}: ${entry.file} holds a different key (thumbprint mismatch)`, { reason: 'key_mismatch', kid: entry.kid })
  }
  return Object.freeze({ ...entry, signer: fileSigner(keyObject, entry.alg), publicJwk: publicJwkOf(keyObject, entry.kid, entry.alg), fileSha256 })
}
