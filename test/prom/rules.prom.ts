/**
 * The alert rules against promtool, Prometheus's own checker (`npm run test:prom`; Debian package
 * prometheus, installed by .ci/run: a missing promtool fails, it never skips): the rule file and the
 * PrometheusRule's groups pass `promtool check rules`, the unit tests pass `promtool test rules`, and the
 * unit tests can fail — every alert's firing test fails when its rule never fires, and its quiet test
 * fails when its rule always fires.
 */
import { execFile } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import t from 'tap'
import { parse, stringify } from 'yaml'
import { alertRules, read, UNIT_TEST_FILES } from '../helpers/operations.js'

const run = promisify(execFile)
const root = new URL('../../', import.meta.url).pathname

async function promtool(...args: string[]): Promise<{ code: number; out: string }> {
  try {
    const { stdout, stderr } = await run('promtool', args, { cwd: root, maxBuffer: 64 * 1024 * 1024 })
    return { code: 0, out: stdout + stderr }
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { code?: number | string; stdout?: string; stderr?: string }
    if (e.code === 'ENOENT') throw new Error('promtool is not installed (Debian package prometheus: apt-get install prometheus)')
    return { code: typeof e.code === 'number' ? e.code : 1, out: `${e.stdout ?? ''}${e.stderr ?? ''}` }
  }
}

const dir = mkdtempSync(join(tmpdir(), 'authz-promtool-'))
t.teardown(() => rmSync(dir, { recursive: true, force: true }))

t.test('promtool check rules: the rule file and the PrometheusRule', async (t) => {
  const file = await promtool('check', 'rules', 'deploy/prometheus/authz-rules.yaml')
  t.equal(file.code, 0, file.out)
  t.match(file.out, /SUCCESS: \d+ rules found/)
  const { spec } = parse(read('deploy/kubernetes/monitoring/prometheusrule.yaml')) as { spec: unknown }
  writeFileSync(join(dir, 'from-prometheusrule.yaml'), stringify(spec))
  const fromCrd = await promtool('check', 'rules', join(dir, 'from-prometheusrule.yaml'))
  t.equal(fromCrd.code, 0, fromCrd.out)
})

t.test('promtool test rules: every unit test passes', async (t) => {
  const result = await promtool('test', 'rules', ...UNIT_TEST_FILES)
  t.equal(result.code, 0, result.out)
  t.equal(result.out.match(/SUCCESS/g)?.length, UNIT_TEST_FILES.length, result.out)
})

/** The unit tests run against a copy of the rules in which every expression is `expr`. */
async function againstRulesWhere(expr: string): Promise<{ code: number; out: string }> {
  const rules = parse(read('deploy/prometheus/authz-rules.yaml')) as { groups: { rules: { expr: string }[] }[] }
  for (const group of rules.groups) for (const rule of group.rules) rule.expr = expr
  writeFileSync(join(dir, 'authz-rules.yaml'), stringify(rules))
  const files = UNIT_TEST_FILES.map((f) => {
    const copy = join(dir, f.split('/').at(-1) as string)
    writeFileSync(copy, read(f))
    return copy
  })
  return promtool('test', 'rules', ...files)
}

/** Alerts with a failed test expecting them to fire (`firing`) or expecting silence (`quiet`). */
function failedAlerts(out: string, kind: 'firing' | 'quiet'): Set<string> {
  const quiet = kind === 'quiet'
  return new Set([...out.matchAll(/alertname: (\w+), time: \S+,\s*\n\s*exp:(\[\]|\[\n)/g)].filter((m) => (m[2] === '[]') === quiet).map((m) => m[1] as string))
}

t.test('the unit tests can fail: rules that never fire fail every firing test', async (t) => {
  const result = await againstRulesWhere('vector(1) == 0')
  t.not(result.code, 0)
  const failed = failedAlerts(result.out, 'firing')
  for (const name of new Set(alertRules().map((r) => r.alert))) t.ok(failed.has(name), `${name}: its firing test fails`)
})

t.test('the unit tests can fail: rules that always fire fail every quiet test', async (t) => {
  const result = await againstRulesWhere('vector(1)')
  t.not(result.code, 0)
  const failed = failedAlerts(result.out, 'quiet')
  for (const name of new Set(alertRules().map((r) => r.alert))) t.ok(failed.has(name), `${name}: its quiet test fails`)
})
