/**
 * Run as its own process (a PKCS#11 module is initialized once per process): prints what the token holds
 * under a label, as JSON: how many objects, and whether the private key is extractable and sensitive.
 * Usage: p11-inspect.ts <module> <token label> <pin> <object label>
 */
import pkcs11js from 'pkcs11js'
import { withTokenSession } from './p11-session.js'

const [module, tokenLabel, pin, label] = process.argv.slice(2) as [string, string, string, string]
withTokenSession(module, tokenLabel, pin, (p11, session) => {
  const find = (template: pkcs11js.Template): Buffer[] => {
    p11.C_FindObjectsInit(session, template)
    const found = p11.C_FindObjects(session, 10)
    p11.C_FindObjectsFinal(session)
    return found
  }
  const all = find([{ type: pkcs11js.CKA_LABEL, value: label }])
  const [privateKey] = find([
    { type: pkcs11js.CKA_LABEL, value: label },
    { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PRIVATE_KEY },
  ])
  const report: { count: number; extractable?: boolean; sensitive?: boolean } = { count: all.length }
  if (privateKey !== undefined) {
    const [extractable, sensitive] = p11.C_GetAttributeValue(session, privateKey, [{ type: pkcs11js.CKA_EXTRACTABLE }, { type: pkcs11js.CKA_SENSITIVE }])
    report.extractable = (extractable?.value as Buffer)[0] === 1
    report.sensitive = (sensitive?.value as Buffer)[0] === 1
  }
  process.stdout.write(JSON.stringify(report))
})
