// The chart's alert rules (charts/vmta-operator/rules/) checked by a real promtool: they parse,
// their unit tests (test/chart/promtool/) pass, every alert has a unit test that makes it fire,
// and every metric they use is one the relay or the operator exports (or one of the two named
// outside metrics: kube-state-metrics' kube_pod_status_ready and Prometheus' own `up`).
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { parse as parseYaml } from 'yaml';
import { DeliveryMetrics } from '../../mta/observe/delivery-metrics.ts';
import { RelayMetrics } from '../../mta/observe/metrics.ts';
import { OperatorMetrics } from '../../operator/observe/metrics.ts';
import { CHART_DIR } from './helm.ts';
import { promtool } from './prometheus.ts';

const RULES_DIR = join(CHART_DIR, 'rules');
const UNIT_TESTS_DIR = join(import.meta.dirname, 'promtool');
const ruleFiles = readdirSync(RULES_DIR).filter((name) => name.endsWith('.yaml'));
const unitTestFiles = readdirSync(UNIT_TESTS_DIR).filter((name) => name.endsWith('.test.yaml'));

interface RuleFile {
  groups: Array<{ name: string; rules: Array<{ alert?: string; record?: string; expr: string }> }>;
}
interface UnitTestFile {
  tests: Array<{ alert_rule_test?: Array<{ alertname: string; exp_alerts: unknown[] }> }>;
}

const rules = ruleFiles.flatMap((file) => (parseYaml(readFileSync(join(RULES_DIR, file), 'utf8')) as RuleFile).groups.flatMap((group) => group.rules));

/** Metrics the alerts may use that neither vmta process exports, and who does. */
const OUTSIDE_METRICS = new Map([
  ['kube_pod_status_ready', 'kube-state-metrics'],
  ['up', 'Prometheus, per scrape target'],
]);

/** An exposition of the relay's registry with a sample in every series family. */
async function relayExposition(): Promise<{ text: string; names: Set<string> }> {
  const metrics = new RelayMetrics();
  metrics.inboundConnectionsActive.set({ listener: 'submission' }, 2);
  metrics.inboundConnections.inc({ listener: 'submission', tls_mode: 'starttls', tls_version: 'TLSv1.3' });
  metrics.authAttempts.inc({ listener: 'submission', mechanism: 'plain', result: 'success' });
  metrics.rejections.inc({ listener: 'relay', reason: 'relay_denied' });
  metrics.messagesReceived.inc({ listener: 'submission' });
  metrics.bytesReceived.inc({ listener: 'submission' }, 2048);
  metrics.spoolWriteSeconds.observe(0.002);
  metrics.spoolFsyncs.inc();
  metrics.queueDepth.set({ virtual_mta: 'vmta-a', state: 'ready' }, 3);
  metrics.configReloads.inc({ result: 'success' });
  metrics.configLastReloadSuccessful.set(1);
  metrics.configLastReloadSuccessTimestamp.set(Date.now() / 1000);
  metrics.configInfo.set({ hash: 'abc' }, 1);
  metrics.certificateExpiry.set({ listener: 'submission', server_name: 'smtp.example.com' }, Date.now() / 1000 + 86400 * 60);
  const delivery = new DeliveryMetrics(metrics.registry);
  delivery.attempts.inc({ virtual_mta: 'vmta-a', domain: 'other', result: 'delivered', bounce_category: 'none' });
  delivery.connections.inc({ virtual_mta: 'vmta-a', tls: 'tls', tls_version: 'TLSv1.3' });
  delivery.virtualMtaUsable.set({ virtual_mta: 'vmta-a' }, 1);
  delivery.oldestMessageAge.set({ virtual_mta: 'vmta-a' }, 30);
  const families = await metrics.registry.getMetricsAsJSON();
  return { text: await metrics.registry.metrics(), names: new Set(families.map((family) => family.name)) };
}

describe('alert rules', { timeout: 300_000 }, () => {
  test('promtool check rules accepts every rule file of the chart', () => {
    assert.ok(ruleFiles.length > 0, 'the chart has rule files');
    for (const file of ruleFiles) {
      const result = promtool(['check', 'rules', join(RULES_DIR, file)]);
      assert.equal(result.status, 0, `${file}: ${result.stdout}${result.stderr}`);
      assert.match(result.stdout, /SUCCESS: \d+ rules found/);
    }
  });

  test('promtool test rules passes the unit tests of every alert', () => {
    for (const file of unitTestFiles) {
      const result = promtool(['test', 'rules', file], { cwd: UNIT_TESTS_DIR });
      assert.equal(result.status, 0, `${file}: ${result.stdout}${result.stderr}`);
      assert.match(result.stdout, /SUCCESS/);
    }
  });

  test('every alert has a unit test in which it fires', () => {
    const firing = new Set(
      unitTestFiles.flatMap((file) =>
        (parseYaml(readFileSync(join(UNIT_TESTS_DIR, file), 'utf8')) as UnitTestFile).tests.flatMap((unit) =>
          (unit.alert_rule_test ?? []).filter((check) => check.exp_alerts.length > 0).map((check) => check.alertname),
        ),
      ),
    );
    const alerts = rules.flatMap((rule) => (rule.alert ? [rule.alert] : []));
    assert.ok(alerts.length > 0);
    assert.deepEqual(alerts.filter((alert) => !firing.has(alert)), [], 'alerts without a firing unit test');
  });

  test('every metric an alert uses is exported by the relay or the operator, or named as an outside metric', async () => {
    const { names } = await relayExposition();
    for (const family of await new OperatorMetrics().registry.getMetricsAsJSON()) names.add(family.name);
    const used = new Set<string>();
    for (const rule of rules) {
      // Metric names are the identifiers PromQL reads as selectors: followed by { [ ) or a comparison.
      const selectors = rule.expr.replace(/\b(by|on|without|ignoring|group_left|group_right)\s*\([^)]*\)/g, '');
      for (const [, name] of selectors.matchAll(/(?<![\w"])([a-z_][a-z0-9_]*)\s*(?=\{|\[|\)|==|>|<)/g)) {
        used.add(name!);
        const family = name!.replace(/_(bucket|sum|count)$/, '');
        assert.ok(names.has(name!) || names.has(family) || OUTSIDE_METRICS.has(name!), `${rule.alert ?? rule.record}: ${name} is a metric of mta/observe or operator/observe`);
      }
    }
    for (const name of ['vmta_queue_depth', 'vmta_virtual_mta_usable', 'controller_runtime_reconcile_errors_total', 'kube_pod_status_ready', 'up']) assert.ok(used.has(name), `the check sees ${name}`);
  });

  test('promtool check metrics finds no problem in the relay\'s vmta_ metrics', async (t) => {
    const { text } = await relayExposition();
    const result = promtool(['check', 'metrics'], { input: text });
    const findings = `${result.stdout}${result.stderr}`.split('\n').filter((line) => line.trim() !== '');
    const ours = findings.filter((line) => line.startsWith('vmta_'));
    const others = findings.filter((line) => !line.startsWith('vmta_'));
    if (others.length > 0) t.diagnostic(`promtool lint on prom-client's default process metrics (not named by this project): ${others.join('; ')}`);
    assert.deepEqual(ours, []);
  });
});
