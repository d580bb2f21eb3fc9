/**
 * The keys CLI command as the operator types it where this code runs: `npm run keys -- <verb>` in a
 * checkout (the TypeScript sources are there), `authz-keys <verb>` in a production install and in the image
 * (the bin; the image has no npm, and compiling TypeScript first would cost an emergency revoke its
 * minute). Start errors and hints name the command that works where they are read.
 */
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { AuthzError } from '../errors.js'

/** checkout: the repository; install: `dist/` without sources (the image, an npm install); unknown: neither. */
export type Layout = 'checkout' | 'install' | 'unknown'

/** The layout of the tree rooted at `root` (the directory holding `src/` or `dist/`). */
export function layoutOf(root: string): Layout {
  if (existsSync(join(root, 'src', 'bin', 'keys.ts'))) return 'checkout'
  if (existsSync(join(root, 'dist', 'bin', 'keys.js'))) return 'install'
  return 'unknown'
}

/** `<verb and arguments>` as a command of the keys CLI for `layout`; both forms when it is unknown. */
export function keysCommandFor(layout: Layout, args: string): string {
  if (layout === 'checkout') return `npm run keys -- ${args}`
  if (layout === 'install') return `authz-keys ${args}`
  return `authz-keys ${args} (in a checkout: npm run keys -- ${args})`
}

let here: Layout | undefined

/** The keys CLI command for this process's own tree (src/keys/ or dist/keys/, two levels below the root). */
export function keysCommand(args: string): string {
  here ??= layoutOf(fileURLToPath(new URL('../..', import.meta.url)))
  return keysCommandFor(here, args)
}

/** What to do about a keys directory that stops the start: the next step, with the command where there is one. */
export function keysStartAdvice(err: AuthzError, command: (args: string) => string = keysCommand): string {
  const kid = err.kid ?? '<kid>'
  switch (err.reason) {
    case 'manifest_missing':
      return `no keys yet: create the first one with: ${command('init')}`
    case 'key_file_missing':
      return `the manifest names a key file that is not there: restore it from your copy of the keys directory; if it is lost, revoke the key with: ${command(`revoke ${kid}`)}`
    case 'key_mismatch':
    case 'not_a_key':
    case 'key_type':
    case 'key_too_weak':
      return `restore the key file of ${kid} from your copy of the keys directory; if it is lost, revoke the key with: ${command(`revoke ${kid}`)}`
    case 'passphrase_missing':
    case 'passphrase_wrong':
      return 'set AUTHZ_KEY_PASSPHRASE to the passphrase the keys were written with'
    default:
      return err.code === 'ERR_KEYSET_INVALID'
        ? `restore manifest.json from your copy of the keys directory, then check it with: ${command('list')}`
        : `make the keys directory readable by the server, then check it with: ${command('list')}`
  }
}
