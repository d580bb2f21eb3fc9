/**
 * The PKCS#11 module's own thread: it loads the library, logs in to the token and holds a pool of
 * sessions, so no call into the module ever runs on the server's event loop (a network HSM may take
 * milliseconds per call). The main thread talks to it with messages (see token.ts). Private keys are
 * generated inside the token as non-extractable, sensitive objects; only public members and signatures
 * ever leave it.
 */
import { createHash } from 'node:crypto'
import { parentPort, workerData } from 'node:worker_threads'
import { calculateJwkThumbprint, type JWK } from 'jose'
import type * as Pkcs11js from 'pkcs11js'
import type { Pkcs11Reply, Pkcs11Request, Pkcs11WorkerData } from './protocol.js'

const data = workerData as Pkcs11WorkerData
const port = parentPort as NonNullable<typeof parentPort>

/** DER of the P-256 curve OID (1.2.840.10045.3.1.7): the EC parameters of an ES256 key. */
const P256_OID = Buffer.from('06082a8648ce3d030107', 'hex')

/** A CK_ULONG as the module returns it (native-endian, 8 bytes on 64-bit platforms). */
const ulong = (value: Buffer): number => Number(value.length === 8 ? value.readBigUInt64LE(0) : value.readUIntLE(0, value.length))

let pk: typeof Pkcs11js
let p11: Pkcs11js.PKCS11
const idle: Buffer[] = []
const waiting: ((session: Buffer) => void)[] = []
const handles = new Map<string, Buffer>()

function fail(variable: string, err: unknown): never {
  port.postMessage({ type: 'failed', variable, message: (err as Error).message } satisfies Pkcs11Reply)
  process.exit(0)
}

async function open(): Promise<void> {
  try {
    pk = (await import('pkcs11js')).default
  } catch (err) {
    fail('AUTHZ_PKCS11_MODULE', new Error(`the pkcs11js package is not installed (${(err as Error).message})`))
  }
  p11 = new pk.PKCS11()
  let sessions = data.sessions
  try {
    p11.load(data.module)
    try {
      sessions = initialize(sessions)
    } catch (err) {
      // A module is initialized once per process: a previous worker that was stopped without finalizing
      // (it hung, or it was killed) left it so. Start it afresh.
      if (!/CKR_CRYPTOKI_ALREADY_INITIALIZED/.test((err as Error).message)) throw err
      p11.C_Finalize()
      sessions = initialize(sessions)
    }
  } catch (err) {
    fail('AUTHZ_PKCS11_MODULE', err)
  }
  let slot: Buffer | undefined
  try {
    const slots = p11.C_GetSlotList(true)
    slot =
      data.token.slot !== undefined
        ? slots.find((s) => ulong(s) === data.token.slot)
        : slots.find((s) => p11.C_GetTokenInfo(s).label.trim() === data.token.label)
  } catch (err) {
    fail('AUTHZ_PKCS11_TOKEN', err)
  }
  if (slot === undefined) fail('AUTHZ_PKCS11_TOKEN', new Error(`no token ${data.token.label ?? `in slot ${data.token.slot}`}`))
  try {
    for (let i = 0; i < sessions; i++) idle.push(p11.C_OpenSession(slot, pk.CKF_SERIAL_SESSION | pk.CKF_RW_SESSION))
    // One login serves every session of this application with the token.
    p11.C_Login(idle[0] as Buffer, pk.CKU_USER, data.pin)
  } catch (err) {
    fail(data.pinVariable, new Error(`cannot log in to the token: ${(err as Error).message}`))
  }
  port.postMessage({ type: 'ready' } satisfies Pkcs11Reply)
}

/**
 * Initializes the module for use from several threads at once (signatures run on the thread pool, one per
 * session): CKF_OS_LOCKING_OK. Without it a module may assume one thread and skip its own locks (SoftHSM2
 * does, and crashes). A module that cannot lock (CKR_CANT_LOCK) gets one session: one call at a time.
 * Returns how many sessions to open.
 */
function initialize(sessions: number): number {
  try {
    p11.C_Initialize({ flags: pk.CKF_OS_LOCKING_OK })
    return sessions
  } catch (err) {
    if (!/CKR_CANT_LOCK/.test((err as Error).message)) throw err
    p11.C_Initialize()
    return 1
  }
}

async function withSession<T>(fn: (session: Buffer) => Promise<T> | T): Promise<T> {
  const session = idle.pop() ?? (await new Promise<Buffer>((resolve) => waiting.push(resolve)))
  try {
    return await fn(session)
  } finally {
    const next = waiting.shift()
    if (next !== undefined) next(session)
    else idle.push(session)
  }
}

function find(session: Buffer, cls: number, label: string): Buffer | undefined {
  p11.C_FindObjectsInit(session, [
    { type: pk.CKA_CLASS, value: cls },
    { type: pk.CKA_LABEL, value: label },
  ])
  try {
    return p11.C_FindObjects(session, 1)[0]
  } finally {
    p11.C_FindObjectsFinal(session)
  }
}

function privateKey(session: Buffer, label: string): Buffer {
  let handle = handles.get(label)
  if (handle === undefined) {
    handle = find(session, pk.CKO_PRIVATE_KEY, label)
    if (handle === undefined) throw Object.assign(new Error(`no private key ${label} in the token`), { code: 'KEY_NOT_FOUND' })
    handles.set(label, handle)
  }
  return handle
}

/** The public members of the key pair `label` as a JWK (RSA: n, e; EC P-256: crv, x, y). */
function publicMembers(session: Buffer, label: string): JWK {
  const handle = find(session, pk.CKO_PUBLIC_KEY, label)
  if (handle === undefined) throw Object.assign(new Error(`no public key ${label} in the token`), { code: 'KEY_NOT_FOUND' })
  const [type] = p11.C_GetAttributeValue(session, handle, [{ type: pk.CKA_KEY_TYPE }])
  if (ulong(type?.value as Buffer) === pk.CKK_RSA) {
    const [n, e] = p11.C_GetAttributeValue(session, handle, [{ type: pk.CKA_MODULUS }, { type: pk.CKA_PUBLIC_EXPONENT }])
    return { kty: 'RSA', n: (n?.value as Buffer).toString('base64url'), e: (e?.value as Buffer).toString('base64url') }
  }
  const [point] = p11.C_GetAttributeValue(session, handle, [{ type: pk.CKA_EC_POINT }])
  // CKA_EC_POINT is a DER OCTET STRING around the uncompressed point 04 || x || y.
  const raw = (point?.value as Buffer).subarray(-65)
  if (raw[0] !== 0x04) throw new Error(`public key ${label}: not an uncompressed P-256 point`)
  return { kty: 'EC', crv: 'P-256', x: raw.subarray(1, 33).toString('base64url'), y: raw.subarray(33).toString('base64url') }
}

async function sign(label: string, alg: string, input: Buffer): Promise<Buffer> {
  return withSession(async (session) => {
    const attempt = async (): Promise<Buffer> => {
      const key = privateKey(session, label)
      if (alg === 'ES256') {
        p11.C_SignInit(session, { mechanism: pk.CKM_ECDSA }, key)
        return p11.C_SignAsync(session, createHash('sha256').update(input).digest(), Buffer.alloc(64))
      }
      p11.C_SignInit(session, { mechanism: pk.CKM_SHA256_RSA_PKCS }, key)
      return p11.C_SignAsync(session, input, Buffer.alloc(1024))
    }
    try {
      return await attempt()
    } catch (err) {
      // A handle the token no longer knows (the token was reloaded): find the key again, once.
      if (!/CKR_OBJECT_HANDLE_INVALID|CKR_KEY_HANDLE_INVALID/.test((err as Error).message)) throw err
      handles.delete(label)
      return attempt()
    }
  })
}

async function generate(alg: string, prefix: string): Promise<{ kid: string; label: string }> {
  return withSession(async (session) => {
    const common = [
      { type: pk.CKA_TOKEN, value: true },
      { type: pk.CKA_LABEL, value: `${prefix}pending` },
    ]
    const pair =
      alg === 'ES256'
        ? p11.C_GenerateKeyPair(session, { mechanism: pk.CKM_EC_KEY_PAIR_GEN }, [...common, { type: pk.CKA_VERIFY, value: true }, { type: pk.CKA_EC_PARAMS, value: P256_OID }], privateTemplate(common))
        : p11.C_GenerateKeyPair(
            session,
            { mechanism: pk.CKM_RSA_PKCS_KEY_PAIR_GEN },
            [...common, { type: pk.CKA_VERIFY, value: true }, { type: pk.CKA_MODULUS_BITS, value: 2048 }, { type: pk.CKA_PUBLIC_EXPONENT, value: Buffer.from([1, 0, 1]) }],
            privateTemplate(common),
          )
    // The kid is the RFC 7638 thumbprint of the public key: known only now; it names both objects.
    const members = membersOf(session, pair.publicKey, alg)
    const kid = await calculateJwkThumbprint(members, 'sha256')
    const label = `${prefix}${kid}`
    for (const handle of [pair.publicKey, pair.privateKey]) {
      p11.C_SetAttributeValue(session, handle, [
        { type: pk.CKA_LABEL, value: label },
        { type: pk.CKA_ID, value: Buffer.from(kid) },
      ])
    }
    return { kid, label }
  })
}

function privateTemplate(common: Pkcs11js.Template): Pkcs11js.Template {
  return [
    ...common,
    { type: pk.CKA_SIGN, value: true },
    { type: pk.CKA_PRIVATE, value: true },
    // Never leaves the token: not in clear (sensitive), not wrapped (not extractable).
    { type: pk.CKA_SENSITIVE, value: true },
    { type: pk.CKA_EXTRACTABLE, value: false },
  ]
}

function membersOf(session: Buffer, publicKey: Buffer, alg: string): JWK {
  if (alg === 'ES256') {
    const [point] = p11.C_GetAttributeValue(session, publicKey, [{ type: pk.CKA_EC_POINT }])
    const raw = (point?.value as Buffer).subarray(-65)
    return { kty: 'EC', crv: 'P-256', x: raw.subarray(1, 33).toString('base64url'), y: raw.subarray(33).toString('base64url') }
  }
  const [n, e] = p11.C_GetAttributeValue(session, publicKey, [{ type: pk.CKA_MODULUS }, { type: pk.CKA_PUBLIC_EXPONENT }])
  return { kty: 'RSA', n: (n?.value as Buffer).toString('base64url'), e: (e?.value as Buffer).toString('base64url') }
}

async function destroy(label: string): Promise<void> {
  await withSession((session) => {
    for (const cls of [pk.CKO_PRIVATE_KEY, pk.CKO_PUBLIC_KEY]) {
      const handle = find(session, cls, label)
      if (handle !== undefined) p11.C_DestroyObject(session, handle)
    }
    handles.delete(label)
  })
}

async function handle(request: Pkcs11Request): Promise<unknown> {
  switch (request.op) {
    case 'sign':
      return sign(request.label, request.alg, Buffer.from(request.input))
    case 'public':
      return withSession((session) => publicMembers(session, request.label))
    case 'generate':
      return generate(request.alg, request.prefix)
    case 'destroy':
      return destroy(request.label)
    case 'close':
      // Finalize so the next worker of this process initializes a clean module.
      p11.C_Finalize()
      return undefined
  }
}

port.on('message', (request: Pkcs11Request) => {
  handle(request).then(
    (result) => port.postMessage({ type: 'result', id: request.id, result } satisfies Pkcs11Reply),
    (err: unknown) =>
      port.postMessage({
        type: 'result',
        id: request.id,
        error: { message: (err as Error).message, code: String((err as { code?: unknown }).code ?? '') },
      } satisfies Pkcs11Reply),
  )
})

await open()
