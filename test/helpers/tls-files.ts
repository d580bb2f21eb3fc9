/**
 * TLS files on disk as the tools that renew them write them: one file replaced by an atomic rename
 * (cert-manager's CSI driver, configuration management), or a Kubernetes Secret volume — the kubelet writes
 * every file into a new timestamped directory, then swaps the `..data` symlink the visible names point
 * through, in one rename.
 */
import { mkdirSync, readlinkSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import type { KeyPairPem } from '../../src/pki/dev-pki.js'

/** The names a cert-manager Secret mounts. */
export const FILES = { certFile: 'tls.crt', keyFile: 'tls.key', caFile: 'ca.crt' } as const

export interface TlsDir {
  readonly paths: { readonly certFile: string; readonly keyFile: string; readonly caFile: string }
  /** Puts a new certificate, key and CA bundle in place the way this layout is updated. */
  write(pair: KeyPairPem, caPem: string): void
}

/** Each file written to a temp name and renamed over the old one. */
export function renamedFiles(dir: string, pair: KeyPairPem, caPem: string): TlsDir {
  const paths = { certFile: join(dir, FILES.certFile), keyFile: join(dir, FILES.keyFile), caFile: join(dir, FILES.caFile) }
  const put = (path: string, text: string): void => {
    writeFileSync(`${path}.tmp`, text)
    renameSync(`${path}.tmp`, path)
  }
  const write = (next: KeyPairPem, ca: string): void => {
    put(paths.certFile, next.certPem)
    put(paths.keyFile, next.keyPem)
    put(paths.caFile, ca)
  }
  write(pair, caPem)
  return { paths, write }
}

/** A Secret volume as the kubelet writes it: `..<stamp>/` directories, `..data` → the current one, names → `..data/<name>`. */
export function kubeletVolume(dir: string, pair: KeyPairPem, caPem: string): TlsDir {
  let generation = 0
  const write = (next: KeyPairPem, ca: string): void => {
    const stamp = `..2026_01_01_00_00_00.${++generation}`
    mkdirSync(join(dir, stamp))
    writeFileSync(join(dir, stamp, FILES.certFile), next.certPem)
    writeFileSync(join(dir, stamp, FILES.keyFile), next.keyPem)
    writeFileSync(join(dir, stamp, FILES.caFile), ca)
    let old: string | undefined
    try {
      old = readlinkSync(join(dir, '..data'))
    } catch {
      old = undefined
    }
    symlinkSync(stamp, join(dir, '..data_tmp'))
    renameSync(join(dir, '..data_tmp'), join(dir, '..data'))
    if (old !== undefined) rmSync(join(dir, old), { recursive: true })
  }
  write(pair, caPem)
  for (const name of Object.values(FILES)) symlinkSync(join('..data', name), join(dir, name))
  return { paths: { certFile: join(dir, FILES.certFile), keyFile: join(dir, FILES.keyFile), caFile: join(dir, FILES.caFile) }, write }
}
