/**
 * `npm run pki -- <verb>`: a development PKI (node-forge). `init` makes a CA and a server certificate for
 * localhost/127.0.0.1; `client <name>` a client certificate with CN <name>; `client --spiffe <id>` an
 * X.509-SVID (empty subject, one URI SAN); `server <name>` a server certificate for other host names. Files
 * go to `<AUTHZ_KEYS_DIR>/dev-pki` unless `--dir` says otherwise. Not for production.
 */
import { join, resolve } from 'node:path'
import { systemClock } from '../clock.js'
import { devPkiPaths, ensureCa, ensureClient, ensureServer, ensureSvid } from '../pki/dev-files.js'
import { EXIT_OK, parse, processIo, runCli, usageError, type Cli, type CliContext, type Io } from './runner.js'
import { toolConfig } from './tool-config.js'

export const PKI_USAGE = `usage: authz-pki <verb> [--dir <dir>]

  init                    dev CA + server certificate for localhost, 127.0.0.1, ::1
  client <name> [--force] client certificate with Subject CN <name> (EKU clientAuth)
  client --spiffe <id> [--force]
                          X.509-SVID for that SPIFFE ID (spiffe://trust-domain/path): empty subject,
                          one URI SAN, as SPIRE and Istio issue them; goes to svids/<domain>+<path>/
  server <name> --host <h> [--host <h>...] [--force]
                          server certificate servers/<name>.pem for those DNS names / IPs

files go to <AUTHZ_KEYS_DIR>/dev-pki by default. For development only.`

/** Every verb takes the same options; each uses those it needs. */
function parsePki(args: string[], env: NodeJS.ProcessEnv) {
  const { values, positionals } = parse({
    args,
    options: { dir: { type: 'string' }, force: { type: 'boolean' }, host: { type: 'string', multiple: true }, spiffe: { type: 'string' } },
    strict: true,
    allowPositionals: true,
  })
  const config = toolConfig(env)
  const paths = devPkiPaths(values.dir === undefined ? join(config.keysDir, 'dev-pki') : resolve(values.dir))
  return { values, positionals, paths }
}

/** A name the dev PKI refuses (not a safe file name: a TypeError) is a usage error. */
async function asUsage<T>(make: () => Promise<T>): Promise<T> {
  try {
    return await make()
  } catch (err) {
    if (err instanceof TypeError) throw usageError(err.message)
    throw err
  }
}

async function init(args: string[], { env, io }: CliContext): Promise<number> {
  const { positionals, paths } = parsePki(args, env)
  if (positionals.length > 0) throw usageError('init takes no arguments')
  const { created } = await ensureCa(paths)
  io.out(created.length === 0 ? `dev CA and server certificate already exist in ${paths.dir}` : `created ${created.join(', ')}`)
  io.out(`AUTHZ_TLS_CERT=${paths.serverCert} AUTHZ_TLS_KEY=${paths.serverKey} AUTHZ_CLIENT_CA=${paths.caCert}`)
  return EXIT_OK
}

async function client(args: string[], { env, io }: CliContext): Promise<number> {
  const { values, positionals, paths } = parsePki(args, env)
  const id = values.spiffe
  if (id !== undefined) {
    if (positionals.length > 0) throw usageError('client takes a name or --spiffe <id>, not both')
    const made = await asUsage(async () => ensureSvid(paths, (await ensureCa(paths)).ca, id, values.force === true))
    io.out(made ? `created ${paths.svidCert(id)} and ${paths.svidKey(id)}` : `${paths.svidCert(id)} exists (use --force to reissue)`)
    return EXIT_OK
  }
  const name = positionals[0]
  if (name === undefined || positionals.length !== 1) throw usageError('client takes exactly one name (or --spiffe <id>)')
  const made = await asUsage(async () => ensureClient(paths, (await ensureCa(paths)).ca, name, values.force === true))
  io.out(made ? `created ${paths.clientCert(name)} and ${paths.clientKey(name)}` : `${paths.clientCert(name)} exists (use --force to reissue)`)
  return EXIT_OK
}

async function server(args: string[], { env, io }: CliContext): Promise<number> {
  const { values, positionals, paths } = parsePki(args, env)
  const name = positionals[0]
  const hosts = values.host ?? []
  if (name === undefined || positionals.length !== 1) throw usageError('server takes exactly one name')
  if (hosts.length === 0) throw usageError('server needs at least one --host')
  const made = await asUsage(async () => ensureServer(paths, (await ensureCa(paths)).ca, name, hosts, values.force === true))
  io.out(made ? `created ${paths.namedServerCert(name)} for ${hosts.join(', ')}` : `${paths.namedServerCert(name)} exists (use --force to reissue)`)
  return EXIT_OK
}

const PKI_CLI: Cli = { name: 'authz-pki', usage: PKI_USAGE, verbs: { init, client, server } }

export async function runPkiCli(argv: string[], env: NodeJS.ProcessEnv, io: Io = processIo): Promise<number> {
  return runCli(PKI_CLI, argv, { env, io, clock: systemClock })
}
