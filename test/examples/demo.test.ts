import t from 'tap'
import { runDemo } from '../../examples/demo.js'

t.test('the demo: allowed and denied calls over HTTP and gRPC go as expected, end to end', async (t) => {
  const lines: string[] = []
  const results = await runDemo((line) => lines.push(line))
  t.equal(results.length, 10)
  for (const r of results) t.ok(r.ok, `${r.name}: expected ${r.expected}, got ${r.actual}`)
  t.match(lines.at(-1), /10 of 10 calls went as expected/)
})
