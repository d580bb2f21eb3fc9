/**
 * The syntax the issuer and every service share: what a scope and a service name may look like, and how
 * a space-separated scope string splits. Written once, here; the issuer imports it from `@authz/sdk`.
 */

/** RFC 6749 §3.3 scope-token: printable ASCII except space, `"` and `\`; at most 128 characters. */
export const SCOPE_TOKEN = '^[\\x21\\x23-\\x5B\\x5D-\\x7E]{1,128}$'
/** A service name (a caller's certificate CN, an audience): printable ASCII, no space, 1–255 characters. */
export const SERVICE_NAME = '^[\\x21-\\x7E]{1,255}$'

const scopeToken = new RegExp(SCOPE_TOKEN)
const serviceName = new RegExp(SERVICE_NAME)

/** Is this an RFC 6749 scope-token? */
export function isScopeToken(value: unknown): boolean {
  return typeof value === 'string' && scopeToken.test(value)
}

/** Is this a valid service name? */
export function isServiceName(value: unknown): boolean {
  return typeof value === 'string' && serviceName.test(value)
}

/** Splits a space-separated scope string (a token's `scope`, a request's `scope`) into its non-empty parts, in order. */
export function splitScopes(scope: string): string[] {
  return scope.split(' ').filter((s) => s !== '')
}
