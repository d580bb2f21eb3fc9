import { createHash, type BinaryLike } from 'node:crypto'

/** SHA-256 of `parts` (each followed by a NUL, so different splits never collide), hex. */
export function sha256Hex(...parts: readonly (BinaryLike | undefined)[]): string {
  return digest(parts).digest('hex')
}

/** SHA-256 of `data`, base64url (RFC 7638 thumbprints, RFC 8705 `x5t#S256`, ETags). */
export function sha256Base64url(data: BinaryLike): string {
  return createHash('sha256').update(data).digest('base64url')
}

function digest(parts: readonly (BinaryLike | undefined)[]) {
  const hash = createHash('sha256')
  if (parts.length === 1) return hash.update(parts[0] ?? '')
  for (const part of parts) hash.update(part ?? '').update('\0')
  return hash
}
