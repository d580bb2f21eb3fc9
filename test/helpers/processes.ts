/** Project entry points run as their own processes (TypeScript through tap's loader), for tests. */
import { execFile, spawn, type ChildProcessByStdio } from 'node:child_process'
import type { Readable } from 'node:stream'
import { promisify } from 'node:util'
import type { Test } from 'tap'
import { freePort } from './http.js'

const run = promisify(execFile)
const loader = new URL('../../node_modules/@tapjs/typescript/dist/esm/import.mjs', import.meta.url).href

/** Runs a TypeScript file of this repository with arguments; resolves its exit code and output. */
export async function runTs(file: URL, args: readonly string[], env: Record<string, string | undefined>): Promise<{ code: number; out: string; err: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [`--import=${loader}`, file.pathname, ...args], {
      env: { PATH: process.env.PATH, TS_NODE_TRANSPILE_ONLY: '1', ...env },
    })
    return { code: 0, out: stdout, err: stderr }
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string }
    return { code: typeof e.code === 'number' ? e.code : 1, out: e.stdout ?? '', err: e.stderr ?? '' }
  }
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

/** authz as its own process (the TypeScript entry point), ready when it says it is listening; killed with the test. */
export async function spawnServer(t: Test, env: Record<string, string>): Promise<SpawnedServer> {
  const [port, opsPort] = [await freePort(), await freePort()]
  const child = spawn(process.execPath, [`--import=${loader}`, new URL('../../src/bin/server.ts', import.meta.url).pathname], {
    env: { PATH: process.env.PATH, ...env, AUTHZ_PORT: String(port), AUTHZ_OPS_PORT: String(opsPort), AUTHZ_RATE_LIMIT: '0', TS_NODE_TRANSPILE_ONLY: '1' },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
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
