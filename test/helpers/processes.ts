/**
 * Project entry points run as their own processes, for tests: a `.ts` file runs as the JavaScript `tsc -b`
 * compiled from it (test/loader/: `src/bin/keys.ts` runs dist/bin/keys.js, what ships), and the child
 * cannot outlive the test process.
 */
import { execFile, type ChildProcess } from 'node:child_process'

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
