import { execFileSync } from 'node:child_process'
import { symlinkSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { FileReadError, readFailure, readRegularFile } from '../../src/util/read-file.js'

const mkfifo = (path: string): void => void execFileSync('mkfifo', [path])

t.test('a regular file, and one behind a symbolic link (a kubelet ..data swap), are read whole', async (t) => {
  const dir = t.testdir({ 'a.pem': 'hello' })
  symlinkSync(join(dir, 'a.pem'), join(dir, 'link.pem'))
  t.equal((await readRegularFile(join(dir, 'a.pem'), { maxBytes: 5 })).toString(), 'hello')
  t.equal((await readRegularFile(join(dir, 'link.pem'), { maxBytes: 1024 })).toString(), 'hello')
})

t.test('a FIFO is refused at once, without opening it (regression: open() blocked a thread for ever)', async (t) => {
  const dir = t.testdir({})
  mkfifo(join(dir, 'policy.json'))
  const started = Date.now()
  const err = await readRegularFile(join(dir, 'policy.json'), { maxBytes: 1024 }).catch((e: unknown) => e)
  t.ok(err instanceof FileReadError, 'a FileReadError')
  t.match(err, { code: 'ERR_NOT_REGULAR_FILE' })
  t.equal(readFailure(err), 'a FIFO, not a regular file')
  t.ok(Date.now() - started < 1000, 'at once')
})

t.test('a directory and a device are refused; a missing file keeps its errno code', async (t) => {
  const dir = t.testdir({ sub: {} })
  t.equal(readFailure(await readRegularFile(join(dir, 'sub'), { maxBytes: 1024 }).catch((e: unknown) => e)), 'a directory, not a regular file')
  t.equal(readFailure(await readRegularFile('/dev/zero', { maxBytes: 1024 }).catch((e: unknown) => e)), 'a device, not a regular file')
  t.equal(readFailure(await readRegularFile(join(dir, 'none'), { maxBytes: 1024 }).catch((e: unknown) => e)), 'ENOENT')
})

t.test('a file over the size bound is refused, whether its size says so or it grows while read', async (t) => {
  const dir = t.testdir({})
  writeFileSync(join(dir, 'big'), Buffer.alloc(2048))
  const err = await readRegularFile(join(dir, 'big'), { maxBytes: 1024 }).catch((e: unknown) => e)
  t.match(err, { code: 'ERR_FILE_TOO_LARGE' })
  t.equal(readFailure(err), 'larger than 1024 bytes')
  // /proc files report size 0 and have content: the read itself is bounded.
  t.match(await readRegularFile('/proc/self/status', { maxBytes: 16 }).catch((e: unknown) => e), { code: 'ERR_FILE_TOO_LARGE' })
})
