/**
 * Reading a file the SDK watches (a certificate, a key, a CA bundle): it must be a regular file of bounded
 * size. A FIFO at the path would block the read — a libuv thread, and the process's exit, for ever — and a
 * device would never end, so the file is opened non-blocking and judged by what it is before it is read.
 * Paths are opened anew each time, so a symlink swapped under them (a kubelet `..data` update) is followed.
 */
import { closeSync, constants, fstatSync, openSync, readFileSync } from 'node:fs'
import { open, type FileHandle } from 'node:fs/promises'

/** Why a file could not be read: `why` is safe to log (an errno code or what the file is). */
export class FileReadError extends Error {
  readonly path: string
  readonly why: string
  constructor(path: string, why: string) {
    super(`${path}: cannot read: ${why}`)
    this.name = 'FileReadError'
    this.path = path
    this.why = why
  }
}

const FLAGS = constants.O_RDONLY | constants.O_NONBLOCK

function judge(path: string, stat: { isFile(): boolean; size: number }, maxBytes: number): void {
  if (!stat.isFile()) throw new FileReadError(path, 'not a regular file')
  if (stat.size > maxBytes) throw new FileReadError(path, `larger than ${maxBytes} bytes`)
}

function reason(path: string, err: unknown): FileReadError {
  return err instanceof FileReadError ? err : new FileReadError(path, (err as NodeJS.ErrnoException).code ?? 'error')
}

/** The bytes of a regular file of at most `maxBytes`, read now (for start-up). */
export function readRegularFileSync(path: string, maxBytes: number): Buffer {
  let fd: number | undefined
  try {
    fd = openSync(path, FLAGS)
    judge(path, fstatSync(fd), maxBytes)
    const data = readFileSync(fd)
    if (data.length > maxBytes) throw new FileReadError(path, `larger than ${maxBytes} bytes`)
    return data
  } catch (err) {
    throw reason(path, err)
  } finally {
    if (fd !== undefined) closeSync(fd)
  }
}

/** The bytes of a regular file of at most `maxBytes`, without blocking the event loop. */
export async function readRegularFile(path: string, maxBytes: number): Promise<Buffer> {
  let handle: FileHandle | undefined
  try {
    handle = await open(path, FLAGS)
    judge(path, await handle.stat(), maxBytes)
    const data = await handle.readFile()
    if (data.length > maxBytes) throw new FileReadError(path, `larger than ${maxBytes} bytes`)
    return data
  } catch (err) {
    throw reason(path, err)
  } finally {
    await handle?.close()
  }
}
