/**
 * The syntax the issuer and every service share: what a scope and a service name may look like, and how
 * a space-separated scope string splits. Written once, here; the issuer imports it from `@authz/sdk`.
 */

/** RFC 6749 §3.3 scope-token: printable ASCII except space, `"` and `\`; at most 128 characters. */
export const SCOPE_TOKEN = '^[\\x21\\x23-\\x5B\\x5D-\\x7E]{1,128}$'
/** A service name (a caller's certificate CN, an audience): printable ASCII, no space, 1–255 characters. */
export const SERVICE_NAME = '^[\\x21-\\x7E]{1,255}$'

/**
 * A workload SPIFFE ID (X.509-SVID URI SAN, `AUTHZ_IDENTITY=spiffe`): `spiffe://`, a lowercase trust
 * domain, a non-empty path of segments of letters, digits, `.`, `-`, `_` — no empty, `.` or `..` segment, no
 * trailing slash, no port, user info, query, fragment or percent-encoding — at most 2048 bytes.
 */
export const SPIFFE_ID = '^spiffe://[a-z0-9._-]{1,255}(/(\\.*[A-Za-z0-9_-][A-Za-z0-9._-]*|\\.\\.\\.+))+$'
/** The most a SPIFFE ID may hold (the SPIFFE ID specification's bound). */
export const SPIFFE_ID_MAX_LENGTH = 2048

const scopeToken = new RegExp(SCOPE_TOKEN)
const serviceName = new RegExp(SERVICE_NAME)
const spiffeId = new RegExp(SPIFFE_ID)
const spiffeScheme = /^spiffe:/i

/** Is this an RFC 6749 scope-token? */
export function isScopeToken(value: unknown): boolean {
  return typeof value === 'string' && scopeToken.test(value)
}

/** Is this a valid service name? */
export function isServiceName(value: unknown): boolean {
  return typeof value === 'string' && serviceName.test(value)
}

/** Is this a well-formed workload SPIFFE ID? */
export function isSpiffeId(value: unknown): boolean {
  return typeof value === 'string' && value.length <= SPIFFE_ID_MAX_LENGTH && spiffeId.test(value)
}

/**
 * Can this name a caller in a callee policy: a service name (a certificate CN), or a SPIFFE ID? Anything that
 * starts with the `spiffe:` scheme, in any case, must be a well-formed SPIFFE ID: `spiffe://Example.org/x`
 * or `spiffe://example.org/x/` would otherwise be taken for service names that no caller ever has.
 */
export function isCallerName(value: unknown): boolean {
  if (typeof value !== 'string') return false
  return spiffeScheme.test(value) ? isSpiffeId(value) : serviceName.test(value)
}

/** Splits a space-separated scope string (a token's `scope`, a request's `scope`) into its non-empty parts, in order. */
export function splitScopes(scope: string): string[] {
  return scope.split(' ').filter((s) => s !== '')
}
