/**
 * A SoftHSM2 token of the test's own: a config file and token directory in a temp dir, one initialized
 * token, and the AUTHZ_PKCS11_* variables that point authz at it. SoftHSM2 must be installed (Debian
 * package softhsm2; .ci/run installs it): a missing module fails the test, it never skips it.
 */
import { execFileSync } from 'node:child_process'
import { existsSync, mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import type { Test } from 'tap'

export const SOFTHSM_MODULE = '/usr/lib/softhsm/libsofthsm2.so'
export const TOKEN_LABEL = 'authz-test'
export const USER_PIN = '246810'

export interface SoftHsm {
  /** The token directory (move it away to make the token fail). */
  readonly tokenDir: string
  /** AUTHZ_PKCS11_* for authz, with the PIN in a file. */
  readonly env: Record<string, string>
}

/** Sets SOFTHSM2_CONF for this test process (the module reads it at C_Initialize, in any thread). */
export function softHsm(t: Test, dir: string): SoftHsm {
  if (!existsSync(SOFTHSM_MODULE)) throw new Error(`SoftHSM2 is not installed (${SOFTHSM_MODULE} missing): apt-get install softhsm2`)
  const tokenDir = join(dir, 'softhsm-tokens')
  mkdirSync(tokenDir, { recursive: true })
  const conf = join(dir, 'softhsm2.conf')
  writeFileSync(conf, `directories.tokendir = ${tokenDir}\nobjectstore.backend = file\nlog.level = ERROR\n`)
  process.env.SOFTHSM2_CONF = conf
  // The server signs on worker threads, which inherit this process's node arguments: tap's TypeScript
  // import among them, which loads ts-node (a third of a second of CPU per worker) although the test loader
  // (test/loader/) serves them compiled code. tap reads this variable in each new thread to skip it.
  const stripOnly = process.env.TAP_TYPE_STRIP_ONLY
  process.env.TAP_TYPE_STRIP_ONLY = '1'
  t.teardown(() => {
    delete process.env.SOFTHSM2_CONF
    if (stripOnly === undefined) delete process.env.TAP_TYPE_STRIP_ONLY
    else process.env.TAP_TYPE_STRIP_ONLY = stripOnly
  })
  execFileSync('softhsm2-util', ['--init-token', '--free', '--label', TOKEN_LABEL, '--pin', USER_PIN, '--so-pin', '13579111'], { stdio: 'ignore' })
  const pinFile = join(dir, 'pin')
  writeFileSync(pinFile, `${USER_PIN}\n`, { mode: 0o600 })
  return {
    tokenDir,
    env: { AUTHZ_PKCS11_MODULE: SOFTHSM_MODULE, AUTHZ_PKCS11_TOKEN: TOKEN_LABEL, AUTHZ_PKCS11_PIN_FILE: pinFile },
  }
}
