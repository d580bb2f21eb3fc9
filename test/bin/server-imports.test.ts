/**
 * A production start (AUTHZ_DEV=false) loads no dev tooling: node-forge, the dev PKI and the keys CLI's
 * code (lock, admin) are reached only through the dynamic import of dev/bootstrap.ts. Checked on the
 * static import graph of the process entry.
 */
import { readFileSync } from 'node:fs'
import { dirname, join, relative, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import t from 'tap'

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..')

/** Static, value-level imports of a TypeScript module: `import … from`, `export … from`; not `import type`, not `import()`. */
function staticImports(file: string): string[] {
  const text = readFileSync(file, 'utf8')
  const out: string[] = []
  for (const m of text.matchAll(/^\s*(?:import|export)\s+(type\s+)?[^'";]*?\bfrom\s+'([^']+)'/gm)) {
    if (m[1] === undefined) out.push(m[2] as string)
  }
  for (const m of text.matchAll(/^\s*import\s+'([^']+)'/gm)) out.push(m[1] as string)
  return out
}

function graph(entry: string): { files: Set<string>; packages: Set<string> } {
  const files = new Set<string>()
  const packages = new Set<string>()
  const visit = (file: string): void => {
    if (files.has(file)) return
    files.add(file)
    for (const spec of staticImports(file)) {
      if (spec.startsWith('.')) visit(resolve(dirname(file), spec.replace(/\.js$/, '.ts')))
      else if (!spec.startsWith('node:')) packages.add(spec.startsWith('@') ? spec.split('/').slice(0, 2).join('/') : (spec.split('/')[0] as string))
    }
  }
  visit(entry)
  return { files, packages }
}

t.test('the server process statically loads no dev PKI, node-forge or keys CLI code', async (t) => {
  const { files, packages } = graph(join(root, 'src/bin/server.ts'))
  const rel = [...files].map((f) => relative(root, f))
  t.ok(rel.includes('src/server.ts') && rel.includes('src/app.ts'), 'the graph is walked')
  t.notOk(packages.has('node-forge'), 'no node-forge')
  for (const dev of ['src/keys/lock.ts', 'src/keys/admin.ts', 'src/pki/dev-pki.ts', 'src/pki/dev-files.ts', 'src/dev/bootstrap.ts']) {
    t.notOk(rel.includes(dev), `not ${dev}`)
  }
  t.ok(readFileSync(join(root, 'src/server.ts'), 'utf8').includes("import('./dev/bootstrap.js')"), 'dev mode loads it on demand')
})
