/** `keys prune`: remove keys no token can still need. */
import { pruneKeys } from '../../keys/admin.js'
import { EXIT_OK, parse, type CliContext } from '../runner.js'
import { keysOptions, toolConfig } from '../tool-config.js'
import { reportLeftovers } from './leftovers.js'

export async function prune(args: string[], { env, io, clock }: CliContext): Promise<number> {
  const options = keysOptions(toolConfig(env), clock)
  parse({ args, options: {}, strict: true })
  const { pruned, leftovers } = await pruneKeys(options)
  reportLeftovers(leftovers, io)
  io.out(pruned.length === 0 ? 'nothing to prune' : `pruned ${pruned.join(', ')}`)
  return EXIT_OK
}
