/**
 * Which part of the caller's certificate names it (`AUTHZ_IDENTITY`): its Subject CommonName (`cn`), or its
 * one `spiffe://` URI SAN within the trust domains of `AUTHZ_SPIFFE_TRUST_DOMAINS` (`spiffe`). The policy's
 * caller names (the keys of `grants`) are names of that kind; a name that cannot be one is refused when the
 * policy loads, so a caller that could never authenticate is not silently kept.
 */
import { isServiceName } from '@authz/sdk'
import { parseWorkloadId, SPIFFE_ID_FAULTS } from './spiffe-id.js'

export type IdentityMode = { readonly kind: 'cn' } | { readonly kind: 'spiffe'; readonly trustDomains: readonly string[] }

export const CN_IDENTITY: IdentityMode = Object.freeze({ kind: 'cn' })

/** `cn`, or `spiffe (trust domains a, b)`: for status lines and messages. */
export function describeIdentity(mode: IdentityMode): string {
  return mode.kind === 'cn' ? 'cn (the certificate Subject CN)' : `spiffe (the certificate URI SAN; trust domains ${mode.trustDomains.join(', ')})`
}

/** Why `name` cannot name a caller under `mode`, or undefined when it can. */
export function callerNameProblem(mode: IdentityMode, name: string): string | undefined {
  if (mode.kind === 'cn') {
    // A CN that spells a SPIFFE ID is a look-alike of one: with AUTHZ_IDENTITY=cn, any certificate whose CN
    // says "spiffe://…" would be that caller. The policy author meant the spiffe mode.
    if (/^spiffe:/i.test(name)) return 'is a SPIFFE ID, but AUTHZ_IDENTITY is cn (callers are certificate CNs); set AUTHZ_IDENTITY=spiffe and AUTHZ_SPIFFE_TRUST_DOMAINS'
    return isServiceName(name) ? undefined : 'is not a valid service name (printable ASCII, no space, 1–255 characters)'
  }
  const parsed = parseWorkloadId(name)
  if (!parsed.ok) return `is not a SPIFFE ID (AUTHZ_IDENTITY=spiffe): ${SPIFFE_ID_FAULTS[parsed.fault]}`
  if (!mode.trustDomains.includes(parsed.value.trustDomain)) {
    return `trust domain "${parsed.value.trustDomain}" is not in AUTHZ_SPIFFE_TRUST_DOMAINS (${mode.trustDomains.join(', ')})`
  }
  return undefined
}
