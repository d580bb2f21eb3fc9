/**
 * The one reader of the files the server watches (policy, TLS material, CRLs, the keys directory, the
 * PKCS#11 PIN file): only a regular file is read, and only within a size and a time bound. A FIFO at a
 * watched path would block a thread of libuv's pool in open() until some process opened it for writing,
 * and a blocked thread stalls every later file operation behind it and keeps the process from ever
 * exiting; a device or a directory is not configuration either. Such a path is refused at once, as any
 * unreadable file is: the reload fails, the last good state serves, and the reload is retried.
 */
import { constants, type Stats } from 'node:fs'
import { open, stat } from 'node:fs/promises'

export const KiB = 1024
export const MiB = 1024 * KiB

/** How much of a file may be read, and for how long. */
export interface ReadBounds {
  readonly maxBytes: number
  /** Give up (and fail) after this long, ms (default 5 s). */
  readonly timeoutMs?: number
}

/** Why a watched file could not be read: an errno code (`ENOENT`, `EACCES`, …) or one of ours. */
export type ReadFailure = 'ERR_NOT_REGULAR_FILE' | 'ERR_FILE_TOO_LARGE' | 'ERR_READ_TIMEOUT'

export class FileReadError extends Error {
  readonly code: ReadFailure
  constructor(code: ReadFailure, message: string) {
    super(message)
    this.name = 'FileReadError'
    this.code = code
  }
}

export const DEFAULT_READ_TIMEOUT_MS = 5000

function kindOf(info: Stats): string {
  if (info.isFIFO()) return 'a FIFO'
  if (info.isDirectory()) return 'a directory'
  if (info.isCharacterDevice() || info.isBlockDevice()) return 'a device'
  if (info.isSocket()) return 'a socket'
  return 'not a regular file'
}

const notRegular = (info: Stats): FileReadError => new FileReadError('ERR_NOT_REGULAR_FILE', `${kindOf(info)}, not a regular file`)
const tooLarge = (maxBytes: number): FileReadError => new FileReadError('ERR_FILE_TOO_LARGE', `larger than ${maxBytes} bytes`)

/**
 * What went wrong, in a few words for a log line or a start error: the errno code (`ENOENT`), or what the
 * path is instead of a regular file, or the bound it broke.
 */
export function readFailure(err: unknown): string {
  if (err instanceof FileReadError) return err.message
  return (err as NodeJS.ErrnoException | undefined)?.code ?? 'error'
}

/**
 * The bytes of the regular file at `path` (symbolic links followed: a kubelet `..data` swap is a link).
 * Throws a FileReadError for a FIFO, a device, a directory or a socket (without opening it), for a file
 * larger than `maxBytes`, and when the read has not finished within the timeout; an errno error otherwise.
 */
export async function readRegularFile(path: string, bounds: ReadBounds): Promise<Buffer> {
  const info = await stat(path)
  if (!info.isFile()) throw notRegular(info)
  if (info.size > bounds.maxBytes) throw tooLarge(bounds.maxBytes)
  const timeoutMs = bounds.timeoutMs ?? DEFAULT_READ_TIMEOUT_MS
  const reading = readOpened(path, bounds.maxBytes)
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new FileReadError('ERR_READ_TIMEOUT', `not read within ${timeoutMs} ms`)), timeoutMs)
    timer.unref()
  })
  // A read that loses the race settles later, unobserved.
  reading.catch(() => undefined)
  try {
    return await Promise.race([reading, timeout])
  } finally {
    clearTimeout(timer)
  }
}

async function readOpened(path: string, maxBytes: number): Promise<Buffer> {
  // Should the path have become a FIFO since stat(), O_NONBLOCK makes open() return at once instead of
  // waiting for a writer (and fstat below refuses it); on a regular file it changes nothing.
  const handle = await open(path, constants.O_RDONLY | (constants.O_NONBLOCK ?? 0) | (constants.O_NOCTTY ?? 0))
  try {
    const info = await handle.stat()
    if (!info.isFile()) throw notRegular(info)
    const chunks: Buffer[] = []
    let total = 0
    for (;;) {
      // Up to one byte past the bound: enough to tell that the file is too large.
      const buffer = Buffer.allocUnsafe(Math.min(64 * KiB, maxBytes + 1 - total))
      const { bytesRead } = await handle.read(buffer, 0, buffer.length, null)
      if (bytesRead === 0) break
      chunks.push(buffer.subarray(0, bytesRead))
      total += bytesRead
      if (total > maxBytes) throw tooLarge(maxBytes)
    }
    return Buffer.concat(chunks, total)
  } finally {
    await handle.close()
  }
}
