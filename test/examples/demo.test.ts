import { spawn } from 'node:child_process'
import { readFile } from 'node:fs/promises'
import t from 'tap'
import { ORPHAN_GUARD, track } from '../helpers/processes.js'

const root = new URL('../../', import.meta.url)

// `npm run demo` as the README says, minus npm (npm test has built everything the predemo script builds):
// the script's own command, so a demo that only runs in-process cannot pass here (it did once: the
// command loaded a second compile of src/ that could not find package.json).
t.test('npm run demo: allowed and denied calls over HTTP and gRPC go as expected, end to end', async (t) => {
  const pkg = JSON.parse(await readFile(new URL('package.json', root), 'utf8')) as { scripts: Record<string, string> }
  const [command, ...args] = (pkg.scripts.demo ?? '').split(/\s+/)
  t.equal(command, 'node', 'the demo script is a node command')
  const child = track(spawn(process.execPath, [ORPHAN_GUARD, ...args], { cwd: root, env: process.env, stdio: ['ignore', 'pipe', 'pipe'] }))
  let out = ''
  let err = ''
  child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()))
  child.stderr.on('data', (chunk: Buffer) => (err += chunk.toString()))
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve))
  t.equal(code, 0, `exit code 0${code === 0 ? '' : `: ${err.slice(0, 600)}`}`)
  const calls = out.split('\n').filter((line) => /^[✔✘] /.test(line))
  t.equal(calls.length, 10, 'ten calls')
  for (const line of calls) t.match(line, /^✔ /, line)
  t.match(out.trimEnd().split('\n').at(-1), /10 of 10 calls went as expected/)
})
