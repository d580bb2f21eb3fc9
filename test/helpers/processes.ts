/** Project entry points run as their own processes (TypeScript through tap's loader), for tests. */
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'

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
