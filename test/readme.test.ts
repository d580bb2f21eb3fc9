import { readFile } from 'node:fs/promises'
import t from 'tap'
import { configSchema } from '../src/config.js'

t.test('the README configuration table matches the config schema exactly', async (t) => {
  const readme = await readFile(new URL('../README.md', import.meta.url), 'utf8')
  const table = readme.slice(readme.indexOf('<!-- config-table:start'), readme.indexOf('<!-- config-table:end'))
  const rows = [...table.matchAll(/^\| `(AUTHZ_[A-Z0-9_]+)` \| (.+?) \| (.+) \|$/gm)].map((m) => [m[1], m[2], m[3]])
  const expected = Object.entries(configSchema.properties).map(([name, p]) => [
    name,
    'default' in p ? `\`${String(p.default)}\`` : '—',
    p.description,
  ])
  t.same(rows, expected)
})

t.test('the README configuration table states every bound the config schema enforces', async (t) => {
  const readme = await readFile(new URL('../README.md', import.meta.url), 'utf8')
  const table = readme.slice(readme.indexOf('<!-- config-table:start'), readme.indexOf('<!-- config-table:end'))
  const rowOf = (name: string) => table.split('\n').find((line) => line.startsWith(`| \`${name}\` |`)) ?? ''
  for (const [name, p] of Object.entries(configSchema.properties) as [string, { minimum?: number; maximum?: number; maxLength?: number }][]) {
    if (p.minimum !== undefined || p.maximum !== undefined) t.match(rowOf(name), `${p.minimum}–${p.maximum}`, `${name}: its range`)
    if (p.maxLength !== undefined) t.match(rowOf(name), `at most ${p.maxLength} characters`, `${name}: its length`)
  }
})

t.test('a README code block marked <!-- snippet: path --> is that file, verbatim (it compiles with npm test)', async (t) => {
  const readme = await readFile(new URL('../README.md', import.meta.url), 'utf8')
  const blocks = [...readme.matchAll(/<!-- snippet: (\S+) -->\n```\w*\n([\s\S]*?)```/g)]
  t.ok(blocks.length >= 1, 'the calling snippet at least')
  for (const [, path, code] of blocks) {
    const source = await readFile(new URL(`../${path}`, import.meta.url), 'utf8')
    t.ok(source.includes(code as string), `${path} holds the README's block`)
  }
})
