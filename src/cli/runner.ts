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

/**
 * Characters a terminal acts on instead of showing: C0 controls but tab and newline (ESC starts CSI/OSC
 * sequences that clear the screen, move the cursor or set the title; CR rewrites the line), DEL, the C1
 * controls (U+009B is a one-character CSI), and the Unicode line separators and bidirectional overrides
 * (which reorder or hide what follows).
 */
// eslint-disable-next-line no-control-regex -- matching control characters is the point
const CONTROLS = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g

/** `text` with every terminal control shown as its `\uXXXX` escape; tab and newline kept. */
export function escapeControls(text: string): string {
  return text.replace(CONTROLS, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`)
}

/** A value from outside (a token's claim, a remote kid) for one line of output: newlines and tabs escaped too. */
export function oneLine(text: string): string {
  return escapeControls(text.replace(/\n/g, '\\n').replace(/\t/g, '\\t'))
}

/**
 * Runs one invocation of `cli`; returns the exit code. Everything it prints goes through escapeControls: a
 * value it echoes (a pasted token's claims, a remote JWKS) can never drive the operator's terminal.
 */
export async function runCli<I extends Io>(cli: Cli<I>, argv: readonly string[], context: CliContext<I>): Promise<number> {
  const raw = context.io
  const io: I = { ...raw, out: (line: string) => raw.out(escapeControls(line)), err: (line: string) => raw.err(escapeControls(line)) }
  context = { ...context, io }
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
