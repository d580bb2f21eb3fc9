/**
 * Run as its own process: makes a P-256 key pair under `label` in the token — another key than the one
 * authz knows by that label (a token replaced, or tampered with).
 * Usage: p11-impostor.ts <module> <token label> <pin> <object label>
 */
import pkcs11js from 'pkcs11js'
import { withTokenSession } from './p11-session.js'

const [module, tokenLabel, pin, label] = process.argv.slice(2) as [string, string, string, string]
withTokenSession(module, tokenLabel, pin, (p11, session) => {
  const common = [
    { type: pkcs11js.CKA_TOKEN, value: true },
    { type: pkcs11js.CKA_LABEL, value: label },
  ]
  p11.C_GenerateKeyPair(
    session,
    { mechanism: pkcs11js.CKM_EC_KEY_PAIR_GEN },
    [...common, { type: pkcs11js.CKA_VERIFY, value: true }, { type: pkcs11js.CKA_EC_PARAMS, value: Buffer.from('06082a8648ce3d030107', 'hex') }],
    [...common, { type: pkcs11js.CKA_SIGN, value: true }, { type: pkcs11js.CKA_PRIVATE, value: true }, { type: pkcs11js.CKA_SENSITIVE, value: true }],
  )
})
