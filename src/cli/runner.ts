/**
 * The one runner of the three CLIs (`authz`, `authz-keys`, `authz-pki`): usage on no verb, `help`, `--help`
 * or `-h`; dispatch to a verb; exit codes (0 ok, 1 failure, 2 usage). A verb throws `usageError()` for a
 * usage error (the tool prints it with its usage, exit 2) and any other error for a failure (the tool
 * prints `<tool>: <message>`, exit 1).
 */
import { parseArgs, type ParseArgsConfig } from 'node:util'
import type { Clock } from '../clock.js'
import type { NewKey } from '../keys/admin.js'
import { AuthzError } from '../errors.js'

export const EXIT_OK = 0
export const EXIT_FAILURE = 1
export const EXIT_USAGE = 2

export interface Io {
  out(line: string): void
  err(line: string): void
}

let pipeGuarded = false

/** `authz-keys list | head -1`: a reader that stops reading ends the output, not the process with a stack. */
function guardPipes(): void {
  if (pipeGuarded) return
  pipeGuarded = true
  for (const stream of [process.stdout, process.stderr]) {
    stream.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code !== 'EPIPE') throw err
      process.exit(process.exitCode ?? 0)
    })
  }
}

export const processIo: Io = {
  out: (line) => {
    guardPipes()
    process.stdout.write(`${line}\n`)
  },
  err: (line) => {
    guardPipes()
    process.stderr.write(`${line}\n`)
  },
}

/** What a verb runs with: the environment the configuration comes from, its I/O, and the time. */
export interface CliContext<I extends Io = Io> {
  readonly env: NodeJS.ProcessEnv
  readonly io: I
  readonly clock: Clock
  /** Where new signing keys come from (default: generated); tests hand out keys made once per run. */
  readonly newKey?: NewKey | undefined
}

/** One verb: its arguments (after the verb) in, an exit code out. */
export type Verb<I extends Io = Io> = (args: string[], context: CliContext<I>) => Promise<number>

export interface Cli<I extends Io = Io> {
  /** The name errors are prefixed with (`authz-keys: …`). */
  readonly name: string
  readonly usage: string
  readonly verbs: Readonly<Record<string, Verb<I>>>
}

const HELP = new Set(['help', '--help', '-h'])

/** Runs one invocation of `cli`; returns the exit code. */
export async function runCli<I extends Io>(cli: Cli<I>, argv: readonly string[], context: CliContext<I>): Promise<number> {
  const { io } = context
  const [verb, ...rest] = argv
  try {
    if (verb === undefined || HELP.has(verb)) {
      io.out(cli.usage)
      return verb === undefined ? EXIT_USAGE : EXIT_OK
    }
    // Own properties only: `toString` is not a verb.
    const run = Object.hasOwn(cli.verbs, verb) ? cli.verbs[verb] : undefined
    if (run === undefined) throw usageError(`unknown verb ${JSON.stringify(verb)}`)
    return await run(rest, context)
  } catch (err) {
    if (err instanceof AuthzError && err.code === 'ERR_USAGE') {
      io.err(`${cli.name}: ${err.message}`)
      io.err(cli.usage)
      return EXIT_USAGE
    }
    io.err(`${cli.name}: ${failure(err)}`)
    return EXIT_FAILURE
  }
}

/** A verb that takes one sub-verb (`policy check`): any other is a usage error that says which is wanted. */
export function withSubVerb<I extends Io>(verb: string, sub: string, synopsis: string, run: Verb<I>): Verb<I> {
  return async (args, context) => {
    if (args[0] !== sub) throw usageError(`unknown ${verb} verb ${JSON.stringify(args[0] ?? '')} (want: ${synopsis})`)
    return run(args.slice(1), context)
  }
}

/** A usage error: the runner prints it with the usage and exits 2. */
export function usageError(message: string): AuthzError {
  return new AuthzError('ERR_USAGE', message)
}

/** An error's message, for a report or a failure line. */
export function failure(err: unknown): string {
  return err instanceof Error ? err.message : String(err)
}

/** `node:util` parseArgs, its errors as usage errors. */
export function parse<T extends ParseArgsConfig>(config: T): ReturnType<typeof parseArgs<T>> {
  try {
    return parseArgs(config)
  } catch (err) {
    throw usageError((err as Error).message)
  }
}

/** A value as --json prints it. */
export function json(value: unknown): string {
  return JSON.stringify(value, null, 2)
}
