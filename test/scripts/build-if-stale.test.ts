/**
 * scripts/build-if-stale.mjs (npm's prepare, and the pre-scripts of start, keys, authz, pki): with nothing
 * changed it runs no compiler and writes nothing; a source newer than the last build runs `tsc -b`; a
 * stale build without TypeScript installed (npm ci --omit=dev in a checkout) says what to do.
 */
import { execFile } from 'node:child_process'
import { copyFile, mkdir, mkdtemp, readFile, rm, utimes, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import t, { type Test } from 'tap'

const run = promisify(execFile)

type Tree = { [name: string]: string | Tree }
async function writeTree(dir: string, tree: Tree): Promise<void> {
  await mkdir(dir, { recursive: true })
  for (const [name, value] of Object.entries(tree)) {
    if (typeof value === 'string') await writeFile(join(dir, name), value)
    else await writeTree(join(dir, name), value)
  }
}
const script = new URL('../../scripts/build-if-stale.mjs', import.meta.url).pathname

/** A checkout-shaped directory with the script, a fake `tsc` that records its arguments, and a build `age` seconds old. */
async function checkout(t: Test, withTypescript = true) {
  // Outside this repository: module resolution must not find its node_modules/typescript.
  const dir = await mkdtemp(join(tmpdir(), 'authz-build-if-stale-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  await writeTree(dir, {
    'tsconfig.base.json': '{}',
    'tsconfig.build.json': '{}',
    'package.json': '{}',
    src: { 'a.ts': 'export const a = 1\n' },
    packages: { sdk: { 'tsconfig.json': '{}', src: { 'b.ts': 'export const b = 1\n' }, dist: { '.tsbuildinfo': '{}' } } },
    dist: { '.tsbuildinfo': '{}', 'a.js': 'export const a = 1\n' },
    scripts: {},
    ...(withTypescript ? { node_modules: { typescript: { 'package.json': '{"name":"typescript","version":"0.0.0"}', bin: { tsc: 'require("node:fs").appendFileSync(require("node:path").join(__dirname, "../../../tsc.log"), process.argv.slice(2).join(" ") + "\\n")\n' } } } } : {}),
  })
  await copyFile(script, join(dir, 'scripts', 'build-if-stale.mjs'))
  // Sources written an hour ago, the build a minute ago: up to date.
  const hourAgo = new Date(Date.now() - 3_600_000)
  for (const f of ['tsconfig.base.json', 'tsconfig.build.json', 'package.json', 'src/a.ts', 'src', 'packages/sdk/tsconfig.json', 'packages/sdk/src/b.ts', 'packages/sdk/src']) await utimes(join(dir, f), hourAgo, hourAgo)
  const minuteAgo = new Date(Date.now() - 60_000)
  for (const f of ['dist/.tsbuildinfo', 'packages/sdk/dist/.tsbuildinfo', 'dist/a.js']) await utimes(join(dir, f), minuteAgo, minuteAgo)
  const tscRuns = async () => (await readFile(join(dir, 'tsc.log'), 'utf8').catch(() => '')).split('\n').filter(Boolean)
  const build = () => run(process.execPath, [join(dir, 'scripts', 'build-if-stale.mjs')], { cwd: dir }).then(() => 0, (e: { code: number; stderr: string }) => e)
  return { dir, tscRuns, build }
}

t.test('nothing changed: no compiler, nothing written', async (t) => {
  const { dir, tscRuns, build } = await checkout(t)
  const before = await readFile(join(dir, 'dist', '.tsbuildinfo'), 'utf8')
  t.equal(await build(), 0)
  t.same(await tscRuns(), [], 'tsc never ran')
  t.equal(await readFile(join(dir, 'dist', '.tsbuildinfo'), 'utf8'), before)
})

t.test('a source newer than the build, a new file, or a deleted one: tsc -b tsconfig.build.json', async (t) => {
  for (const change of ['edit', 'add', 'sdk'] as const) {
    const { dir, tscRuns, build } = await checkout(t)
    if (change === 'edit') await writeFile(join(dir, 'src', 'a.ts'), 'export const a = 2\n')
    if (change === 'add') await mkdir(join(dir, 'src', 'new'))
    if (change === 'sdk') await writeFile(join(dir, 'packages', 'sdk', 'src', 'b.ts'), 'export const b = 2\n')
    t.equal(await build(), 0, change)
    t.same(await tscRuns(), ['-b tsconfig.build.json'], `${change}: one incremental build`)
  }
})

t.test('no build yet, or a stale one, without TypeScript installed: a message that says what to do', async (t) => {
  const { dir, build } = await checkout(t, false)
  await writeFile(join(dir, 'src', 'a.ts'), 'export const a = 2\n')
  const failed = (await build()) as { code: number; stderr: string }
  t.equal(failed.code, 1)
  t.match(failed.stderr, /TypeScript is not installed \(npm ci --omit=dev\?\)/)
  t.match(failed.stderr, /use the packed package or the image/)
})

t.test('the packed package (no tsconfig): nothing to build', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'authz-packed-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  await mkdir(join(dir, 'scripts'))
  await copyFile(script, join(dir, 'scripts', 'build-if-stale.mjs'))
  t.equal(await run(process.execPath, [join(dir, 'scripts', 'build-if-stale.mjs')], { cwd: dir }).then(() => 0), 0)
})
