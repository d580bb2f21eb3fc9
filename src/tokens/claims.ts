/**
 * The access-token claims (RFC 9068 profile), built as a pure function. Nothing from the request body
 * reaches `sub`, `client_id`, `iss`, `exp` or `cnf`: those come from the certificate and the config.
 */
export interface AccessTokenClaims {
  readonly iss: string
  readonly sub: string
  readonly client_id: string
  readonly aud: string
  readonly iat: number
  readonly nbf: number
  readonly exp: number
  readonly jti: string
  readonly scope?: string
  readonly cnf: { readonly 'x5t#S256': string }
}

export interface ClaimsInput {
  readonly issuer: string
  /** The caller's name: its certificate CN, or its SPIFFE ID (AUTHZ_IDENTITY). */
  readonly subject: string
  /** base64url SHA-256 of the caller's certificate DER. */
  readonly thumbprint: string
  readonly audience: string
  readonly scopes: readonly string[]
  /** Token lifetime, seconds. */
  readonly ttl: number
  /** ms since epoch. */
  readonly now: number
  readonly jti: string
}

export function buildClaims(input: ClaimsInput): AccessTokenClaims {
  const iat = Math.floor(input.now / 1000)
  const claims: AccessTokenClaims = {
    iss: input.issuer,
    sub: input.subject,
    client_id: input.subject,
    aud: input.audience,
    iat,
    nbf: iat,
    exp: iat + input.ttl,
    jti: input.jti,
    ...(input.scopes.length > 0 ? { scope: input.scopes.join(' ') } : {}),
    cnf: { 'x5t#S256': input.thumbprint },
  }
  return claims
}
