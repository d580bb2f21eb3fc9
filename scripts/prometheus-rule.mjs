#!/usr/bin/env node
// Makes deploy/kubernetes/monitoring/prometheusrule.yaml (a Prometheus Operator PrometheusRule) from the
// plain rule file deploy/prometheus/authz-rules.yaml, so the two never drift: the rules are written once.
//   node scripts/prometheus-rule.mjs           print it
//   node scripts/prometheus-rule.mjs --write   write the file (test/deploy/alerts.test.ts checks it is current)
import { readFileSync, writeFileSync } from 'node:fs'
import { parse, stringify } from 'yaml'

const root = new URL('../', import.meta.url)
export const RULES_FILE = new URL('deploy/prometheus/authz-rules.yaml', root)
export const PROMETHEUS_RULE_FILE = new URL('deploy/kubernetes/monitoring/prometheusrule.yaml', root)

const HEADER = `# The alert rules of deploy/prometheus/authz-rules.yaml as a Prometheus Operator PrometheusRule.
# Generated: edit authz-rules.yaml, then run node scripts/prometheus-rule.mjs --write.
# Your Prometheus selects rules by label (its ruleSelector): add the label it expects, e.g. with a
# kustomize patch (release: kube-prometheus-stack for that chart's default).
`

export function prometheusRule(rulesText) {
  const { groups } = parse(rulesText)
  const resource = {
    apiVersion: 'monitoring.coreos.com/v1',
    kind: 'PrometheusRule',
    metadata: { name: 'authz', labels: { 'app.kubernetes.io/name': 'authz' } },
    spec: { groups },
  }
  return HEADER + stringify(resource, { lineWidth: 0 })
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const text = prometheusRule(readFileSync(RULES_FILE, 'utf8'))
  if (process.argv.includes('--write')) writeFileSync(PROMETHEUS_RULE_FILE, text)
  else process.stdout.write(text)
}
