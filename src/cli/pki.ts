/**
 * `npm run pki -- <verb>`: a development PKI (node-forge). `init` makes a CA and a server certificate for
 * localhost/127.0.0.1; `client <name>` a client certificate with CN <name>. Files go to
 * `<AUTHZ_KEYS_DIR>/dev-pki` unless `--dir` says otherwise. Not for production.
 */
import { join, resolve } from 'node:path'
import { AuthzError } from '../errors.js'
import { devPkiPaths, ensureCa, ensureClient, ensureServer } from '../pki/dev-files.js'
import { EXIT_FAILURE, EXIT_OK, EXIT_USAGE, parse, processIo, toolConfig, type Io } from './args.js'

export const PKI_USAGE = `usage: authz-pki <verb> [--dir <dir>]

  init                    dev CA + server certificate for localhost, 127.0.0.1, ::1
  client <name> [--force] client certificate with Subject CN <name> (EKU clientAuth)
  server <name> --host <h> [--host <h>...] [--force]
                          server certificate servers/<name>.pem for those DNS names / IPs

files go to <AUTHZ_KEYS_DIR>/dev-pki by default. For development only.`

export async function runPkiCli(argv: string[], env: NodeJS.ProcessEnv, io: Io = processIo): Promise<number> {
  const [verb, ...rest] = argv
  try {
    if (verb === undefined || verb === 'help' || verb === '--help' || verb === '-h') {
      io.out(PKI_USAGE)
      return verb === undefined ? EXIT_USAGE : EXIT_OK
    }
    const { values, positionals } = parse({
      args: rest,
      options: { dir: { type: 'string' }, force: { type: 'boolean' }, host: { type: 'string', multiple: true } },
      strict: true,
      allowPositionals: true,
    })
    const config = toolConfig(env)
    const paths = devPkiPaths(values.dir === undefined ? join(config.keysDir, 'dev-pki') : resolve(values.dir))
    if (verb === 'init') {
      if (positionals.length > 0) throw new AuthzError('ERR_USAGE', 'init takes no arguments')
      const { created } = await ensureCa(paths)
      io.out(created.length === 0 ? `dev CA and server certificate already exist in ${paths.dir}` : `created ${created.join(', ')}`)
      io.out(`AUTHZ_TLS_CERT=${paths.serverCert} AUTHZ_TLS_KEY=${paths.serverKey} AUTHZ_CLIENT_CA=${paths.caCert}`)
      return EXIT_OK
    }
    if (verb === 'client') {
      const name = positionals[0]
      if (name === undefined || positionals.length !== 1) throw new AuthzError('ERR_USAGE', 'client takes exactly one name')
      try {
        const { ca } = await ensureCa(paths)
        const made = await ensureClient(paths, ca, name, values.force === true)
        io.out(made ? `created ${paths.clientCert(name)} and ${paths.clientKey(name)}` : `${paths.clientCert(name)} exists (use --force to reissue)`)
      } catch (err) {
        if (err instanceof TypeError) throw new AuthzError('ERR_USAGE', err.message)
        throw err
      }
      return EXIT_OK
    }
    if (verb === 'server') {
      const name = positionals[0]
      const hosts = values.host ?? []
      if (name === undefined || positionals.length !== 1) throw new AuthzError('ERR_USAGE', 'server takes exactly one name')
      if (hosts.length === 0) throw new AuthzError('ERR_USAGE', 'server needs at least one --host')
      try {
        const { ca } = await ensureCa(paths)
        const made = await ensureServer(paths, ca, name, hosts, values.force === true)
        io.out(made ? `created ${paths.namedServerCert(name)} for ${hosts.join(', ')}` : `${paths.namedServerCert(name)} exists (use --force to reissue)`)
      } catch (err) {
        if (err instanceof TypeError) throw new AuthzError('ERR_USAGE', err.message)
        throw err
      }
      return EXIT_OK
    }
    throw new AuthzError('ERR_USAGE', `unknown verb ${JSON.stringify(verb)}`)
  } catch (err) {
    if (err instanceof AuthzError && err.code === 'ERR_USAGE') {
      io.err(`authz-pki: ${err.message}`)
      io.err(PKI_USAGE)
      return EXIT_USAGE
    }
    io.err(`authz-pki: ${(err as Error).message}`)
    return EXIT_FAILURE
  }
}
