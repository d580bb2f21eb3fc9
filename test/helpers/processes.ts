/**
 * Project entry points run as their own processes, for tests: a `.ts` file runs as the JavaScript `tsc -b`
 * compiled from it (test/loader/: `src/bin/keys.ts` runs dist/bin/keys.js, what ships), and the child
 * cannot outlive the test process.
 */
import { execFile, spawn, type ChildProcess, type ChildProcessByStdio } from 'node:child_process'
import type { Readable } from 'node:stream'
import type { Test } from 'tap'
import { freePort } from './http.js'

const loader = new URL('../loader/register.mjs', import.meta.url).href

/**
 * `--import` of the orphan guard (orphan-guard.mjs): the child exits when this test process is gone. Give
 * it to every child a test starts.
 */
export const ORPHAN_GUARD = `--import=${new URL('./orphan-guard.mjs', import.meta.url).href}`

const children = new Set<ChildProcess>()
// A test process that ends (passing, failing, or at tap's timeout) takes its children with it.
process.on('exit', () => {
  for (const child of children) child.kill('SIGKILL')
})

/** Registers a child this test process started: it is killed when the test process exits. */
export function track<C extends ChildProcess>(child: C): C {
  children.add(child)
  child.once('exit', () => children.delete(child))
  return child
}

/** Node arguments that run a TypeScript file of this repository (compiled) in a child that cannot outlive the test. */
export function tsNodeArgs(): string[] {
  return [`--import=${loader}`, ORPHAN_GUARD]
}

/** Runs a TypeScript file of this repository with arguments; resolves its exit code and output. */
export function runTs(file: URL, args: readonly string[], env: Record<string, string | undefined>): Promise<{ code: number; out: string; err: string }> {
  return new Promise((resolve) => {
    const child = execFile(process.execPath, [...tsNodeArgs(), file.pathname, ...args], { env: { PATH: process.env.PATH, ...env } }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof (err as { code?: unknown }).code === 'number' ? ((err as { code: number }).code) : 1
      resolve({ code, out: stdout, err: stderr })
    })
    track(child)
  })
}

/** `authz-keys <args>` in its own process, as an operator runs it. */
export function keysCli(env: Record<string, string | undefined>, ...args: string[]): Promise<{ code: number; out: string; err: string }> {
  return runTs(new URL('../../src/bin/keys.ts', import.meta.url), args, env)
}

export interface SpawnedServer {
  readonly child: ChildProcessByStdio<null, Readable, Readable>
  readonly port: number
  readonly opsPort: number
  /** Its exit: code and when (ms since epoch). */
  readonly exited: Promise<{ code: number | null; at: number }>
  /** Everything it printed so far (stdout and stderr). */
  output(): string
  /** Resolves when its output contains `text` (already, or from now on). */
  printed(text: string): Promise<void>
}

/** authz as its own process (the server's entry point, compiled), ready when it says it is listening; killed with the test. */
export async function spawnServer(t: Test, env: Record<string, string>): Promise<SpawnedServer> {
  const [port, opsPort] = [await freePort(), await freePort()]
  const child = track(
    spawn(process.execPath, [...tsNodeArgs(), new URL('../../src/bin/server.ts', import.meta.url).pathname], {
      env: { PATH: process.env.PATH, ...env, AUTHZ_PORT: String(port), AUTHZ_OPS_PORT: String(opsPort), AUTHZ_RATE_LIMIT: '0' },
      stdio: ['ignore', 'pipe', 'pipe'],
    }),
  )
  let output = ''
  const waiting = new Set<{ text: string; resolve: () => void }>()
  const onData = (c: Buffer): void => {
    output += c.toString()
    for (const w of waiting) {
      if (output.includes(w.text)) {
        waiting.delete(w)
        w.resolve()
      }
    }
  }
  child.stdout.on('data', onData)
  child.stderr.on('data', onData)
  const printed = (text: string): Promise<void> =>
    output.includes(text) ? Promise.resolve() : new Promise((resolve) => waiting.add({ text, resolve }))
  const exited = new Promise<{ code: number | null; at: number }>((resolve) => child.once('exit', (code) => resolve({ code, at: Date.now() })))
  t.teardown(() => child.kill('SIGKILL'))
  await Promise.race([printed('authz listening'), exited.then(() => Promise.reject(new Error(`server did not start: ${output}`)))])
  return { child, port, opsPort, exited, output: () => output, printed }
}
