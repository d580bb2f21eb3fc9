/**
 * The SDK's HTTP client and peer helper (main's commit 676e1d6, pinned here): the deadline bounds the
 * whole exchange, not idle time; a peer certificate Node reports as {} is none.
 */
import { createServer, type ServerResponse } from 'node:http'
import t from 'tap'
import { peerThumbprintOf, thumbprintOf } from '../../packages/sdk/src/certificate.js'
import { httpRequestText } from '../../packages/sdk/src/http.js'
import { testPki } from '../helpers/pki.js'

t.test('a server that trickles a byte now and then cannot hold a request past its deadline (regression)', async (t) => {
  const trickling = new Set<NodeJS.Timeout>()
  const server = createServer((_req, res: ServerResponse) => {
    res.writeHead(200, { 'content-type': 'application/json' })
    // A byte every 50 ms for at most 30 s: never idle long enough for an idle timeout to fire.
    let sent = 0
    const timer = setInterval(() => {
      if (++sent > 600 || res.destroyed) {
        clearInterval(timer)
        res.end()
        return
      }
      res.write(' ')
    }, 50)
    trickling.add(timer)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => {
    for (const timer of trickling) clearInterval(timer)
    server.closeAllConnections()
    server.close()
  })
  const { port } = server.address() as { port: number }
  const started = Date.now()
  const outcome = await httpRequestText(new URL(`http://127.0.0.1:${port}/`), { timeoutMs: 500 }).then(
    () => 'answered',
    (err: NodeJS.ErrnoException) => err.code,
  )
  t.equal(outcome, 'ETIMEDOUT', 'refused at the deadline (before: an idle timeout, reset by every byte, let it run 30 s)')
  t.ok(Date.now() - started < 10_000, 'well before the trickle ends')
})

t.test('peerThumbprintOf: what Node reports for "no certificate" is none', async (t) => {
  const cert = testPki().client('order-service').certPem
  for (const [name, input] of [
    ['undefined', undefined],
    ['null', null],
    ['{} (Node, when the peer sent none)', {}],
  ] as const) {
    t.equal(peerThumbprintOf(input as never), undefined, name)
  }
  t.equal(peerThumbprintOf(cert), thumbprintOf(cert), 'a certificate: its thumbprint')
})
