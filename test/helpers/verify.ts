/** Verifier tests' shared pieces: the code a verification ends with, and a verifier of a harness's JWKS. */
import type { Test } from 'tap'
import { VerifyError } from '../../packages/sdk/src/errors.js'
import { createVerifier, type Verifier, type VerifierOptions } from '../../packages/sdk/src/verifier.js'
import type { Harness } from './harness.js'

/** 'accepted', or the VerifyError code (tests assert on codes, never on message text). */
export const codeOf = async (p: Promise<unknown>): Promise<string> =>
  p.then(
    () => 'accepted',
    (e: unknown) => (e instanceof VerifyError ? e.code : `not a VerifyError: ${String(e)}`),
  )

/**
 * A verifier for inventory-service against the harness's ops JWKS, on the harness's clock; closed at teardown.
 * It verifies without a peer certificate (`allowNoPeer`): these tests are about tokens and keys; the
 * binding, required by default, is pinned in verifier.test.ts.
 */
export async function harnessVerifier(t: Test, h: Harness, extra: Partial<VerifierOptions> = {}): Promise<Verifier> {
  const v = await createVerifier({
    issuer: 'https://authz.internal',
    audience: 'inventory-service',
    jwksUrl: `http://127.0.0.1:${h.opsPort}/.well-known/jwks.json`,
    clock: h.clock,
    allowNoPeer: true,
    ...extra,
  })
  t.teardown(() => v.close())
  return v
}
