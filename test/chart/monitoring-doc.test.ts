// docs/monitoring.md in step with the chart: its values file renders the monitors, rules and
// dashboards; its promtool commands pass; its panel, alert and metric tables list what the
// chart's dashboards and rules and the relay's and operator's metrics registries really are (the
// metrics reference cannot drift from mta/observe/ and operator/observe/).
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { parse as parseYaml } from 'yaml';
import type { Registry } from 'prom-client';
import { DeliveryMetrics } from '../../mta/observe/delivery-metrics.ts';
import { RelayMetrics } from '../../mta/observe/metrics.ts';
import { SuppressionMetrics } from '../../mta/suppression/suppression-metrics.ts';
import { OperatorMetrics } from '../../operator/observe/metrics.ts';
import { CHART_DIR, REPO_ROOT, renderChart } from './helm.ts';
import { namedYamlFiles, shellCommands, tableAfter } from './markdown.ts';
import { promtool } from './prometheus.ts';

const DOC = readFileSync(join(REPO_ROOT, 'docs', 'monitoring.md'), 'utf8');
const RULES_DIR = join(CHART_DIR, 'rules');
const DASHBOARDS_DIR = join(CHART_DIR, 'dashboards');

interface Rule {
  alert?: string;
  expr: string;
  labels?: Record<string, string>;
}
const rules: Rule[] = readdirSync(RULES_DIR)
  .filter((name) => name.endsWith('.yaml'))
  .flatMap((file) => (parseYaml(readFileSync(join(RULES_DIR, file), 'utf8')) as { groups: Array<{ rules: Rule[] }> }).groups.flatMap((group) => group.rules));
const dashboards = readdirSync(DASHBOARDS_DIR)
  .filter((name) => name.endsWith('.json'))
  .map((file) => JSON.parse(readFileSync(join(DASHBOARDS_DIR, file), 'utf8')) as { title: string; panels: Array<{ type: string; title: string; targets?: Array<{ expr: string }> }> });

describe('docs/monitoring.md', { timeout: 300_000 }, () => {
  test('its values file renders the ServiceMonitor, PodMonitor, PrometheusRule and dashboards', () => {
    const dir = mkdtempSync(join(tmpdir(), 'vmta-monitoring-doc-'));
    try {
      const files = namedYamlFiles(DOC);
      assert.ok(files.size > 0, 'the page shows a values file');
      for (const [name, body] of files) writeFileSync(join(dir, name), body);
      const install = shellCommands(DOC).find((words) => words[0] === 'helm');
      assert.ok(install, 'the page shows the helm command');
      assert.deepEqual(install.slice(0, 4), ['helm', 'upgrade', '--install', 'vmta']);
      const valuesFile = install[install.indexOf('-f') + 1]!;
      // An upgrade needs a cluster; what it would apply is this render of the same values.
      const kinds = renderChart({ valuesFiles: [join(dir, valuesFile)] }).map((manifest) => manifest.kind);
      for (const kind of ['ServiceMonitor', 'PodMonitor', 'PrometheusRule', 'ConfigMap']) assert.ok(kinds.includes(kind), `renders a ${kind}`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('its promtool commands pass', () => {
    const commands = shellCommands(DOC).filter((words) => words[0] === 'promtool');
    assert.equal(commands.length, 2);
    for (const [, ...args] of commands) {
      const result = promtool(args);
      assert.equal(result.status, 0, `promtool ${args.join(' ')}: ${result.stdout}${result.stderr}`);
    }
  });

  for (const dashboard of dashboards) {
    test(`the panel table of "${dashboard.title}" lists every panel of the dashboard`, () => {
      const documented = tableAfter(DOC, `## Dashboard "${dashboard.title}"`).map((row) => row[0]);
      assert.deepEqual(documented, dashboard.panels.filter((panel) => panel.type !== 'row').map((panel) => panel.title));
    });
  }

  test('the alert table lists every alert with its severity', () => {
    const byName = (a: { alert?: string }, b: { alert?: string }) => String(a.alert).localeCompare(String(b.alert));
    const documented = tableAfter(DOC, '## Alerts').map(([alert, severity]) => ({ alert, severity }));
    assert.deepEqual(documented.sort(byName), rules.filter((rule) => rule.alert).map((rule) => ({ alert: rule.alert, severity: rule.labels?.['severity'] })).sort(byName));
  });

  /** Rows of a metric table checked against a registry, both ways: every row is a metric with that type and those labels, every metric has a row. */
  async function assertMetricTable(heading: string, registry: Registry): Promise<Set<string>> {
    const families = new Map((await registry.getMetricsAsJSON()).map((family) => [family.name, family]));
    const documented = tableAfter(DOC, heading);
    for (const [name, type, labels] of documented) {
      const family = families.get(name!);
      assert.ok(family, `${name} (under ${heading}) is a registered metric`);
      assert.equal(String(family.type), type, `${name} is a ${type}`);
      // prom-client keeps a metric's label names on the metric object, not in its JSON form.
      const metric = registry.getSingleMetric(name!) as unknown as { labelNames: readonly string[] };
      const registered = metric.labelNames.join(', ');
      assert.equal(labels, registered, `${name} has labels ${registered}`);
    }
    const names = new Set(documented.map(([name]) => name!));
    assert.deepEqual([...families.keys()].filter((name) => !names.has(name)), [], `metrics missing under ${heading}`);
    return names;
  }

  test('the metric tables match the relay and operator registries and cover every metric the alerts and dashboards use', async () => {
    const relay = new RelayMetrics({ processMetrics: false });
    new DeliveryMetrics(relay.registry);
    new SuppressionMetrics(relay.registry, () => 0);
    const documented = new Set([...(await assertMetricTable('## Relay metrics behind them', relay.registry)), ...(await assertMetricTable('## Operator metrics', new OperatorMetrics().registry))]);
    const outside = new Set(['kube_pod_status_ready', 'up']);
    const used = [...rules.map((rule) => rule.expr), ...dashboards.flatMap((d) => d.panels.flatMap((panel) => (panel.targets ?? []).map((t) => t.expr)))]
      .flatMap((expr) => [...expr.matchAll(/\b(?:vmta|workqueue|controller_runtime|leader_election)_\w+/g)].map(([name]) => name.replace(/_(bucket|sum|count)$/, '')));
    assert.ok(used.includes('workqueue_depth') && used.includes('vmta_queue_depth'));
    assert.deepEqual([...new Set(used)].filter((name) => !documented.has(name) && !outside.has(name)), [], 'metrics used but not documented');
  });
});
