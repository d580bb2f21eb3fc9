/** `keys init`: the first key, active at once (a fresh install must be able to sign). */
import { initKeys } from '../../keys/admin.js'
import { EXIT_OK, parse, type CliContext } from '../runner.js'
import { iso } from '../time.js'
import { keysOptions, toolConfig } from '../tool-config.js'
import { reportLeftovers } from './leftovers.js'
import { keyDetail, NEW_KEY_OPTIONS, newKeyRequest } from './new-key.js'

export async function init(args: string[], { env, io, clock, newKey }: CliContext): Promise<number> {
  const options = keysOptions(toolConfig(env), clock, newKey)
  const { values } = parse({ args, options: NEW_KEY_OPTIONS, strict: true })
  const key = await initKeys(options, newKeyRequest(values))
  reportLeftovers(key.leftovers, io)
  io.out(`created key ${key.kid}${keyDetail(key)}, active now (${iso(key.activatesAt)})`)
  return EXIT_OK
}
