/**
 * The keys manifest (`<AUTHZ_KEYS_DIR>/manifest.json`): the list every replica reads to agree on which key
 * signs when. It names key files by kid; it holds no key material. The one reader and writer of the file.
 */
import { join } from 'node:path'
import { Ajv } from 'ajv'
import { AuthzError } from '../errors.js'
import { sha256Hex } from '../util/digest.js'
import { writeFileAtomic } from '../util/atomic-write.js'
import { MiB, readFailure, readRegularFile } from '../util/read-file.js'
import type { KeyTimes } from './lifecycle.js'
import { ALGORITHMS, type Alg } from './material.js'

export const MANIFEST_FILE = 'manifest.json'
/** base64url SHA-256: an RFC 7638 thumbprint. */
const KID = '^[A-Za-z0-9_-]{43}$'

/** Where a private key lives: a PKCS#8 file in the keys directory, or a PKCS#11 token it never leaves. */
export type KeyStoreKind = 'file' | 'pkcs11'

interface ManifestKeyBase extends KeyTimes {
  readonly alg: Alg
}

export interface FileKey extends ManifestKeyBase {
  readonly store: 'file'
  /** File name inside the keys directory: `<kid>.pem`. */
  readonly file: string
}

export interface Pkcs11Key extends ManifestKeyBase {
  readonly store: 'pkcs11'
  /** CKA_LABEL of the key pair in the token. */
  readonly label: string
}

export type ManifestKey = FileKey | Pkcs11Key

export interface RevokedKey {
  readonly kid: string
  readonly revokedAt: number
}

export interface Manifest {
  readonly version: 1
  readonly keys: readonly ManifestKey[]
  /** Emergency-revoked kids, kept so operators can tell "revoked" from "unknown". */
  readonly revoked: readonly RevokedKey[]
  /**
   * Kids the file listed under `keys` although they are revoked too: left out of `keys` (revoked wins, see
   * parseManifest), named here so the loader can warn. Never written back.
   */
  readonly revokedButListed?: readonly string[]
}

interface ManifestJson {
  version: 1
  keys: { kid: string; alg: Alg; store?: 'pkcs11'; file?: string; label?: string; createdAt: string; activatesAt: string; retiredAt?: string }[]
  revoked?: { kid: string; revokedAt: string }[]
}

const manifestSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['version', 'keys'],
  properties: {
    version: { const: 1 },
    keys: {
      type: 'array',
      maxItems: 64,
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['kid', 'alg', 'createdAt', 'activatesAt'],
        properties: {
          kid: { type: 'string', pattern: KID },
          alg: { enum: [...ALGORITHMS] },
          // Absent for the default, a file: manifests written before PKCS#11 support stay valid.
          store: { const: 'pkcs11' },
          file: { type: 'string', pattern: '^[A-Za-z0-9_-]{43}\\.pem$' },
          label: { type: 'string', pattern: '^[\\x20-\\x7E]{1,64}$' },
          createdAt: { type: 'string', minLength: 1 },
          activatesAt: { type: 'string', minLength: 1 },
          retiredAt: { type: 'string', minLength: 1 },
        },
      },
    },
    revoked: {
      type: 'array',
      maxItems: 1024,
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['kid', 'revokedAt'],
        properties: { kid: { type: 'string', pattern: KID }, revokedAt: { type: 'string', minLength: 1 } },
      },
    },
  },
} as const

const validate = new Ajv({ strict: true }).compile<ManifestJson>(manifestSchema)

function instant(value: string, where: string): number {
  const ms = Date.parse(value)
  if (!Number.isFinite(ms) || !/^\d{4}-\d\d-\d\dT/.test(value)) {
    throw new AuthzError('ERR_KEYSET_INVALID', `manifest: ${where} is not an ISO 8601 instant`)
  }
  return ms
}

/** Parses and checks a manifest's text; throws AuthzError `ERR_KEYSET_INVALID`. */
export function parseManifest(text: string): Manifest {
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch {
    throw new AuthzError('ERR_KEYSET_INVALID', 'manifest: not valid JSON')
  }
  if (!validate(json)) {
    const e = validate.errors?.[0]
    throw new AuthzError('ERR_KEYSET_INVALID', `manifest: ${e?.instancePath ?? ''} ${e?.message ?? 'invalid'}`.trim())
  }
  const seen = new Set<string>()
  const keys = json.keys.map((k, i): ManifestKey => {
    if (seen.has(k.kid)) throw new AuthzError('ERR_KEYSET_INVALID', `manifest: keys[${i}]: duplicate kid`)
    seen.add(k.kid)
    const times = {
      kid: k.kid,
      alg: k.alg,
      createdAt: instant(k.createdAt, `keys[${i}].createdAt`),
      activatesAt: instant(k.activatesAt, `keys[${i}].activatesAt`),
      ...(k.retiredAt === undefined ? {} : { retiredAt: instant(k.retiredAt, `keys[${i}].retiredAt`) }),
    }
    if (k.store === 'pkcs11') {
      if (k.label === undefined || k.file !== undefined) throw new AuthzError('ERR_KEYSET_INVALID', `manifest: keys[${i}]: a pkcs11 key has a label and no file`)
      return Object.freeze({ ...times, store: 'pkcs11', label: k.label })
    }
    if (k.file !== `${k.kid}.pem` || k.label !== undefined) throw new AuthzError('ERR_KEYSET_INVALID', `manifest: keys[${i}]: file must be <kid>.pem`)
    return Object.freeze({ ...times, store: 'file', file: k.file })
  })
  const revoked = (json.revoked ?? []).map((r, i) =>
    Object.freeze({ kid: r.kid, revokedAt: instant(r.revokedAt, `revoked[${i}].revokedAt`) }),
  )
  // A kid listed both as a key and as revoked (a hand edit, a bad merge: `revoke` never writes one) is
  // revoked: never published, never signing. Refusing the whole manifest instead would keep a running
  // server on its previous keyset, in which the key an operator meant to revoke still signs.
  const revokedKids = new Set(revoked.map((r) => r.kid))
  const listed = keys.filter((k) => revokedKids.has(k.kid)).map((k) => k.kid)
  return Object.freeze({
    version: 1,
    keys: Object.freeze(keys.filter((k) => !revokedKids.has(k.kid))),
    revoked: Object.freeze(revoked),
    ...(listed.length === 0 ? {} : { revokedButListed: Object.freeze(listed) }),
  })
}

/** Serialises a manifest with ISO instants, stable key order and a trailing newline. */
export function serializeManifest(manifest: Manifest): string {
  const json: ManifestJson = {
    version: 1,
    keys: manifest.keys.map((k) => ({
      kid: k.kid,
      alg: k.alg,
      ...(k.store === 'pkcs11' ? { store: 'pkcs11' as const, label: k.label } : { file: k.file }),
      createdAt: new Date(k.createdAt).toISOString(),
      activatesAt: new Date(k.activatesAt).toISOString(),
      ...(k.retiredAt === undefined ? {} : { retiredAt: new Date(k.retiredAt).toISOString() }),
    })),
    revoked: manifest.revoked.map((r) => ({ kid: r.kid, revokedAt: new Date(r.revokedAt).toISOString() })),
  }
  return `${JSON.stringify(json, null, 2)}\n`
}

export const EMPTY_MANIFEST: Manifest = Object.freeze({ version: 1, keys: Object.freeze([]), revoked: Object.freeze([]) })

/** The manifest's bytes, or null when the directory has none. Any other read failure throws `ERR_KEYSET_READ`. */
export async function readManifestText(dir: string): Promise<string | null> {
  try {
    return (await readRegularFile(join(dir, MANIFEST_FILE), { maxBytes: MiB })).toString('utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null
    throw new AuthzError('ERR_KEYSET_READ', `cannot read ${MANIFEST_FILE} in ${dir}: ${readFailure(err)}`)
  }
}

/** The manifest of `dir`; an empty one when the directory has none yet (a fresh install). */
export async function readManifest(dir: string): Promise<Manifest> {
  const text = await readManifestText(dir)
  return text === null ? EMPTY_MANIFEST : parseManifest(text)
}

/** Replaces the manifest atomically (temp + fsync + rename): a reader sees the old one or the new one. */
export async function writeManifest(dir: string, manifest: Manifest): Promise<void> {
  await writeFileAtomic(join(dir, MANIFEST_FILE), serializeManifest(manifest), 0o644)
}

/** Identifies a manifest's content (key files are immutable, named by kid, so this identifies the keyset). */
export function manifestHash(text: string): string {
  return sha256Hex(text)
}
