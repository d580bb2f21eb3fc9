/**
 * The SPIFFE ID grammar (SPIFFE-ID.md §2, X509-SVID.md §3.1), as strict as go-spiffe's `spiffeid.FromString`:
 * `spiffe://` (lowercase), a trust domain of lowercase letters, digits, `.`, `-` and `_`, then a path of
 * `/`-separated segments of letters, digits, `.`, `-` and `_`. Nothing is normalised or decoded, so one
 * identity has exactly one spelling: no percent-encoding, no userinfo or port, no query or fragment, no
 * empty, `.` or `..` segment, no trailing slash, no uppercase trust domain. A workload's ID must have a path.
 */

export const SPIFFE_SCHEME = 'spiffe://'
/** SPIFFE-ID.md §2.3: implementations must support IDs up to 2048 bytes; the trust domain is a URI host (255). */
export const SPIFFE_ID_MAX_LENGTH = 2048
export const TRUST_DOMAIN_MAX_LENGTH = 255

export type SpiffeIdFault =
  | 'wrong_scheme'
  | 'missing_trust_domain'
  | 'bad_trust_domain_char'
  | 'trust_domain_too_long'
  | 'too_long'
  | 'no_path'
  | 'bad_path_char'
  | 'empty_segment'
  | 'dot_segment'
  | 'trailing_slash'

/** What each fault means, for start-up and CLI messages. */
export const SPIFFE_ID_FAULTS: Readonly<Record<SpiffeIdFault, string>> = {
  wrong_scheme: 'does not start with spiffe://',
  missing_trust_domain: 'has no trust domain',
  bad_trust_domain_char: 'trust domain characters are limited to lowercase letters, digits, ".", "-" and "_" (no userinfo, port or percent-encoding)',
  trust_domain_too_long: `trust domain is longer than ${TRUST_DOMAIN_MAX_LENGTH} characters`,
  too_long: `is longer than ${SPIFFE_ID_MAX_LENGTH} characters`,
  no_path: 'names a trust domain, not a workload (a workload ID has a path)',
  bad_path_char: 'path characters are limited to letters, digits, ".", "-", "_" and "/" (no percent-encoding, query or fragment)',
  empty_segment: 'path has an empty segment ("//")',
  dot_segment: 'path has a "." or ".." segment',
  trailing_slash: 'path ends with "/"',
}

export interface SpiffeId {
  /** The whole ID, exactly as written. */
  readonly id: string
  readonly trustDomain: string
  /** Starts with `/`; never empty for a workload ID. */
  readonly path: string
}

export type SpiffeIdResult = { readonly ok: true; readonly value: SpiffeId } | { readonly ok: false; readonly fault: SpiffeIdFault }

const TRUST_DOMAIN_CHARS = /^[a-z0-9._-]+$/
const SEGMENT_CHARS = /^[A-Za-z0-9._-]+$/

/** Why `name` is not a trust domain name, or undefined when it is one. */
export function trustDomainFault(name: string): SpiffeIdFault | undefined {
  if (name === '') return 'missing_trust_domain'
  if (name.length > TRUST_DOMAIN_MAX_LENGTH) return 'trust_domain_too_long'
  if (!TRUST_DOMAIN_CHARS.test(name)) return 'bad_trust_domain_char'
  return undefined
}

function pathFault(path: string): SpiffeIdFault | undefined {
  if (path === '') return 'no_path'
  const segments = path.slice(1).split('/')
  for (const [i, segment] of segments.entries()) {
    if (segment === '') return i === segments.length - 1 ? 'trailing_slash' : 'empty_segment'
    if (segment === '.' || segment === '..') return 'dot_segment'
    if (!SEGMENT_CHARS.test(segment)) return 'bad_path_char'
  }
  return undefined
}

/** Parses a workload's SPIFFE ID (a path is required). Pure; never throws. */
export function parseWorkloadId(text: string): SpiffeIdResult {
  if (!text.startsWith(SPIFFE_SCHEME)) return { ok: false, fault: 'wrong_scheme' }
  if (text.length > SPIFFE_ID_MAX_LENGTH) return { ok: false, fault: 'too_long' }
  const rest = text.slice(SPIFFE_SCHEME.length)
  const slash = rest.indexOf('/')
  const trustDomain = slash === -1 ? rest : rest.slice(0, slash)
  const path = slash === -1 ? '' : rest.slice(slash)
  const fault = trustDomainFault(trustDomain) ?? pathFault(path)
  return fault === undefined ? { ok: true, value: Object.freeze({ id: text, trustDomain, path }) } : { ok: false, fault }
}
