/**
 * The operational view shipped with authz, checked without Prometheus or Grafana (those run in
 * `npm run test:prom`): every alert has a summary, a description and a runbook that exists in the README;
 * the PrometheusRule is the rule file; the ServiceMonitor scrapes what the rules expect; every alert has a
 * promtool test where it fires and one where it must not; the dashboard takes its data source from a
 * variable; and every metric the rules and the dashboard use is in the README's metrics table, whose
 * "alerts" column says which alerts use it.
 */
import t from 'tap'
import { parse, parseAllDocuments } from 'yaml'
import { createMetrics } from '../../src/metrics.js'
// @ts-expect-error a plain .mjs script without declarations
import { prometheusRule } from '../../scripts/prometheus-rule.mjs'
import { familiesOf } from '../helpers/prom-text.js'
import {
  alertRules,
  dashboardTargets,
  durationSeconds,
  metricNamesIn,
  readmeAnchors,
  readmeMetricsTable,
  read,
  unitTests,
} from '../helpers/operations.js'

const rules = alertRules()
const alertNames = [...new Set(rules.map((r) => r.alert))]

t.test('every alert has a severity, a summary, a description and a runbook in the README', async (t) => {
  const anchors = readmeAnchors()
  t.ok(rules.length >= 15, `${rules.length} alerting rules`)
  for (const rule of rules) {
    t.match(rule.labels?.severity, /^(warning|critical)$/, `${rule.alert}: severity`)
    t.ok((rule.annotations?.summary ?? '').length > 10, `${rule.alert}: summary`)
    t.ok((rule.annotations?.description ?? '').length > 10, `${rule.alert}: description`)
    const anchor = /^README\.md#([a-z0-9-]+)$/.exec(rule.annotations?.runbook_url ?? '')?.[1]
    t.ok(anchor !== undefined && anchors.has(anchor), `${rule.alert}: runbook ${rule.annotations?.runbook_url} is a README section`)
  }
})

t.test('the alerts the issue asks for are there', async (t) => {
  for (const name of [
    'AuthzDown',
    'AuthzAllDown',
    'AuthzNotReady',
    'AuthzReloadFailing',
    'AuthzNoActiveSigningKey',
    'AuthzNoNextSigningKey',
    'AuthzReplicasSignWithDifferentKeys',
    'AuthzServerCertificateExpiring',
    'AuthzClientCaExpiring',
    'AuthzCrlExpiring',
    'AuthzCrlExpired',
    'AuthzTlsHandshakeFailures',
    'AuthzTokenDenials',
    'AuthzTokenErrors',
    'AuthzTokenLatencyHigh',
    'AuthzPkcs11Unavailable',
    'AuthzMemoryNearLimit',
  ]) {
    t.ok(alertNames.includes(name), name)
  }
  for (const name of ['AuthzServerCertificateExpiring', 'AuthzClientCaExpiring', 'AuthzCrlExpiring']) {
    t.same(rules.filter((r) => r.alert === name).map((r) => r.labels?.severity).sort(), ['critical', 'warning'], `${name}: a warning and a critical horizon`)
  }
  const reload = rules.find((r) => r.alert === 'AuthzReloadFailing')
  t.ok(durationSeconds(reload?.for) >= 300, 'a reload must fail for minutes, not the seconds of a kubelet swap, before it pages')
})

t.test('every alert has a promtool test where it fires and one, past its `for`, where it must not', async (t) => {
  const tests = unitTests()
  for (const rule of rules) {
    const mine = tests.filter((c) => c.alertname === rule.alert)
    t.ok(mine.some((c) => c.expAlerts.length > 0), `${rule.alert}: a history where it fires`)
    t.ok(mine.some((c) => c.expAlerts.length === 0 && c.evalSeconds > durationSeconds(rule.for)), `${rule.alert}: a history where it must not fire`)
  }
})

t.test('the PrometheusRule is the rule file, and the ServiceMonitor names the job the rules expect', async (t) => {
  t.equal(read('deploy/kubernetes/monitoring/prometheusrule.yaml'), prometheusRule(read('deploy/prometheus/authz-rules.yaml')), 'current: node scripts/prometheus-rule.mjs --write')
  const monitor = parse(read('deploy/kubernetes/monitoring/servicemonitor.yaml')) as {
    spec: { jobLabel: string; selector: { matchLabels: Record<string, string> }; endpoints: { port: string; path: string }[] }
  }
  const services = parseAllDocuments(read('deploy/kubernetes/service.yaml')).map(
    (d) => d.toJS() as { metadata: { name: string; labels: Record<string, string> }; spec: { ports: { name: string }[]; publishNotReadyAddresses?: boolean } },
  )
  const selected = services.filter((s) => Object.entries(monitor.spec.selector.matchLabels).every(([k, v]) => s.metadata.labels[k] === v))
  t.same(selected.map((s) => s.metadata.name), ['authz-ops'], 'it selects the ops Service only')
  t.ok(selected[0]?.spec.ports.some((p) => p.name === monitor.spec.endpoints[0]?.port), 'on its ops port')
  t.equal(monitor.spec.endpoints[0]?.path, '/metrics')
  t.equal(selected[0]?.metadata.labels[monitor.spec.jobLabel], 'authz', 'job="authz", as the rules select')
  t.ok(rules.some((r) => r.expr.includes('up{job="authz"}')))
  const kustomization = parse(read('deploy/kubernetes/monitoring/kustomization.yaml')) as { resources: string[] }
  t.same(kustomization.resources.sort(), ['prometheusrule.yaml', 'servicemonitor.yaml'])
})

t.test('the dashboard takes its data source from a variable and hard-codes no UID', async (t) => {
  const text = read('deploy/grafana/authz.json')
  const dashboard = JSON.parse(text) as { uid?: unknown; templating: { list: { name: string; type: string; query?: unknown }[] } }
  t.equal(dashboard.uid, undefined, 'no dashboard uid: Grafana assigns one on import')
  const variable = dashboard.templating.list.find((v) => v.type === 'datasource')
  t.same([variable?.name, variable?.query], ['datasource', 'prometheus'])
  const uids = [...text.matchAll(/"uid":\s*"([^"]*)"/g)].map((m) => m[1])
  t.ok(uids.length > 0 && uids.every((u) => u === '${datasource}'), 'every datasource uid is ${datasource}')
  const targets = dashboardTargets()
  t.ok(targets.length >= 20, `${targets.length} queries`)
  for (const { panel, expr } of targets) t.ok(/job=~"\$job"/.test(expr) || !/authz_|process_|nodejs_/.test(expr), `${panel}: filtered by $job`)
  const titles = targets.map((q) => q.panel).join(' | ')
  for (const wanted of [/issued by audience/, /by outcome/, /latency/, /Denials/, /handshake/i, /Signing key per replica/, /key age/, /Next key/, /Expiry/, /Reload/, /CPU/, /memory/, /Event-loop/]) {
    t.match(titles, wanted, `a panel for ${wanted}`)
  }
})

t.test('the README metrics table lists every metric the rules and the dashboard use, and which alerts use it', async (t) => {
  const table = readmeMetricsTable()
  const documented = new Map(table.map((row) => [row.name, row]))
  const used = new Set([...rules.flatMap((r) => metricNamesIn(r.expr)), ...dashboardTargets().flatMap((q) => metricNamesIn(q.expr))])
  for (const name of used) if (name.startsWith('authz_')) t.ok(documented.has(name), `${name} is in the table`)
  for (const row of table) {
    const users = [...new Set(rules.filter((r) => metricNamesIn(r.expr).includes(row.name)).map((r) => r.alert))].sort()
    t.same(row.alerts, users, `${row.name}: the alerts column`)
    t.match(row.type, /^(counter|gauge|histogram)$/, `${row.name}: a type`)
  }
  // Every authz_* family this code registers has a row (the trust material's rows come from issue 18).
  const text = await createMetrics().registry.metrics()
  for (const family of familiesOf(text)) if (family.startsWith('authz_')) t.ok(documented.has(family), `${family} (registered) is in the table`)
})
