/** `keys export --public`: the public keys a server reading this directory publishes now, as the same JWKS bytes or SPKI PEM. */
import { createPublicKey } from 'node:crypto'
import { KeyStore } from '../../keys/store.js'
import { EXIT_OK, parse, usageError, type CliContext } from '../runner.js'
import { iso } from '../time.js'
import { keysOptions, toolConfig } from '../tool-config.js'

export async function exportPublic(args: string[], { env, io, clock }: CliContext): Promise<number> {
  const options = keysOptions(toolConfig(env), clock)
  const { values } = parse({ args, options: { public: { type: 'boolean' }, format: { type: 'string' } }, strict: true })
  if (values.public !== true) throw usageError('export needs --public: private keys never leave the keys directory')
  const format = values.format ?? 'jwks'
  if (format !== 'jwks' && format !== 'pem') throw usageError('--format is jwks or pem')
  const store = await KeyStore.open(options)
  if (format === 'jwks') {
    io.out(store.jwks().body.toString('utf8'))
    return EXIT_OK
  }
  for (const key of store.statuses().filter((s) => s.state !== 'expired')) {
    const pem = createPublicKey({ key: { ...key.key.publicJwk }, format: 'jwk' }).export({ type: 'spki', format: 'pem' }) as string
    // Text outside the PEM block is allowed (RFC 7468 §5.2): which key it is, for the reader.
    io.out(`kid: ${key.key.kid} (${key.state}, activates ${iso(key.key.activatesAt)})`)
    io.out(pem.trimEnd())
  }
  return EXIT_OK
}
