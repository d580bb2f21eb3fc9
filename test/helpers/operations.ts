/** The shipped operational view (alert rules, their promtool tests, the dashboard, the README's tables), read for tests. */
import { readFileSync } from 'node:fs'
import { parse } from 'yaml'

const root = new URL('../../', import.meta.url)
export const read = (path: string): string => readFileSync(new URL(path, root), 'utf8')

export interface AlertRule {
  readonly alert: string
  readonly expr: string
  readonly for?: string
  readonly labels?: Record<string, string>
  readonly annotations?: Record<string, string>
}

export function alertRules(): AlertRule[] {
  const { groups } = parse(read('deploy/prometheus/authz-rules.yaml')) as { groups: { rules: AlertRule[] }[] }
  return groups.flatMap((g) => g.rules)
}

/** Prometheus durations (`90s`, `5m`, `1h`, `31d`, `1h30m`) in seconds; undefined is 0. */
export function durationSeconds(text: string | undefined): number {
  if (text === undefined) return 0
  const unit: Record<string, number> = { ms: 0.001, s: 1, m: 60, h: 3600, d: 86400, w: 604800, y: 31536000 }
  let total = 0
  for (const m of text.matchAll(/(\d+)(ms|s|m|h|d|w|y)/g)) total += Number(m[1]) * (unit[m[2] as string] as number)
  return total
}

export const UNIT_TEST_FILES = ['deploy/prometheus/authz-rules.test.yaml', 'deploy/prometheus/authz-rules.days.test.yaml']

export interface AlertTestCase {
  readonly file: string
  readonly group: string
  readonly alertname: string
  readonly evalSeconds: number
  readonly expAlerts: unknown[]
}

export function unitTests(): AlertTestCase[] {
  return UNIT_TEST_FILES.flatMap((file) => {
    const doc = parse(read(file)) as { tests: { name: string; alert_rule_test?: { eval_time: string; alertname: string; exp_alerts?: unknown[] }[] }[] }
    return doc.tests.flatMap((group) =>
      (group.alert_rule_test ?? []).map((c) => ({ file, group: group.name, alertname: c.alertname, evalSeconds: durationSeconds(c.eval_time), expAlerts: c.exp_alerts ?? [] })),
    )
  })
}

export interface DashboardTarget {
  readonly panel: string
  readonly expr: string
  readonly instant: boolean
}

export function dashboardTargets(): DashboardTarget[] {
  const dashboard = JSON.parse(read('deploy/grafana/authz.json')) as { panels: { title: string; targets?: { expr: string; instant?: boolean }[] }[] }
  return dashboard.panels.flatMap((p) => (p.targets ?? []).map((q) => ({ panel: p.title, expr: q.expr, instant: q.instant === true })))
}

/** The metric families a PromQL expression reads (histogram series named by their family). */
export function metricNamesIn(expr: string): string[] {
  const names = [...expr.matchAll(/\b(authz_[a-z0-9_]+|process_[a-z0-9_]+|nodejs_[a-z0-9_]+|up)\b(?=\s*[{[)\s]|$)/g)].map((m) => (m[1] as string).replace(/_(bucket|count|sum)$/, ''))
  return [...new Set(names)]
}

/** GitHub's anchors of the README's headings. */
export function readmeAnchors(): Set<string> {
  const anchors = new Set<string>()
  const seen = new Map<string, number>()
  let fenced = false
  for (const line of read('README.md').split('\n')) {
    if (line.startsWith('```')) fenced = !fenced
    const heading = fenced ? null : /^#{1,6} (.+)$/.exec(line)
    if (heading === null) continue
    const slug = (heading[1] as string)
      .trim()
      .toLowerCase()
      .replace(/[^\p{L}\p{N} _-]/gu, '')
      .replace(/ /g, '-')
    const n = seen.get(slug) ?? 0
    seen.set(slug, n + 1)
    anchors.add(n === 0 ? slug : `${slug}-${n}`)
  }
  return anchors
}

export interface MetricRow {
  readonly name: string
  readonly type: string
  readonly labels: string
  readonly meaning: string
  readonly alerts: string[]
}

/** The rows of the README's metrics table (between its markers). */
export function readmeMetricsTable(): MetricRow[] {
  const readme = read('README.md')
  const table = readme.slice(readme.indexOf('<!-- metrics-table:start'), readme.indexOf('<!-- metrics-table:end'))
  return [...table.matchAll(/^\| `([a-z0-9_:]+)` \| (\w+) \| (.*?) \| (.*?) \| (.*?) \|$/gm)].map((m) => ({
    name: m[1] as string,
    type: m[2] as string,
    labels: m[3] as string,
    meaning: m[4] as string,
    alerts: (m[5] as string) === '—' ? [] : [...(m[5] as string).matchAll(/\[(Authz\w+)\]/g)].map((a) => a[1] as string).sort(),
  }))
}
