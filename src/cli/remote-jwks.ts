/** A live JWKS, fetched by the CLIs (`token inspect --jwks`, `keys check --against`). */
import { Agent as HttpAgent } from 'node:http'
import { Agent as HttpsAgent } from 'node:https'
import type { JWK } from 'jose'
import { AuthzError } from '../errors.js'
import { httpRequestText } from '@authz/sdk'
import { usageError } from './runner.js'

/** PEM material for an https JWKS (the main listener asks for a client certificate). */
export interface RemoteTls {
  readonly ca?: string
  readonly cert?: string
  readonly key?: string
}

/** The options that name that material (`token inspect --jwks`, `keys check --against`). */
export const REMOTE_TLS_OPTIONS = {
  ca: { type: 'string' },
  'client-cert': { type: 'string' },
  'client-key': { type: 'string' },
} as const

/** The files those options name, each read with `read(path, what)`. */
export async function readRemoteTls(
  values: { readonly ca?: string | undefined; readonly 'client-cert'?: string | undefined; readonly 'client-key'?: string | undefined },
  read: (path: string, what: string) => Promise<string>,
): Promise<RemoteTls> {
  return {
    ...(values.ca === undefined ? {} : { ca: await read(values.ca, 'CA bundle') }),
    ...(values['client-cert'] === undefined ? {} : { cert: await read(values['client-cert'], 'client certificate') }),
    ...(values['client-key'] === undefined ? {} : { key: await read(values['client-key'], 'client key') }),
  }
}

/** The http(s) URL an option names (`--against`), or a usage error naming the option. */
export function jwksUrl(text: string, option: string): URL {
  let url: URL
  try {
    url = new URL(text)
  } catch {
    throw usageError(`${option} must be an http(s) URL`)
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw usageError(`${option} must be an http(s) URL`)
  return url
}

/** Every key of the JWKS at `url` (http or https), unfiltered. Throws AuthzError naming the URL. */
export async function fetchJwks(url: URL, tls: RemoteTls = {}): Promise<JWK[]> {
  return (await fetchLiveJwks(url, tls)).keys
}

/** The live side: its JWKS, and its clock (the answer's `Date` header, ms; undefined when it sent none). */
export interface LiveJwks {
  readonly keys: JWK[]
  readonly date: number | undefined
}

/** The JWKS at `url` and the time the server that answered said it was. */
export async function fetchLiveJwks(url: URL, tls: RemoteTls = {}): Promise<LiveJwks> {
  // No keep-alive: a one-shot CLI must not wait for an idle socket to time out.
  const agent = url.protocol === 'https:' ? new HttpsAgent({ keepAlive: false }) : new HttpAgent({ keepAlive: false })
  let res
  try {
    res = await httpRequestText(url, { headers: { accept: 'application/jwk-set+json, application/json' }, agent, timeoutMs: 5000, tls })
  } catch (err) {
    throw new AuthzError('ERR_KEYSET_READ', `cannot fetch ${url.href}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`)
  }
  if (res.status !== 200) throw new AuthzError('ERR_KEYSET_READ', `cannot fetch ${url.href}: HTTP ${res.status}`)
  let body: unknown
  try {
    body = JSON.parse(res.body)
  } catch {
    throw new AuthzError('ERR_KEYSET_INVALID', `${url.href} did not answer a JSON JWKS`)
  }
  const list = (body as { keys?: unknown }).keys
  if (!Array.isArray(list)) throw new AuthzError('ERR_KEYSET_INVALID', `${url.href} did not answer a JWKS (no "keys")`)
  const dateHeader = res.headers.date
  const date = typeof dateHeader === 'string' ? Date.parse(dateHeader) : Number.NaN
  return { keys: list as JWK[], date: Number.isFinite(date) ? date : undefined }
}
