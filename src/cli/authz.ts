/**
 * `npm run authz -- <verb>`: the operator's questions about a running install, answered with the server's
 * own code. `explain` evaluates the live policy with the `decide()` /token uses; `policy check` validates
 * with the server's parser; `token inspect` checks a token the way a verifier would (RS256 only) and says
 * which check fails; `status` reads keys, policy and TLS files and asks the ops listener. Reads the same
 * AUTHZ_* variables as the server. Exit codes: 0 ok, 1 failure or denied, 2 usage.
 */
import { X509Certificate } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { Agent as HttpAgent } from 'node:http'
import { join } from 'node:path'
import { Ajv } from 'ajv'
import forge from 'node-forge'
import { compactVerify, decodeJwt, decodeProtectedHeader, importJWK, type JWK, type JWTPayload, type ProtectedHeaderParameters } from 'jose'
import { systemClock, type Clock } from '../clock.js'
import type { Config } from '../config.js'
import { AuthzError } from '../errors.js'
import { statusesOf } from '../keys/admin.js'
import { loadKeyset } from '../keys/keyset.js'
import { keyStates, type KeyState, type Timing } from '../keys/lifecycle.js'
import { readManifest, type Manifest } from '../keys/manifest.js'
import { explainDecision, type DecisionExplanation } from '../policy/explain.js'
import { decide, parsePolicy, type Policy } from '../policy/policy.js'
import { PolicyStore } from '../policy/store.js'
import { tokenRequestSchema } from '../routes/token.js'
import { httpRequestText, signingKeys, thumbprintOf } from '@authz/sdk'
import { fetchJwks, type RemoteTls } from './remote-jwks.js'
import { EXIT_FAILURE, EXIT_OK, EXIT_USAGE, formatDuration, isoOrNull, parse, processIo, toolConfig, type Io } from './args.js'

export const AUTHZ_USAGE = `usage: authz <verb>

  explain --caller <cn> --audience <aud> [--scope "<a b>"] [--json]
      what POST /token answers this caller under the live policy (AUTHZ_POLICY), and why
  policy check <file> [--against <current file>] [--json]
      validate a policy file; with --against, the grants the change adds and removes
  token inspect <token|-> [--jwks <url> [--ca <pem>] [--client-cert <pem> --client-key <pem>]] [--cert <pem>] [--json]
      decode a token (never its signature) and check it against the local keys (AUTHZ_KEYS_DIR) or a JWKS;
      --cert: the caller's certificate, checked against the token's cnf.x5t#S256 binding
  status [--json]
      keys, policy, TLS files, and whether the ops listener's /readyz answers

Reads the same AUTHZ_* variables as the server. Exit codes: 0 ok, 1 failure or denied, 2 usage.`

/** The CLI's I/O; `readStdin` is what `token inspect -` reads (process stdin by default). */
export interface AuthzIo extends Io {
  readStdin?(): Promise<string>
}

const usage = (message: string): AuthzError => new AuthzError('ERR_USAGE', message)
const iso = isoOrNull
const json = (value: unknown): string => JSON.stringify(value, null, 2)
const config = toolConfig
const timingOf = (c: Config): Timing => ({ tokenTtl: c.tokenTtl, jwksMaxAge: c.jwksMaxAge })

function failure(err: unknown): string {
  return err instanceof Error ? err.message : String(err)
}

// ---------------------------------------------------------------------------------------------- explain

/** The body schema of POST /token: an audience or scope it refuses is `invalid_request` before any policy check. */
const validateRequest = new Ajv({ strict: true, coerceTypes: false, useDefaults: false }).compile(tokenRequestSchema)

const STATUS_OF = { invalid_client: 401, invalid_request: 400, invalid_target: 400, invalid_scope: 400 } as const

type Explanation =
  | DecisionExplanation
  | { readonly allowed: false; readonly error: 'invalid_request'; readonly reason: 'malformed_request'; readonly detail: string }

function grantsLine(grants: ReadonlyMap<string, readonly string[]> | undefined): string[] {
  if (grants === undefined) return ['  (not a caller)']
  if (grants.size === 0) return ['  (none)']
  return [...grants].map(([audience, scopes]) => `  ${audience}: ${scopes.length === 0 ? '(no scopes)' : scopes.join(' ')}`)
}

async function explain(args: string[], env: NodeJS.ProcessEnv, io: Io): Promise<number> {
  const { values } = parse({
    args,
    options: { caller: { type: 'string' }, audience: { type: 'string' }, scope: { type: 'string' }, json: { type: 'boolean' } },
    strict: true,
  })
  const { caller, audience, scope } = values
  if (caller === undefined || audience === undefined) throw usage('explain needs --caller <cn> and --audience <aud>')
  const cfg = config(env)
  const store = await PolicyStore.load(cfg.policyPath)
  const policy = store.current
  const decision = decide(policy, caller, audience, scope)
  // /token refuses an unknown caller before reading the body, then a body that fails its schema.
  const explanation: Explanation =
    (decision.allowed || decision.error !== 'invalid_client') && !validateRequest({ audience, ...(scope === undefined ? {} : { scope }) })
      ? {
          allowed: false,
          error: 'invalid_request',
          reason: 'malformed_request',
          detail: 'the audience or scope does not fit the /token request (audience 1–255 characters, scope at most 4096)',
        }
      : explainDecision(decision, caller, audience, scope)
  const callerGrants = policy.grants.get(caller)
  const forAudience = callerGrants?.get(audience)
  const httpStatus = explanation.allowed ? 200 : STATUS_OF[explanation.error as keyof typeof STATUS_OF]
  const result = {
    caller,
    audience,
    requested: scope ?? null,
    ...explanation,
    ...(explanation.allowed ? { expiresIn: cfg.tokenTtl } : { status: httpStatus }),
    ...('granted' in explanation || forAudience === undefined ? {} : { granted: forAudience }),
    grants: callerGrants === undefined ? null : Object.fromEntries(callerGrants),
    policy: { path: store.path, sha256: policy.sha256 },
  }
  if (values.json === true) {
    io.out(json(result))
  } else {
    io.out(`decision: ${explanation.allowed ? 'allowed' : 'denied'}`)
    if (explanation.allowed) {
      const scopes = explanation.scopes ?? []
      io.out(`token:    scope ${scopes.length === 0 ? '(none)' : `"${scopes.join(' ')}"`}, lifetime ${cfg.tokenTtl}s (${formatDuration(cfg.tokenTtl * 1000)}, AUTHZ_TOKEN_TTL)`)
    } else {
      io.out(`error:    ${explanation.error} (HTTP ${httpStatus})`)
    }
    io.out(`why:      ${explanation.detail}`)
    if ('missing' in explanation && explanation.missing !== undefined) io.out(`missing:  ${explanation.missing.join(' ')}`)
    if ('malformed' in explanation && explanation.malformed !== undefined) io.out(`malformed: ${explanation.malformed.map((s) => JSON.stringify(s)).join(' ')}`)
    if (callerGrants !== undefined) {
      io.out(`granted for ${audience}: ${forAudience === undefined ? '(no grant)' : forAudience.length === 0 ? '(no scopes)' : forAudience.join(' ')}`)
    }
    io.out(`granted overall to ${caller}:`)
    for (const line of grantsLine(callerGrants)) io.out(line)
    io.out(`policy:   ${store.path} (sha256 ${policy.sha256.slice(0, 16)}…)`)
  }
  return explanation.allowed ? EXIT_OK : EXIT_FAILURE
}

// ----------------------------------------------------------------------------------------- policy check

export interface GrantChange {
  readonly caller: string
  readonly audience: string
  readonly change: 'added' | 'removed' | 'changed'
  readonly added: readonly string[]
  readonly removed: readonly string[]
}

export interface PolicyDiff {
  readonly audiencesAdded: readonly string[]
  readonly audiencesRemoved: readonly string[]
  readonly callersAdded: readonly string[]
  readonly callersRemoved: readonly string[]
  readonly grants: readonly GrantChange[]
}

const sorted = (names: Iterable<string>): string[] => [...names].sort()
const minus = <T>(a: Iterable<T>, b: { has(x: T): boolean }): T[] => [...a].filter((x) => !b.has(x))

/** What changes from `before` to `after`: audiences, callers, and caller → audience → scopes. */
export function diffPolicies(before: Policy, after: Policy): PolicyDiff {
  const grants: GrantChange[] = []
  for (const caller of sorted(new Set([...before.grants.keys(), ...after.grants.keys()]))) {
    const was = before.grants.get(caller) ?? new Map<string, readonly string[]>()
    const now = after.grants.get(caller) ?? new Map<string, readonly string[]>()
    for (const audience of sorted(new Set([...was.keys(), ...now.keys()]))) {
      const from = was.get(audience)
      const to = now.get(audience)
      const added = minus(to ?? [], new Set(from ?? []))
      const removed = minus(from ?? [], new Set(to ?? []))
      const change = from === undefined ? 'added' : to === undefined ? 'removed' : 'changed'
      if (change !== 'changed' || added.length > 0 || removed.length > 0) grants.push({ caller, audience, change, added, removed })
    }
  }
  return {
    audiencesAdded: sorted(minus(after.audiences, before.audiences)),
    audiencesRemoved: sorted(minus(before.audiences, after.audiences)),
    callersAdded: sorted(minus(after.grants.keys(), before.grants)),
    callersRemoved: sorted(minus(before.grants.keys(), after.grants)),
    grants,
  }
}

function diffLines(diff: PolicyDiff): string[] {
  const lines = [
    ...diff.audiencesAdded.map((a) => `+ audience ${a}`),
    ...diff.audiencesRemoved.map((a) => `- audience ${a}`),
    ...diff.callersAdded.map((c) => `+ caller ${c}`),
    ...diff.callersRemoved.map((c) => `- caller ${c} (its requests become invalid_client)`),
  ]
  for (const g of diff.grants) {
    const scopes = (list: readonly string[]): string => (list.length === 0 ? '(no scopes)' : list.join(' '))
    if (g.change === 'added') lines.push(`+ ${g.caller} → ${g.audience}: ${scopes(g.added)}`)
    else if (g.change === 'removed') lines.push(`- ${g.caller} → ${g.audience}: ${scopes(g.removed)}`)
    else lines.push(`~ ${g.caller} → ${g.audience}: ${[...g.added.map((s) => `+${s}`), ...g.removed.map((s) => `-${s}`)].join(' ')}`)
  }
  return lines
}

async function readPolicyFile(path: string): Promise<Policy> {
  let text: string
  try {
    text = await readFile(path, 'utf8')
  } catch (err) {
    throw new AuthzError('ERR_POLICY_READ', `cannot read policy ${path}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`)
  }
  return parsePolicy(text, path)
}

async function policyCheck(args: string[], io: Io): Promise<number> {
  const { values, positionals } = parse({
    args,
    options: { against: { type: 'string' }, json: { type: 'boolean' } },
    strict: true,
    allowPositionals: true,
  })
  if (positionals.length !== 1) throw usage('policy check takes exactly one file')
  const file = positionals[0] as string
  const asJson = values.json === true
  let policy: Policy
  let current: Policy | undefined
  try {
    policy = await readPolicyFile(file)
    if (values.against !== undefined) current = await readPolicyFile(values.against)
  } catch (err) {
    if (!asJson || !(err instanceof AuthzError)) throw err
    io.out(json({ file, valid: false, code: err.code, error: err.message }))
    return EXIT_FAILURE
  }
  const diff = current === undefined ? undefined : diffPolicies(current, policy)
  if (asJson) {
    io.out(
      json({
        file,
        valid: true,
        sha256: policy.sha256,
        callers: policy.grants.size,
        audiences: policy.audiences.size,
        ...(diff === undefined ? {} : { against: { file: values.against, sha256: current?.sha256 }, diff }),
      }),
    )
    return EXIT_OK
  }
  io.out(`${file}: valid (${policy.grants.size} callers, ${policy.audiences.size} audiences, sha256 ${policy.sha256.slice(0, 16)}…)`)
  if (diff !== undefined) {
    const lines = diffLines(diff)
    io.out(lines.length === 0 ? `no change in audiences or grants against ${values.against}` : `changes against ${values.against}:`)
    for (const line of lines) io.out(`  ${line}`)
  }
  return EXIT_OK
}

// ---------------------------------------------------------------------------------------- token inspect

interface Check {
  readonly ok: boolean | null
  readonly detail: string
  readonly [field: string]: unknown
}

interface KeySource {
  readonly label: string
  /** Public JWKs by kid. */
  readonly keys: ReadonlyMap<string, JWK>
  /** Lifecycle state of each key (local keys only). */
  readonly states?: ReadonlyMap<string, KeyState>
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = []
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer)
  return Buffer.concat(chunks).toString('utf8')
}

async function readPem(path: string, what: string): Promise<string> {
  try {
    return await readFile(path, 'utf8')
  } catch (err) {
    throw new Error(`cannot read ${what} ${path}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`)
  }
}

async function jwksSource(url: URL, tls: RemoteTls): Promise<KeySource> {
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw usage('--jwks must be an http(s) URL')
  const keys = new Map<string, JWK>()
  // The SDK verifier's rule: only RSA signing keys for RS256 count.
  for (const k of signingKeys(await fetchJwks(url, tls), ['RS256'])) keys.set(k.kid, k)
  return { label: url.href, keys }
}

async function localSource(cfg: Config, clock: Clock): Promise<KeySource> {
  const keyset = await loadKeyset(cfg.keysDir, { passphrase: cfg.keyPassphrase })
  const states = new Map(keyStates(keyset.keys, clock.now(), timingOf(cfg)).map((s) => [s.key.kid, s.state]))
  return { label: cfg.keysDir, keys: new Map(keyset.keys.map((k) => [k.kid, { ...k.publicJwk }])), states }
}

async function manifestOrUndefined(dir: string): Promise<Manifest | undefined> {
  try {
    return await readManifest(dir)
  } catch {
    return undefined
  }
}

function kidCheck(kid: string | undefined, source: KeySource, manifest: Manifest | undefined, cfg: Config, clock: Clock): Check {
  if (kid === undefined) return { ok: false, status: 'unknown', detail: 'the header has no kid (authz always sets one)' }
  const state = source.states?.get(kid)
  if (source.keys.has(kid)) {
    if (state === 'expired') {
      return { ok: false, kid, status: 'unpublished', state, detail: `${kid}: expired key, no longer published: verifiers reject its tokens (prune removes it)` }
    }
    return { ok: true, kid, status: 'known', ...(state === undefined ? {} : { state }), detail: `${kid}: ${state ?? 'published'} in ${source.label}` }
  }
  const revoked = manifest?.revoked.find((r) => r.kid === kid)
  if (revoked !== undefined) {
    return { ok: false, kid, status: 'revoked', revokedAt: iso(revoked.revokedAt), detail: `${kid}: revoked at ${iso(revoked.revokedAt)} (manifest in ${cfg.keysDir})` }
  }
  const inManifest = manifest?.keys.find((k) => k.kid === kid)
  if (inManifest !== undefined) {
    const localState = statusesOf(manifest as Manifest, { timing: timingOf(cfg), clock }).find((s) => s.key.kid === kid)?.state
    return { ok: false, kid, status: 'unpublished', state: localState, detail: `${kid}: in the local manifest (${localState}) but not in ${source.label}` }
  }
  return {
    ok: false,
    kid,
    status: 'unknown',
    detail: `${kid}: not in ${source.label}, and the manifest does not list it as revoked: probably pruned (or not signed by this authz)`,
  }
}

async function signatureCheck(token: string, header: ProtectedHeaderParameters, source: KeySource): Promise<Check> {
  const jwk = header.kid === undefined ? undefined : source.keys.get(header.kid)
  if (jwk === undefined) return { ok: false, status: 'unverified', detail: 'not verified: no key with this kid' }
  try {
    const key = await importJWK({ ...jwk, alg: 'RS256' }, 'RS256')
    await compactVerify(token, key, { algorithms: ['RS256'] })
    return { ok: true, status: 'valid', detail: `valid (RS256, key ${header.kid})` }
  } catch (err) {
    const code = (err as { code?: string }).code ?? 'ERR_JOSE'
    const why = code === 'ERR_JOSE_ALG_NOT_ALLOWED' ? `alg ${String(header.alg)} is not RS256` : code === 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED' ? 'signature does not match' : code
    return { ok: false, status: 'invalid', code, detail: `invalid: ${why}` }
  }
}

function timeChecks(payload: JWTPayload, nowSec: number): { exp: Check; nbf: Check } {
  const { exp, nbf } = payload
  const expCheck: Check =
    typeof exp !== 'number'
      ? { ok: false, detail: 'no exp claim' }
      : nowSec < exp
        ? { ok: true, at: iso(exp * 1000), secondsLeft: Math.round(exp - nowSec), detail: `${iso(exp * 1000)}: valid for ${formatDuration((exp - nowSec) * 1000)}` }
        : { ok: false, at: iso(exp * 1000), secondsLeft: Math.round(exp - nowSec), detail: `${iso(exp * 1000)}: expired ${formatDuration((nowSec - exp) * 1000)} ago` }
  const nbfCheck: Check =
    typeof nbf !== 'number'
      ? { ok: null, detail: 'absent' }
      : nbf <= nowSec
        ? { ok: true, at: iso(nbf * 1000), detail: `${iso(nbf * 1000)}: passed` }
        : { ok: false, at: iso(nbf * 1000), detail: `${iso(nbf * 1000)}: not valid for another ${formatDuration((nbf - nowSec) * 1000)}` }
  return { exp: expCheck, nbf: nbfCheck }
}

async function bindingCheck(payload: JWTPayload, certPath: string | undefined): Promise<Check> {
  const cnf = payload.cnf as { 'x5t#S256'?: unknown } | undefined
  const bound = cnf?.['x5t#S256']
  if (typeof bound !== 'string') return { ok: false, binding: 'missing', detail: 'no cnf.x5t#S256 (authz always binds its tokens)' }
  if (certPath === undefined) return { ok: null, binding: 'not_checked', thumbprint: bound, detail: `x5t#S256 ${bound} (pass --cert <pem> to check a certificate)` }
  let thumbprint: string
  try {
    thumbprint = thumbprintOf(await readPem(certPath, 'certificate'))
  } catch (err) {
    throw new Error(`--cert ${certPath}: ${err instanceof Error && err.message.startsWith('cannot read') ? err.message : 'not a PEM certificate'}`)
  }
  return thumbprint === bound
    ? { ok: true, binding: 'match', thumbprint: bound, detail: `x5t#S256 ${bound}: matches ${certPath}` }
    : { ok: false, binding: 'mismatch', thumbprint: bound, certificate: thumbprint, detail: `x5t#S256 ${bound}: ${certPath} is another certificate (${thumbprint})` }
}

async function tokenInspect(args: string[], env: NodeJS.ProcessEnv, io: AuthzIo, clock: Clock): Promise<number> {
  const { values, positionals } = parse({
    args,
    options: {
      jwks: { type: 'string' },
      ca: { type: 'string' },
      'client-cert': { type: 'string' },
      'client-key': { type: 'string' },
      cert: { type: 'string' },
      json: { type: 'boolean' },
    },
    strict: true,
    allowPositionals: true,
  })
  if (positionals.length !== 1) throw usage('token inspect takes exactly one token, or - to read it from stdin')
  if ((values['client-cert'] === undefined) !== (values['client-key'] === undefined)) throw usage('--client-cert and --client-key go together')
  if (values.jwks === undefined && (values.ca ?? values['client-cert']) !== undefined) throw usage('--ca, --client-cert and --client-key are for --jwks')
  const cfg = config(env)
  const token = (positionals[0] === '-' ? await (io.readStdin ?? readStdin)() : (positionals[0] as string)).trim()
  // Decode without echoing the input: it holds a signature, and error messages end up in terminals and tickets.
  let header: ProtectedHeaderParameters
  let payload: JWTPayload
  try {
    if (token.split('.').length !== 3) throw new Error('not three parts')
    header = decodeProtectedHeader(token)
    payload = decodeJwt(token)
  } catch {
    throw new Error('not a compact JWT (header.payload.signature, base64url JSON)')
  }
  let source: KeySource
  if (values.jwks === undefined) {
    source = await localSource(cfg, clock)
  } else {
    let url: URL
    try {
      url = new URL(values.jwks)
    } catch {
      throw usage(`--jwks ${values.jwks}: not a URL`)
    }
    source = await jwksSource(url, {
      ...(values.ca === undefined ? {} : { ca: await readPem(values.ca, 'CA bundle') }),
      ...(values['client-cert'] === undefined ? {} : { cert: await readPem(values['client-cert'], 'client certificate') }),
      ...(values['client-key'] === undefined ? {} : { key: await readPem(values['client-key'], 'client key') }),
    })
  }
  const manifest = await manifestOrUndefined(cfg.keysDir)
  const nowSec = clock.now() / 1000
  const checks: Record<string, Check> = {
    alg: header.alg === 'RS256' ? { ok: true, detail: 'RS256' } : { ok: false, detail: `${String(header.alg)} (only RS256 is accepted)` },
    typ: header.typ === 'at+jwt' ? { ok: true, detail: 'at+jwt' } : { ok: false, detail: `${String(header.typ)} (want at+jwt)` },
    signature: await signatureCheck(token, header, source),
    kid: kidCheck(header.kid, source, manifest, cfg, clock),
    iss:
      payload.iss === cfg.issuer
        ? { ok: true, detail: `${payload.iss} (= AUTHZ_ISSUER)` }
        : { ok: false, detail: `${String(payload.iss)} is not AUTHZ_ISSUER ${cfg.issuer}` },
    aud: typeof payload.aud === 'string' && payload.aud !== '' ? { ok: true, detail: payload.aud } : { ok: false, detail: `${JSON.stringify(payload.aud)} (want one audience string)` },
    ...timeChecks(payload, nowSec),
    cnf: await bindingCheck(payload, values.cert),
  }
  const ok = Object.values(checks).every((c) => c.ok !== false)
  if (values.json === true) {
    io.out(json({ header, payload, keys: source.label, now: iso(clock.now()), checks, ok }))
  } else {
    io.out('header:')
    io.out(json(header))
    io.out('payload:')
    io.out(json(payload))
    io.out('(signature not shown)')
    io.out(`checks (keys: ${source.label}, now ${iso(clock.now())}):`)
    for (const [name, check] of Object.entries(checks)) io.out(`  ${(check.ok === null ? '-' : check.ok ? 'ok' : 'FAIL').padEnd(4)}  ${name.padEnd(9)}  ${check.detail}`)
    const failed = Object.entries(checks).filter(([, c]) => c.ok === false).map(([n]) => n)
    io.out(ok ? 'result: ok' : `result: FAILED (${failed.join(', ')})`)
  }
  return ok ? EXIT_OK : EXIT_FAILURE
}

// ---------------------------------------------------------------------------------------------- status

interface CertInfo {
  readonly subject: string
  readonly notAfter: string
  readonly daysLeft: number
}

interface FileReport {
  readonly name: string
  readonly path: string
  readonly present: boolean
  readonly error?: string
  readonly certificates?: readonly CertInfo[]
  readonly crls?: readonly { readonly thisUpdate: string | null; readonly nextUpdate: string | null; readonly daysLeft: number | null }[]
}

const DAY_MS = 86_400_000

/** The PEM blocks of a file with this label (node-forge's RFC 7468 reader), as DER bytes. */
function pemBlocks(text: string, label: string): Buffer[] {
  return forge.pem
    .decode(text)
    .filter((block) => block.type === label)
    .map((block) => Buffer.from(block.body, 'binary'))
}

/**
 * thisUpdate and nextUpdate of a DER CRL (RFC 5280 §5.1), read with node-forge's ASN.1 reader: node:crypto
 * has no CRL parser, and these two dates are all `status` needs. A CRL past its nextUpdate makes OpenSSL
 * refuse every client certificate.
 */
export function crlDates(der: Uint8Array): { thisUpdate: number; nextUpdate: number | null } {
  const { asn1 } = forge
  const crl = asn1.fromDer(forge.util.createBuffer(Buffer.from(der).toString('binary')))
  const tbs = (crl.value as forge.asn1.Asn1[])[0]
  if (tbs === undefined || !Array.isArray(tbs.value)) throw new Error('not a CRL')
  // [version] signature issuer thisUpdate [nextUpdate] ...
  const fields = tbs.value.slice((tbs.value[0] as forge.asn1.Asn1).type === asn1.Type.INTEGER ? 1 : 0)
  const time = (el: forge.asn1.Asn1 | undefined): number | null => {
    if (el?.type === asn1.Type.UTCTIME) return asn1.utcTimeToDate(el.value as string).getTime()
    if (el?.type === asn1.Type.GENERALIZEDTIME) return asn1.generalizedTimeToDate(el.value as string).getTime()
    return null
  }
  const thisUpdate = time(fields[2])
  if (thisUpdate === null) throw new Error('CRL without thisUpdate')
  return { thisUpdate, nextUpdate: time(fields[3]) }
}

async function fileReport(name: string, path: string, kind: 'certificates' | 'crl', now: number): Promise<FileReport> {
  let text: string
  try {
    text = await readFile(path, 'utf8')
  } catch (err) {
    return { name, path, present: false, error: (err as NodeJS.ErrnoException).code ?? 'error' }
  }
  try {
    if (kind === 'crl') {
      const blocks = pemBlocks(text, 'X509 CRL')
      if (blocks.length === 0) return { name, path, present: true, error: 'no PEM CRL in the file' }
      const crls = blocks.map((der) => {
        try {
          const { thisUpdate, nextUpdate } = crlDates(der)
          return { thisUpdate: iso(thisUpdate), nextUpdate: iso(nextUpdate), daysLeft: nextUpdate === null ? null : Math.floor((nextUpdate - now) / DAY_MS) }
        } catch {
          return { thisUpdate: null, nextUpdate: null, daysLeft: null }
        }
      })
      return { name, path, present: true, crls }
    }
    const blocks = pemBlocks(text, 'CERTIFICATE')
    if (blocks.length === 0) return { name, path, present: true, error: 'no PEM certificate in the file' }
    const certificates = blocks.map((der) => {
      const cert = new X509Certificate(der)
      const notAfter = new Date(cert.validTo).getTime()
      return { subject: cert.subject.split('\n').join(', '), notAfter: iso(notAfter) as string, daysLeft: Math.floor((notAfter - now) / DAY_MS) }
    })
    return { name, path, present: true, certificates }
  } catch (err) {
    return { name, path, present: true, error: `unreadable: ${failure(err)}` }
  }
}

async function readiness(cfg: Config): Promise<{ url: string; running: boolean; status?: number; body?: unknown; error?: string }> {
  // A wildcard bind address is reachable on loopback.
  const host = cfg.opsHost === '0.0.0.0' || cfg.opsHost === '' ? '127.0.0.1' : cfg.opsHost === '::' ? '::1' : cfg.opsHost
  const url = new URL(`http://${host.includes(':') ? `[${host}]` : host}:${cfg.opsPort}/readyz`)
  try {
    const res = await httpRequestText(url, { agent: new HttpAgent({ keepAlive: false }), timeoutMs: 1500 })
    let body: unknown = res.body
    try {
      body = JSON.parse(res.body)
    } catch {
      // not JSON: keep the text
    }
    return { url: url.href, running: true, status: res.status, body }
  } catch (err) {
    return { url: url.href, running: false, error: (err as NodeJS.ErrnoException).code ?? failure(err) }
  }
}

async function status(args: string[], env: NodeJS.ProcessEnv, io: Io, clock: Clock): Promise<number> {
  const { values } = parse({ args, options: { json: { type: 'boolean' } }, strict: true })
  const cfg = config(env)
  const now = clock.now()
  let failed = false

  let keys: Record<string, unknown>
  try {
    const manifest = await readManifest(cfg.keysDir)
    const statuses = statusesOf(manifest, { timing: timingOf(cfg), clock })
    // The server loads every key file the manifest names; so does this check.
    await loadKeyset(cfg.keysDir, { passphrase: cfg.keyPassphrase })
    const next = statuses.find((s) => s.state === 'next')
    keys = {
      dir: cfg.keysDir,
      ok: true,
      active: statuses.find((s) => s.state === 'active')?.key.kid ?? null,
      nextActivation: next === undefined ? null : iso(next.key.activatesAt),
      keys: statuses.map((s) => ({
        kid: s.key.kid,
        state: s.state,
        activatesAt: iso(s.key.activatesAt),
        retiredAt: iso(s.retiredAt),
        prunableAt: iso(s.prunableAt),
      })),
      revoked: manifest.revoked.map((r) => ({ kid: r.kid, revokedAt: iso(r.revokedAt) })),
    }
  } catch (err) {
    failed = true
    keys = { dir: cfg.keysDir, ok: false, error: failure(err) }
  }

  let policy: Record<string, unknown>
  try {
    const current = (await PolicyStore.load(cfg.policyPath)).current
    policy = { path: cfg.policyPath, ok: true, sha256: current.sha256, callers: current.grants.size, audiences: current.audiences.size }
  } catch (err) {
    failed = true
    policy = { path: cfg.policyPath, ok: false, error: failure(err) }
  }

  const devPki = join(cfg.keysDir, 'dev-pki')
  const tlsMode = cfg.tls !== null ? 'configured' : cfg.dev ? 'dev' : 'missing'
  const files =
    cfg.tls !== null
      ? [
          fileReport('AUTHZ_TLS_CERT', cfg.tls.cert, 'certificates', now),
          fileReport('AUTHZ_CLIENT_CA', cfg.tls.clientCa, 'certificates', now),
          ...(cfg.tls.crl === undefined ? [] : [fileReport('AUTHZ_CRL', cfg.tls.crl, 'crl', now)]),
        ]
      : cfg.dev
        ? [fileReport('dev server certificate', join(devPki, 'server.pem'), 'certificates', now), fileReport('dev CA', join(devPki, 'ca.pem'), 'certificates', now)]
        : []
  const tls = { mode: tlsMode, files: await Promise.all(files) }
  const server = await readiness(cfg)

  if (values.json === true) {
    io.out(json({ now: iso(now), keys, policy, tls, server }))
    return failed ? EXIT_FAILURE : EXIT_OK
  }
  if (keys.ok === true) {
    const list = keys.keys as { kid: string; state: string; activatesAt: string; retiredAt: string | null; prunableAt: string | null }[]
    const revokedCount = (keys.revoked as unknown[]).length
    io.out(
      `keys: ${cfg.keysDir} (${list.length} key${list.length === 1 ? '' : 's'}${revokedCount > 0 ? `, ${revokedCount} revoked` : ''}${keys.active === null ? ', NONE ACTIVE: /token answers 503' : ''})`,
    )
    for (const k of list) {
      const when =
        k.state === 'next'
          ? `activates ${k.activatesAt} (in ${formatDuration(Date.parse(k.activatesAt) - now)})`
          : k.state === 'active'
            ? `signing since ${k.activatesAt}`
            : k.state === 'retired'
              ? `retired ${k.retiredAt}, published until ${k.prunableAt}`
              : `unpublished since ${k.prunableAt} (run: npm run keys -- prune)`
      io.out(`  ${k.kid}  ${k.state.padEnd(7)}  ${when}`)
    }
    if (list.length === 0) io.out('  no keys (run: npm run keys -- init)')
    for (const r of keys.revoked as { kid: string; revokedAt: string }[]) io.out(`  ${r.kid}  revoked  at ${r.revokedAt}`)
  } else {
    io.out(`keys: ${cfg.keysDir}: CANNOT READ: ${String(keys.error)}`)
  }
  io.out(
    policy.ok === true
      ? `policy: ${cfg.policyPath} (sha256 ${String(policy.sha256).slice(0, 16)}…, ${String(policy.callers)} callers, ${String(policy.audiences)} audiences)`
      : `policy: CANNOT READ: ${String(policy.error)}`,
  )
  io.out(tlsMode === 'dev' ? `tls: dev mode (no AUTHZ_TLS_* set): ${devPki}` : tlsMode === 'missing' ? 'tls: not configured, and AUTHZ_DEV=false: the server will not start' : 'tls:')
  for (const f of tls.files) {
    const head = `  ${f.name}: ${f.path}`
    if (!f.present) io.out(`${head}: missing (${f.error})${tlsMode === 'dev' ? ', made on the first dev start' : ''}`)
    else if (f.error !== undefined) io.out(`${head}: ${f.error}`)
    for (const c of f.certificates ?? []) io.out(`${head}: ${c.subject}, expires ${c.notAfter} (${c.daysLeft < 0 ? 'EXPIRED' : `${c.daysLeft} days left`})`)
    for (const c of f.crls ?? []) {
      io.out(`${head}: readable${c.nextUpdate === null ? '' : `, next update ${c.nextUpdate} (${(c.daysLeft ?? 0) < 0 ? 'OVERDUE: clients are refused' : `${c.daysLeft} days left`})`}`)
    }
  }
  io.out(
    server.running
      ? `server: ${server.url} answers ${server.status}${server.status === 200 ? ' (ready)' : ''}: ${JSON.stringify(server.body)}`
      : `server: not running or not reachable (${server.url}: ${server.error})`,
  )
  return failed ? EXIT_FAILURE : EXIT_OK
}

// ------------------------------------------------------------------------------------------------- main

/** Runs one CLI invocation; returns the exit code. */
export async function runAuthzCli(argv: string[], env: NodeJS.ProcessEnv, io: AuthzIo = processIo, clock: Clock = systemClock): Promise<number> {
  const [verb, ...rest] = argv
  try {
    switch (verb) {
      case undefined:
      case 'help':
      case '--help':
      case '-h':
        io.out(AUTHZ_USAGE)
        return verb === undefined ? EXIT_USAGE : EXIT_OK
      case 'explain':
        return await explain(rest, env, io)
      case 'policy':
        if (rest[0] !== 'check') throw usage(`unknown policy verb ${JSON.stringify(rest[0] ?? '')} (want: policy check <file>)`)
        return await policyCheck(rest.slice(1), io)
      case 'token':
        if (rest[0] !== 'inspect') throw usage(`unknown token verb ${JSON.stringify(rest[0] ?? '')} (want: token inspect <token|->)`)
        return await tokenInspect(rest.slice(1), env, io, clock)
      case 'status':
        return await status(rest, env, io, clock)
      default:
        throw usage(`unknown verb ${JSON.stringify(verb)}`)
    }
  } catch (err) {
    if (err instanceof AuthzError && err.code === 'ERR_USAGE') {
      io.err(`authz: ${err.message}`)
      io.err(AUTHZ_USAGE)
      return EXIT_USAGE
    }
    io.err(`authz: ${failure(err)}`)
    return EXIT_FAILURE
  }
}
