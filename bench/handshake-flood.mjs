// A stranger at the door, as its own process (its sockets and its loop are not the server's): silent TCP
// sockets re-opened as they close, and one captured ClientHello replayed over many sockets, each from a
// source address of its own (127.0.0.x: every loopback address reaches the server). Bounded by `seconds`
// and by `maxOpens`. Prints one JSON line when the silent sockets are open ("ready"), and one with its
// tallies when it ends.
// Usage: node bench/handshake-flood.mjs '<json options>'
//   { port, seconds, silent?: { source, sockets, maxOpens }, replay?: { source, sockets, hello: <base64> } }
import { connect } from 'node:net'

const opts = JSON.parse(process.argv[2])
const deadline = performance.now() + opts.seconds * 1000
const tally = { silentOpened: 0, silentClosed: 0, replays: 0, replayAnswered: 0, replayRefused: 0 }
let stopping = false

function silent({ source, sockets, maxOpens }) {
  let open = 0
  let ready = false
  return new Promise((resolve) => {
    const one = () => {
      if (stopping || tally.silentOpened >= maxOpens) {
        if (open === 0) resolve()
        return
      }
      tally.silentOpened++
      open++
      const socket = connect({ host: '127.0.0.1', port: opts.port, localAddress: source })
      socket.on('error', () => undefined)
      socket.once('connect', () => {
        if (!ready && tally.silentOpened >= sockets) {
          ready = true
          process.stdout.write(`${JSON.stringify({ ready: true })}\n`)
        }
      })
      socket.once('close', () => {
        open--
        tally.silentClosed++
        // Re-opened as it closes, at most one new socket per closed one.
        setImmediate(one)
      })
    }
    for (let i = 0; i < sockets; i++) one()
  })
}

function replay({ source, sockets, hello }) {
  const bytes = Buffer.from(hello, 'base64')
  const loop = async () => {
    while (!stopping && performance.now() < deadline) {
      await new Promise((resolve) => {
        const socket = connect({ host: '127.0.0.1', port: opts.port, localAddress: source }, () => {
          tally.replays++
          socket.write(bytes)
        })
        socket.on('error', () => undefined)
        socket.once('data', () => {
          // The server did its part of the handshake (ServerHello, certificate, signature): go away.
          tally.replayAnswered++
          socket.destroy()
        })
        socket.once('close', () => {
          if (socket.bytesRead === 0) tally.replayRefused++
          resolve()
        })
      })
    }
  }
  return Promise.all(Array.from({ length: sockets }, loop))
}

// Until the time is up or SIGTERM, whichever comes first.
const over = new Promise((resolve) => {
  setTimeout(resolve, opts.seconds * 1000)
  process.on('SIGTERM', resolve)
}).then(() => (stopping = true))
const silentDone = opts.silent === undefined ? Promise.resolve() : silent(opts.silent)
if (opts.silent === undefined) process.stdout.write(`${JSON.stringify({ ready: true })}\n`)
await Promise.all([over, opts.replay === undefined ? over : replay(opts.replay)])
// Silent sockets still open are closed now: the attack is over.
process.stdout.write(`${JSON.stringify(tally)}\n`)
await Promise.race([silentDone, new Promise((resolve) => setTimeout(resolve, 100))])
process.exit(0)
