// The raw limit of a PKCS#11 token: signatures per second through pkcs11js, in a process of its own, as the
// server's PKCS#11 worker makes them (C_SignInit + C_SignAsync on libuv's pool, one session per signature
// in flight; ES256 hashes the input with SHA-256 first and signs the digest with CKM_ECDSA, RS256 signs
// the input with CKM_SHA256_RSA_PKCS). Nothing else: no HTTP, no JWS encoding, no message passing.
//   node bench/hsm-sign-rate.mjs '<json options>'
//     { module, token, pinFile, key (the key pair's label), alg: 'RS256'|'ES256', seconds = 3,
//       sessions = available cores, locking = true }
// The module is initialized with CKF_OS_LOCKING_OK: signatures run on several threads at once. With
// `locking: false` it is initialized as the server's PKCS#11 worker was before it was fixed (C_Initialize(NULL):
// the application promises single-threaded use, and SoftHSM2 turns its mutexes off) — with 2 or more
// sessions that process crashes (SIGSEGV or a heap-corruption abort) within a second.
// SOFTHSM2_CONF must be in the environment for SoftHSM2. Prints one JSON line: { rps, cpuUsPerSign, sessions }.
import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { availableParallelism } from 'node:os'
import pkcs11js from 'pkcs11js'

const opts = JSON.parse(process.argv[2])
const seconds = opts.seconds ?? 3
const sessionCount = opts.sessions ?? availableParallelism()
const p11 = new pkcs11js.PKCS11()
p11.load(opts.module)
p11.C_Initialize(opts.locking === false ? undefined : { flags: pkcs11js.CKF_OS_LOCKING_OK })
try {
  const slot = p11.C_GetSlotList(true).find((s) => p11.C_GetTokenInfo(s).label.trim() === opts.token)
  if (slot === undefined) throw new Error(`no token ${opts.token}`)
  const sessions = Array.from({ length: sessionCount }, () => p11.C_OpenSession(slot, pkcs11js.CKF_SERIAL_SESSION | pkcs11js.CKF_RW_SESSION))
  p11.C_Login(sessions[0], pkcs11js.CKU_USER, readFileSync(opts.pinFile, 'utf8').replace(/\r?\n$/, ''))
  p11.C_FindObjectsInit(sessions[0], [
    { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PRIVATE_KEY },
    { type: pkcs11js.CKA_LABEL, value: opts.key },
  ])
  const [key] = p11.C_FindObjects(sessions[0], 1)
  p11.C_FindObjectsFinal(sessions[0])
  if (key === undefined) throw new Error(`no private key ${opts.key}`)

  // A realistic signing input: header.payload of an authz token.
  const input = Buffer.from(`${Buffer.from(JSON.stringify({ alg: opts.alg, typ: 'at+jwt', kid: 'x'.repeat(43) })).toString('base64url')}.${'e'.repeat(420)}`)
  const signOnce = (session) => {
    if (opts.alg === 'ES256') {
      p11.C_SignInit(session, { mechanism: pkcs11js.CKM_ECDSA }, key)
      return p11.C_SignAsync(session, createHash('sha256').update(input).digest(), Buffer.alloc(64))
    }
    p11.C_SignInit(session, { mechanism: pkcs11js.CKM_SHA256_RSA_PKCS }, key)
    return p11.C_SignAsync(session, input, Buffer.alloc(1024))
  }
  for (let i = 0; i < 20; i++) await signOnce(sessions[0])

  let n = 0
  const cpu0 = process.cpuUsage()
  const t0 = performance.now()
  const deadline = t0 + seconds * 1000
  await Promise.all(
    sessions.map(async (session) => {
      while (performance.now() < deadline) {
        await signOnce(session)
        n++
      }
    }),
  )
  const wall = (performance.now() - t0) / 1000
  const cpu = process.cpuUsage(cpu0)
  process.stdout.write(`${JSON.stringify({ rps: n / wall, cpuUsPerSign: (cpu.user + cpu.system) / n, sessions: sessionCount })}\n`)
} finally {
  p11.C_Finalize()
}
