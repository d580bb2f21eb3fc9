// The raw limit of a file key: RS256 (RSASSA-PKCS1-v1_5 + SHA-256, RSA-2048) or ES256 (ECDSA P-256 +
// SHA-256, r || s as JWS wants it) signatures per second on all cores with node:crypto, one worker thread
// per core, each signing a token-sized payload synchronously.
//   node bench/sign-rate.mjs [seconds=3] [threads=cores] [alg=RS256]
// Prints one JSON line: { rps, cpuUsPerSign, threads, alg }. cpuUsPerSign is the process's CPU (every
// thread) between the start and the end of the timed loops, over the signatures made.
import { generateKeyPairSync, sign } from 'node:crypto'
import { availableParallelism } from 'node:os'
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads'

if (isMainThread) {
  const seconds = Number(process.argv[2] ?? 3)
  const threads = Number(process.argv[3] ?? availableParallelism())
  const alg = process.argv[4] ?? 'RS256'
  if (alg !== 'RS256' && alg !== 'ES256') throw new Error(`alg is RS256 or ES256, not ${alg}`)
  const { privateKey } = alg === 'ES256' ? generateKeyPairSync('ec', { namedCurve: 'P-256' }) : generateKeyPairSync('rsa', { modulusLength: 2048 })
  const pem = privateKey.export({ type: 'pkcs8', format: 'pem' })
  const workers = Array.from({ length: threads }, () => new Worker(new URL(import.meta.url), { workerData: { pem, alg } }))
  const next = (w) =>
    new Promise((resolve, reject) => {
      w.once('message', resolve)
      w.once('error', reject)
    })
  // Every thread warmed up and waiting: then time the loops, all together, over the same window.
  await Promise.all(workers.map(next))
  const cpu0 = process.cpuUsage()
  const done = workers.map(next)
  const deadline = Date.now() + seconds * 1000
  for (const w of workers) w.postMessage(deadline)
  const counts = await Promise.all(done)
  const cpu = process.cpuUsage(cpu0)
  await Promise.all(workers.map((w) => w.terminate()))
  const total = counts.reduce((a, b) => a + b, 0)
  process.stdout.write(`${JSON.stringify({ rps: total / seconds, cpuUsPerSign: (cpu.user + cpu.system) / total, threads, alg })}\n`)
} else {
  const { pem, alg } = workerData
  const { createPrivateKey } = await import('node:crypto')
  const key = alg === 'ES256' ? { key: createPrivateKey(pem), dsaEncoding: 'ieee-p1363' } : createPrivateKey(pem)
  // A realistic signing input: header.payload of an authz token.
  const input = Buffer.from(`${Buffer.from(JSON.stringify({ alg, typ: 'at+jwt', kid: 'x'.repeat(43) })).toString('base64url')}.${'e'.repeat(420)}`)
  for (let i = 0; i < 50; i++) sign('sha256', input, key)
  parentPort.once('message', (deadline) => {
    let n = 0
    while (Date.now() < deadline) {
      sign('sha256', input, key)
      n++
    }
    parentPort.postMessage(n)
  })
  parentPort.postMessage('ready')
}
