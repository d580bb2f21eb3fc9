// `node scripts/parallel.mjs lint typecheck`: runs npm scripts at once, prints each one's output whole
// when it ends (never interleaved), and exits non-zero when any failed. `npm test` runs lint and the
// type-checking build this way: neither waits for the other.
import { spawn } from 'node:child_process'

const names = process.argv.slice(2)
const npm = process.env.npm_execpath
const runs = names.map(
  (name) =>
    new Promise((resolve) => {
      const started = Date.now()
      const [command, args] = npm === undefined ? ['npm', ['run', '--silent', name]] : [process.execPath, [npm, 'run', '--silent', name]]
      const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] })
      let output = ''
      child.stdout.on('data', (c) => (output += c))
      child.stderr.on('data', (c) => (output += c))
      child.on('close', (code, signal) => {
        const seconds = ((Date.now() - started) / 1000).toFixed(1)
        process.stdout.write(`> ${name}: ${code === 0 ? 'ok' : `FAILED (${signal ?? `exit ${code}`})`} in ${seconds} s\n${output}`)
        resolve(code === 0)
      })
    }),
)
const ok = await Promise.all(runs)
process.exitCode = ok.every(Boolean) ? 0 : 1
