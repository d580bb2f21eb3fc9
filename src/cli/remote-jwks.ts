/** A live JWKS, fetched by the CLIs (`token inspect --jwks`, `keys check --against`). */
import { Agent as HttpAgent } from 'node:http'
import { Agent as HttpsAgent } from 'node:https'
import type { JWK } from 'jose'
import { AuthzError } from '../errors.js'
import { httpRequestText } from '@authz/sdk'

/** PEM material for an https JWKS (the main listener asks for a client certificate). */
export interface RemoteTls {
  readonly ca?: string
  readonly cert?: string
  readonly key?: string
}

/** Every key of the JWKS at `url` (http or https), unfiltered. Throws AuthzError naming the URL. */
export async function fetchJwks(url: URL, tls: RemoteTls = {}): Promise<JWK[]> {
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
  return list as JWK[]
}
