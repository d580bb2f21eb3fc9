/**
 * `keys prune` and `keys revoke` run on a machine whose clock is not the servers': they must never leave
 * the servers without the key they sign with. The servers here run on the real clock; the CLI's clock is
 * an hour ahead (or behind), as on an operator's laptop with a wrong clock.
 */
import { decodeProtectedHeader } from 'jose'
import t, { type Test } from 'tap'
import { runKeysCli } from '../../src/cli/keys.js'
import { ManualClock } from '../../src/clock.js'
import { readManifest } from '../../src/keys/manifest.js'
import { httpsCall } from '../helpers/http.js'
import { install, startInstalled } from '../helpers/install.js'
import { pooledKey } from '../helpers/material.js'
import { testPki } from '../helpers/pki.js'

const HOUR = 3_600_000

/** A running server on the real clock with keys A (active) and B (next, activates in 20 min). */
async function servers(t: Test) {
  const pki = testPki()
  // A was made a minute ago: the servers' Date header has a resolution of one second, and a key activated
  // within the current second would still be "next" by it.
  const { env } = await install(t, { clock: new ManualClock(Date.now() - 60_000) })
  const cli = async (clock: ManualClock, ...argv: string[]) => {
    const out: string[] = []
    const err: string[] = []
    const code = await runKeysCli(argv, env, { out: (l) => out.push(l), err: (l) => err.push(l) }, clock, pooledKey)
    return { code, out: out.join('\n'), err: err.join('\n') }
  }
  t.equal((await cli(new ManualClock(Date.now()), 'rotate')).code, 0, 'B published, signs in 20 min')
  const [a, b] = (await readManifest(env.AUTHZ_KEYS_DIR)).keys
  const { server, port, opsPort } = await startInstalled(t, env, { pollMs: 3_600_000 })
  const signer = async (): Promise<string | number> => {
    await server.reload()
    const res = await httpsCall(port, { method: 'POST', path: '/token', ca: pki.ca.certPem, client: pki.client('order-service'), headers: { 'content-type': 'application/json' }, body: '{"audience":"inventory-service"}' })
    return res.status === 200 ? (decodeProtectedHeader(res.json<{ access_token: string }>().access_token).kid as string) : res.status
  }
  t.equal(await signer(), a?.kid, 'A signs')
  return { env, cli, a: a?.kid as string, b: b?.kid as string, signer, jwks: `http://127.0.0.1:${opsPort}/.well-known/jwks.json` }
}

t.test('prune with a clock an hour ahead keeps the key the servers sign with (regression: it deleted it)', async (t) => {
  const { env, cli, a, signer, jwks } = await servers(t)
  const ahead = new ManualClock(Date.now() + HOUR) // by this clock A retired 40 min ago and expired 15 min ago
  const plain = await cli(ahead, 'prune')
  t.equal(plain.code, 0)
  t.match(plain.out, /^judged by this machine's clock/m)
  t.match(plain.out, new RegExp(`^kept ${a}: expired less than 1d ago by this machine's clock`, 'm'))
  const against = await cli(ahead, 'prune', '--against', jwks)
  t.equal(against.code, 0, against.err)
  t.match(against.out, /^judged by the servers' clock \(.*\): (59m\d+s|1h(\d+s)?) behind this machine's$/m, 'the servers’ Date header rules')
  t.match(against.out, /^nothing to prune$/m)
  t.ok((await readManifest(env.AUTHZ_KEYS_DIR)).keys.some((k) => k.kid === a), 'A is still in the manifest')
  t.equal(await signer(), a, 'and the servers still sign with it (before the fix: 503, no active key)')
})

t.test('revoke with a clock an hour ahead: the next key takes the revoked key’s place at once on the servers (regression: no key for 20 min)', async (t) => {
  const { cli, a, b, signer, jwks } = await servers(t)
  const ahead = new ManualClock(Date.now() + HOUR) // by this clock A is retired and B active
  const revoked = await cli(ahead, 'revoke', a)
  t.equal(revoked.code, 0, revoked.err)
  t.equal(await signer(), b, 'B signs now on the servers (before the fix: 503 until B’s activation)')
  const again = await cli(ahead, 'revoke', b, '--against', jwks)
  t.equal(again.code, 0, again.err)
  t.match(again.out, /^judged by the servers' clock/m)
  t.match(again.out, new RegExp(`^${b} was the active key: \\S+ \\(new\\) signs from now on$`, 'm'), 'judged by the servers: B was active')
  const signing = await signer()
  t.ok(typeof signing === 'string' && signing !== a && signing !== b, 'its new replacement signs at once')
})

t.test('a clock behind the directory’s own timeline is refused by prune and revoke; --against judges by the servers instead', async (t) => {
  const { env, cli, a, signer, jwks } = await servers(t)
  const behind = new ManualClock(Date.now() - HOUR) // the directory recorded keys made an hour "in the future"
  const before = await readManifest(env.AUTHZ_KEYS_DIR)
  for (const argv of [['prune'], ['revoke', a]]) {
    const res = await cli(behind, ...argv)
    t.equal(res.code, 1, `${argv[0]}: refused`)
    t.match(res.err, /this machine's clock \(.*\) is (59m\d+s|1h(\d+s)?) behind the keys directory's own timeline .*pass --against/)
  }
  t.same(await readManifest(env.AUTHZ_KEYS_DIR), before, 'nothing changed')
  const against = await cli(behind, 'prune', '--against', jwks)
  t.equal(against.code, 0, against.err)
  t.match(against.out, /: (59m\d+s|1h(\d+s)?) ahead of this machine's$/m)
  t.equal(await signer(), a)
})

t.test('--against: usage and a live side that cannot be read', async (t) => {
  const { cli } = await servers(t)
  const now = new ManualClock(Date.now())
  t.equal((await cli(now, 'prune', '--against', 'ftp://x')).code, 2, 'not http(s): usage')
  t.equal((await cli(now, 'prune', '--ca', '/nowhere')).code, 2, '--ca without --against: usage')
  const down = await cli(now, 'prune', '--against', 'http://127.0.0.1:9/jwks.json')
  t.equal(down.code, 1)
  t.match(down.err, /cannot fetch http:\/\/127\.0\.0\.1:9\/jwks\.json/)
})
