/**
 * A logged-in session on a PKCS#11 token, for the test scripts that look into the token from a process of
 * their own (a module is initialized once per process). Finalizes the module after `fn`.
 */
import pkcs11js from 'pkcs11js'

export function withTokenSession<T>(module: string, tokenLabel: string, pin: string, fn: (p11: pkcs11js.PKCS11, session: Buffer) => T): T {
  const p11 = new pkcs11js.PKCS11()
  p11.load(module)
  p11.C_Initialize()
  try {
    const slot = p11.C_GetSlotList(true).find((s) => p11.C_GetTokenInfo(s).label.trim() === tokenLabel)
    if (slot === undefined) throw new Error(`no token ${tokenLabel}`)
    const session = p11.C_OpenSession(slot, pkcs11js.CKF_SERIAL_SESSION | pkcs11js.CKF_RW_SESSION)
    p11.C_Login(session, pkcs11js.CKU_USER, pin)
    return fn(p11, session)
  } finally {
    p11.C_Finalize()
  }
}
