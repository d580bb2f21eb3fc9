// npm's `prepare` (after `npm ci` in a checkout: a runnable build) and the pre-scripts of `npm start`,
// `npm run keys`, `npm run authz`, `npm run pki`: build the issuer and the SDK only when a source changed
// since the last build. With nothing changed this stats the sources and
// writes nothing (a few milliseconds, no compiler loaded); otherwise `tsc -b tsconfig.build.json`
// rebuilds what changed (incremental: .tsbuildinfo).
import { spawnSync } from 'node:child_process'
import { existsSync, readdirSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = fileURLToPath(new URL('..', import.meta.url))
const inputs = ['src', 'packages/sdk/src', 'tsconfig.base.json', 'tsconfig.build.json', 'packages/sdk/tsconfig.json', 'package.json']
const builds = ['dist/.tsbuildinfo', 'packages/sdk/dist/.tsbuildinfo']

function newest(path) {
  const stat = statSync(path)
  if (!stat.isDirectory()) return stat.mtimeMs
  let max = stat.mtimeMs // a deleted file changes its directory
  for (const entry of readdirSync(path)) max = Math.max(max, newest(join(path, entry)))
  return max
}

if (!existsSync(join(root, 'tsconfig.build.json'))) process.exit(0) // the packed package: dist/ is what shipped
const mtime = (path) => (existsSync(path) ? statSync(path).mtimeMs : -Infinity)
const built = Math.min(...builds.map((b) => mtime(join(root, b))))
const changed = inputs.some((input) => existsSync(join(root, input)) && newest(join(root, input)) > built)
if (changed) {
  let tsc
  try {
    tsc = fileURLToPath(import.meta.resolve('typescript/bin/tsc'))
  } catch {
    console.error('authz: dist/ is missing or older than the sources, and TypeScript is not installed (npm ci --omit=dev?).')
    console.error('  In a checkout, install the dev dependencies (npm ci). In production, use the packed package or the image,')
    console.error('  whose bins (authz-server, authz-keys, authz, authz-pki) need no build.')
    process.exit(1)
  }
  const { status } = spawnSync(process.execPath, [tsc, '-b', 'tsconfig.build.json'], { cwd: root, stdio: 'inherit' })
  process.exit(status ?? 1)
}
