/**
 * Cost by input shape: the worst body of each content type at the size limit must cost the server about
 * what a normal token request costs, or one caller inside its rate limit stalls every other caller.
 * Measured in the same run on one keep-alive connection, as medians, and compared as a ratio.
 */
import t from 'tap'
import { startHarness } from '../helpers/harness.js'
import { openTlsConnection } from '../helpers/http.js'

const LIMIT = 8 * 1024
const ROUNDS = 25

function fill(prefix: string, unit: (i: number) => string, suffix: string, limit = LIMIT): string {
  let body = prefix
  for (let i = 0; ; i++) {
    const next = unit(i)
    if (body.length + next.length + suffix.length > limit) break
    body += next
  }
  return body + suffix
}

const JSON_BODIES: Record<string, string> = {
  'nested arrays': `${'['.repeat(4000)}${']'.repeat(4000)}`,
  'many keys': fill('{"a":0', (i) => `,"k${i}":0`, '}'),
  // A key given twice is refused like a repeated form parameter, after one linear scan.
  'a repeated key': fill('{"audience":"inventory-service"', () => ',"audience":"inventory-service"', '}'),
  'many distinct scopes': fill('{"audience":"inventory-service","scope":"s', (i) => ` s${i}`, '"}', 4096 + 45),
  'scope array at its limit': `{"audience":"inventory-service","scope":[${Array.from({ length: 60 }, (_, i) => `"${String(i).padEnd(120, 'x')}"`).join(',')}]}`,
}

const FORM_BODIES: Record<string, string> = {
  'a&a&a…': fill('a', () => '&a', ''),
  'a repeated parameter': fill('scope=x', () => '&scope=x', ''),
  'many distinct parameters': fill('a=', (i) => `&p${i}=`, ''),
  'percent-encoding': fill('audience=', () => '%41', ''),
  'many distinct scopes': fill('audience=inventory-service&scope=s', (i) => `+s${i}`, '', 4096 + 27),
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number

t.test('the worst body of each content type costs at most a small multiple of a normal request', async (t) => {
  const h = await startHarness(t, { env: { AUTHZ_RATE_LIMIT: '0' } })
  const conn = await openTlsConnection(h.port, { ca: h.pki.ca.certPem, client: h.pki.client('order-service') })
  t.teardown(() => conn.end())
  const request = (type: string, body: string): string =>
    `POST /token HTTP/1.1\r\nHost: localhost\r\nContent-Type: ${type}\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`
  const timed = async (raw: string, expected: number): Promise<number> => {
    const started = process.hrtime.bigint()
    const res = await conn.send(raw)
    if (res.status !== expected) throw new Error(`status ${res.status}, expected ${expected}: ${res.body}`)
    return Number(process.hrtime.bigint() - started) / 1e6
  }
  const cost = async (raw: string, expected: number): Promise<number> => {
    const times: number[] = []
    for (let i = 0; i < ROUNDS; i++) times.push(await timed(raw, expected))
    return median(times)
  }
  /** Worst and normal requests interleaved, so a busy machine slows both alike; the ratio of medians. */
  const compare = async (worst: string, normal: string): Promise<{ worst: number; normal: number }> => {
    const w: number[] = []
    const n: number[] = []
    for (let i = 0; i < ROUNDS; i++) {
      w.push(await timed(worst, 400))
      n.push(await timed(normal, 200))
    }
    return { worst: median(w), normal: median(n) }
  }
  const normalJson = request('application/json', '{"audience":"inventory-service"}')
  const normalForm = request('application/x-www-form-urlencoded', 'grant_type=client_credentials&audience=inventory-service')
  await cost(normalJson, 200) // warm up: JIT, key import, TLS buffers
  const cases = [
    ...Object.entries(JSON_BODIES).map(([name, body]) => ({ name: `JSON: ${name}`, raw: request('application/json', body), normal: normalJson })),
    ...Object.entries(FORM_BODIES).map(([name, body]) => ({ name: `form: ${name}`, raw: request('application/x-www-form-urlencoded', body), normal: normalForm })),
  ]
  for (const c of cases) {
    t.ok(c.raw.length - c.raw.indexOf('\r\n\r\n') - 4 <= LIMIT, `${c.name}: within the body limit`)
    const { worst, normal } = await compare(c.raw, c.normal)
    const ratio = worst / normal
    t.ok(ratio <= 3, `${c.name}: ${worst.toFixed(2)} ms vs a normal request's ${normal.toFixed(2)} ms (×${ratio.toFixed(2)}; before the fix: a&a&a… was ×24)`)
  }
})
