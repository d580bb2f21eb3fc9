import t from 'tap'
import { ManualClock } from '../../src/clock.js'
import { EXIT_FAILURE, EXIT_OK, EXIT_USAGE, runCli, usageError, withSubVerb, type Cli } from '../../src/cli/runner.js'

function tool(): (...argv: string[]) => Promise<{ code: number; out: string[]; err: string[] }> {
  const cli: Cli = {
    name: 'demo',
    usage: 'usage: demo <verb>',
    verbs: {
      ok: async (args, { io }) => {
        io.out(`ok ${args.join(' ')}`)
        return EXIT_OK
      },
      misuse: async () => {
        throw usageError('misuse takes nothing')
      },
      fail: async () => {
        throw new Error('the disk is full')
      },
      thing: withSubVerb('thing', 'do', 'thing do <x>', async (args, { io }) => {
        io.out(`did ${args.join(' ')}`)
        return EXIT_OK
      }),
    },
  }
  const run = async (...argv: string[]) => {
    const out: string[] = []
    const err: string[] = []
    const code = await runCli(cli, argv, { env: {}, io: { out: (l) => out.push(l), err: (l) => err.push(l) }, clock: new ManualClock(0) })
    return { code, out, err }
  }
  return run
}

t.test('usage on no verb (2) and on help, --help, -h (0)', async (t) => {
  const run = tool()
  t.match(await run(), { code: EXIT_USAGE, out: ['usage: demo <verb>'], err: [] })
  for (const help of ['help', '--help', '-h']) t.match(await run(help), { code: EXIT_OK, out: ['usage: demo <verb>'] }, help)
})

t.test('a verb gets the arguments after it; a usage error is 2 with the usage, any other error 1 with the tool name', async (t) => {
  const run = tool()
  t.same(await run('ok', 'a', 'b'), { code: EXIT_OK, out: ['ok a b'], err: [] })
  t.same(await run('misuse'), { code: EXIT_USAGE, out: [], err: ['demo: misuse takes nothing', 'usage: demo <verb>'] })
  t.same(await run('fail'), { code: EXIT_FAILURE, out: [], err: ['demo: the disk is full'] })
})

t.test('unknown verbs, inherited names included, are usage errors', async (t) => {
  const run = tool()
  for (const verb of ['spin', 'toString', 'constructor', '__proto__']) {
    t.same(await run(verb), { code: EXIT_USAGE, out: [], err: [`demo: unknown verb ${JSON.stringify(verb)}`, 'usage: demo <verb>'] }, verb)
  }
})

t.test('a verb with one sub-verb names the one it wants', async (t) => {
  const run = tool()
  t.same(await run('thing', 'do', 'x'), { code: EXIT_OK, out: ['did x'], err: [] })
  t.match(await run('thing'), { code: EXIT_USAGE, err: ['demo: unknown thing verb "" (want: thing do <x>)'] })
  t.match(await run('thing', 'undo'), { code: EXIT_USAGE, err: ['demo: unknown thing verb "undo" (want: thing do <x>)'] })
})
