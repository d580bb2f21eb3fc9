import { randomBytes } from 'node:crypto'
import { open, rename, unlink } from 'node:fs/promises'
import { basename, dirname, join } from 'node:path'

/**
 * Writes a file so that readers see either the old content or the new one, never a mix: a temp file in
 * the same directory, fsync, rename over the target, fsync of the directory.
 */
export async function writeFileAtomic(path: string, data: string | Uint8Array, mode = 0o600): Promise<void> {
  const dir = dirname(path)
  const tmp = join(dir, `.${basename(path)}.${randomBytes(6).toString('hex')}.tmp`)
  let handle
  try {
    handle = await open(tmp, 'wx', mode)
  } catch (err) {
    throw namingPath(err, tmp)
  }
  try {
    await handle.writeFile(data)
    await handle.chmod(mode) // the umask may have narrowed or widened what open() set
    await handle.sync()
  } catch (err) {
    await handle.close().catch(() => undefined)
    await unlink(tmp).catch(() => undefined)
    throw namingPath(err, path)
  }
  try {
    await handle.close() // a delayed write error (ENOSPC, EIO) can surface here too
    await rename(tmp, path)
  } catch (err) {
    await unlink(tmp).catch(() => undefined)
    throw namingPath(err, path)
  }
  await syncDir(dir)
}

/**
 * The same failure, its message naming the file (Node's write errors do not: "ENOSPC: no space left on
 * device, write"); code, errno and syscall kept, the original as its cause.
 */
export function namingPath(err: unknown, path: string): Error {
  if (!(err instanceof Error)) return new Error(`${path}: ${String(err)}`)
  if (err.message.includes(path)) return err
  const named = new Error(`cannot write ${path}: ${err.message}`, { cause: err })
  const { code, errno, syscall } = err as NodeJS.ErrnoException
  return Object.assign(named, { code, errno, syscall, path })
}

async function syncDir(dir: string): Promise<void> {
  let handle
  try {
    handle = await open(dir, 'r')
    await handle.sync()
  } catch {
    // Some filesystems refuse fsync on a directory; the rename is still atomic there.
  } finally {
    await handle?.close()
  }
}
