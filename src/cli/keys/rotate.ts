/** `keys rotate`: publish a new key now that signs after a delay (default 2 × JWKS max-age; shorter needs --force). */
import { rotateKeys } from '../../keys/admin.js'
import { safeActivationDelayMs } from '../../keys/lifecycle.js'
import { EXIT_OK, parse, type CliContext } from '../runner.js'
import { formatDuration, iso, parseDuration } from '../time.js'
import { keysOptions, toolConfig } from '../tool-config.js'
import { reportLeftovers } from './leftovers.js'
import { keyDetail, NEW_KEY_OPTIONS, newKeyRequest } from './new-key.js'

export async function rotate(args: string[], { env, io, clock, newKey }: CliContext): Promise<number> {
  const options = keysOptions(toolConfig(env), clock, newKey)
  const { values } = parse({ args, options: { 'activate-in': { type: 'string' }, force: { type: 'boolean' }, ...NEW_KEY_OPTIONS }, strict: true })
  const activateInMs = values['activate-in'] === undefined ? undefined : parseDuration(values['activate-in'])
  const { key, unsafe, leftovers } = await rotateKeys(options, {
    ...(activateInMs === undefined ? {} : { activateInMs }),
    force: values.force === true,
    ...newKeyRequest(values),
  })
  reportLeftovers(leftovers, io)
  io.out(`created key ${key.kid}${keyDetail(key)}: published now, signs from ${iso(key.activatesAt)} (in ${formatDuration(Math.max(0, key.activatesAt - clock.now()))})`)
  if (unsafe) {
    io.err(
      `warning: --force: verifiers that fetched the JWKS less than ${formatDuration(safeActivationDelayMs(options.timing) / 2)} before ${iso(key.activatesAt)} ` +
        `do not know ${key.kid} yet and will reject its tokens until they refetch (on an unknown kid, or when their cache expires)`,
    )
  }
  return EXIT_OK
}
