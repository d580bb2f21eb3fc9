/**
 * Signs access tokens with the key that is active now. The private key was imported once when the keyset
 * loaded; signing runs through WebCrypto, off the event loop.
 */
import { SignJWT } from 'jose'
import type { LoadedKey } from '../keys/keyset.js'
import type { AccessTokenClaims } from './claims.js'

export const TOKEN_TYPE = 'at+jwt'

export async function signAccessToken(claims: AccessTokenClaims, key: LoadedKey): Promise<string> {
  return new SignJWT({ ...claims })
    .setProtectedHeader({ alg: 'RS256', typ: TOKEN_TYPE, kid: key.kid })
    .sign(key.privateKey)
}
