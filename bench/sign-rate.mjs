// The raw limit: RS256 (RSASSA-PKCS1-v1_5 + SHA-256, RSA-2048) signatures per second on all cores with
// node:crypto, one worker thread per core, each signing a token-sized payload synchronously.
import { generateKeyPairSync, sign } from 'node:crypto'
import { availableParallelism } from 'node:os'
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads'

if (isMainThread) {
  const seconds = Number(process.argv[2] ?? 3)
  const threads = Number(process.argv[3] ?? availableParallelism())
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 })
  const pem = privateKey.export({ type: 'pkcs8', format: 'pem' })
  const counts = await Promise.all(
    Array.from(
      { length: threads },
      () =>
        new Promise((resolve, reject) => {
          const w = new Worker(new URL(import.meta.url), { workerData: { pem, seconds } })
          w.once('message', resolve)
          w.once('error', reject)
        }),
    ),
  )
  const total = counts.reduce((a, b) => a + b, 0)
  process.stdout.write(`${JSON.stringify({ rps: total / seconds, threads })}\n`)
} else {
  const { pem, seconds } = workerData
  // A realistic signing input: header.payload of an authz token.
  const input = Buffer.from('eyJhbGciOiJSUzI1NiIsInR5cCI6ImF0K2p3dCIsImtpZCI6IngifQ.' + 'e'.repeat(420))
  for (let i = 0; i < 50; i++) sign('sha256', input, pem)
  const { createPrivateKey } = await import('node:crypto')
  const key = createPrivateKey(pem)
  let n = 0
  const deadline = performance.now() + seconds * 1000
  while (performance.now() < deadline) {
    sign('sha256', input, key)
    n++
  }
  parentPort.postMessage(n)
}
