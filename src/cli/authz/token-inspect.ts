/**
 * `authz token inspect`: decodes a token (never printing its signature) and checks it the way a verifier
 * would, against the local keys (AUTHZ_KEYS_DIR) or a JWKS, saying which check fails.
 */
import { decodeJwt, decodeProtectedHeader, type JWTPayload, type ProtectedHeaderParameters } from 'jose'
import type { Config } from '../../config.js'
import { callerNameProblem } from '../../identity/mode.js'
import { readRemoteTls, REMOTE_TLS_OPTIONS } from '../remote-jwks.js'
import { EXIT_FAILURE, EXIT_OK, json, oneLine, parse, usageError, type CliContext, type Io } from '../runner.js'
import { iso } from '../time.js'
import { keysOptions, toolConfig } from '../tool-config.js'
import { ALGORITHMS } from '../../keys/material.js'
import {
  bindingCheck,
  jwksKeys,
  kidCheck,
  localKeys,
  manifestOrUndefined,
  readPem,
  signatureCheck,
  timeChecks,
  type BindingCheck,
  type Check,
  type KeySource,
  type KidCheck,
  type SignatureCheck,
  type TimeCheck,
} from './token-checks.js'

/** The CLI's I/O; `readStdin` is what `token inspect -` reads (process stdin by default). */
export interface AuthzIo extends Io {
  readStdin?(): Promise<string>
}

/** Every check, in the order they are printed. */
export interface TokenChecks {
  readonly alg: Check
  readonly typ: Check
  readonly signature: SignatureCheck
  readonly kid: KidCheck
  readonly iss: Check
  readonly aud: Check
  /** `sub` (= `client_id`) is a caller name under AUTHZ_IDENTITY: a CN, or a SPIFFE ID of a trusted domain. */
  readonly sub: Check
  readonly exp: TimeCheck
  readonly nbf: TimeCheck
  readonly cnf: BindingCheck
}

/** `token inspect --json`. */
export interface InspectReport {
  readonly header: ProtectedHeaderParameters
  readonly payload: JWTPayload
  /** Where the keys came from: the keys directory or the JWKS URL. */
  readonly keys: string
  readonly now: string
  readonly checks: TokenChecks
  /** No check failed. */
  readonly ok: boolean
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = []
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer)
  return Buffer.concat(chunks).toString('utf8')
}

/** Decodes without echoing the input: it holds a signature, and error messages end up in terminals and tickets. */
function decode(token: string): { header: ProtectedHeaderParameters; payload: JWTPayload } {
  try {
    if (token.split('.').length !== 3) throw new Error('not three parts')
    return { header: decodeProtectedHeader(token), payload: decodeJwt(token) }
  } catch {
    throw new Error('not a compact JWT (header.payload.signature, base64url JSON)')
  }
}

function subCheck(payload: JWTPayload, identity: Config['identity']): Check {
  const { sub } = payload
  if (typeof sub !== 'string' || sub === '') return { ok: false, detail: 'no sub (authz always names the caller)' }
  if (payload.client_id !== sub) return { ok: false, detail: `client_id ${JSON.stringify(payload.client_id)} is not sub (authz sets both to the caller)` }
  const problem = callerNameProblem(identity, sub)
  if (problem !== undefined) return { ok: false, detail: `${sub} ${problem}` }
  return { ok: true, detail: `${sub} (${identity.kind === 'cn' ? 'certificate CN' : 'SPIFFE ID'})` }
}

export async function tokenInspect(args: string[], { env, io, clock }: CliContext<AuthzIo>): Promise<number> {
  const { values, positionals } = parse({
    args,
    options: { jwks: { type: 'string' }, ...REMOTE_TLS_OPTIONS, cert: { type: 'string' }, json: { type: 'boolean' } },
    strict: true,
    allowPositionals: true,
  })
  if (positionals.length !== 1) throw usageError('token inspect takes exactly one token, or - to read it from stdin')
  if ((values['client-cert'] === undefined) !== (values['client-key'] === undefined)) throw usageError('--client-cert and --client-key go together')
  if (values.jwks === undefined && (values.ca ?? values['client-cert']) !== undefined) throw usageError('--ca, --client-cert and --client-key are for --jwks')
  const cfg = toolConfig(env)
  const options = keysOptions(cfg, clock)
  const token = (positionals[0] === '-' ? await (io.readStdin ?? readStdin)() : (positionals[0] as string)).trim()
  const { header, payload } = decode(token)
  let source: KeySource
  if (values.jwks === undefined) {
    source = await localKeys(options)
  } else {
    let url: URL
    try {
      url = new URL(values.jwks)
    } catch {
      throw usageError(`--jwks ${values.jwks}: not a URL`)
    }
    const tls = await readRemoteTls(values, readPem)
    if (url.protocol !== 'http:' && url.protocol !== 'https:') throw usageError('--jwks must be an http(s) URL')
    source = await jwksKeys(url, tls)
  }
  const manifest = await manifestOrUndefined(options.dir)
  const nowSec = clock.now() / 1000
  const checks: TokenChecks = {
    alg: (ALGORITHMS as readonly unknown[]).includes(header.alg)
      ? { ok: true, detail: String(header.alg) }
      : { ok: false, detail: `${String(header.alg)} (only ${ALGORITHMS.join(' and ')} are accepted)` },
    typ: header.typ === 'at+jwt' ? { ok: true, detail: 'at+jwt' } : { ok: false, detail: `${String(header.typ)} (want at+jwt)` },
    signature: await signatureCheck(token, header, source),
    kid: kidCheck(header.kid, source, manifest, options),
    iss:
      payload.iss === cfg.issuer
        ? { ok: true, detail: `${payload.iss} (= AUTHZ_ISSUER)` }
        : { ok: false, detail: `${String(payload.iss)} is not AUTHZ_ISSUER ${cfg.issuer}` },
    aud: typeof payload.aud === 'string' && payload.aud !== '' ? { ok: true, detail: payload.aud } : { ok: false, detail: `${JSON.stringify(payload.aud)} (want one audience string)` },
    sub: subCheck(payload, cfg.identity),
    ...timeChecks(payload, nowSec),
    cnf: await bindingCheck(payload, values.cert),
  }
  const ok = Object.values(checks).every((c: Check) => c.ok !== false)
  if (values.json === true) {
    const report: InspectReport = { header, payload, keys: source.label, now: iso(clock.now()), checks, ok }
    io.out(json(report))
    return ok ? EXIT_OK : EXIT_FAILURE
  }
  io.out('header:')
  io.out(json(header))
  io.out('payload:')
  io.out(json(payload))
  io.out('(signature not shown)')
  io.out(`checks (keys: ${source.label}, now ${iso(clock.now())}):`)
  const entries: [string, Check][] = Object.entries(checks)
  // A detail may quote the token (iss, aud, typ, kid): one line each, whatever the token holds.
  for (const [name, check] of entries) io.out(`  ${(check.ok === null ? '-' : check.ok ? 'ok' : 'FAIL').padEnd(4)}  ${name.padEnd(9)}  ${oneLine(check.detail)}`)
  const failed = entries.filter(([, c]) => c.ok === false).map(([n]) => n)
  io.out(ok ? 'result: ok' : `result: FAILED (${failed.join(', ')})`)
  return ok ? EXIT_OK : EXIT_FAILURE
}
