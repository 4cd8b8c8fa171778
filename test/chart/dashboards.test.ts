// The chart's Grafana dashboards (charts/vmta-operator/dashboards/*.json): well-formed for the
// current Grafana schema, and every panel query and template variable evaluated by a real
// Prometheus server on loopback, which scrapes a running relay process that delivers, defers
// and bounces mail (test/chart/monitored-stack.ts) and a running operator; each query must parse
// and return data. promtool check metrics reads both /metrics pages as Prometheus scraped them.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { freePort } from '../fixtures/relay-process.ts';
import { CHART_DIR } from './helm.ts';
import { startOperatorWithErrors, startRelayUnderTraffic, type OperatorUnderTest, type RelayUnderTraffic } from './monitored-stack.ts';
import { ensurePrometheus, promtool } from './prometheus.ts';

interface Target {
  refId: string;
  expr: string;
  datasource?: { uid: string };
}
interface Panel {
  id: number;
  type: string;
  title: string;
  description?: string;
  datasource?: { uid: string };
  gridPos: { x: number; y: number; w: number; h: number };
  targets?: Target[];
}
interface Variable {
  name: string;
  type: string;
  query: string | { query: string };
  allValue?: string;
}
interface Dashboard {
  uid: string;
  title: string;
  schemaVersion: number;
  panels: Panel[];
  templating: { list: Variable[] };
}

const DASHBOARDS_DIR = join(CHART_DIR, 'dashboards');
const dashboards = readdirSync(DASHBOARDS_DIR)
  .filter((name) => name.endsWith('.json'))
  .map((file) => ({ file, dashboard: JSON.parse(readFileSync(join(DASHBOARDS_DIR, file), 'utf8')) as Dashboard }));
const SCRAPE_SECONDS = 1;

/** Relay dashboards select by namespace, pool and VirtualMTA; the operator's by namespace, pod and controller. */
function requiredVariables(dashboard: Dashboard): string[] {
  if (dashboard.uid === 'vmta-operator') return ['datasource', 'namespace', 'pod', 'controller'];
  if (dashboard.uid === 'vmta-relay-inbound') return ['datasource', 'namespace', 'pool', 'pod', 'listener', 'virtual_mta'];
  return ['datasource', 'namespace', 'pool', 'virtual_mta'];
}

/** A query as Grafana sends it with every variable on "All" and a rate interval of a few scrapes. */
function asSent(expr: string): string {
  return expr.replaceAll('$__rate_interval', `${SCRAPE_SECONDS * 5}s`).replace(/\$\{?(namespace|pool|pod|listener|virtual_mta|controller)\}?/g, '.*');
}

describe('Grafana dashboards', () => {
  test('there is at least one dashboard', () => {
    assert.ok(dashboards.length > 0);
  });

  for (const { file, dashboard } of dashboards) {
    test(`${file} is a current-schema dashboard with the template variables of what it shows`, () => {
      assert.match(dashboard.uid, /^[a-z0-9-]{1,40}$/);
      assert.ok(dashboard.title.startsWith('vmta'));
      assert.ok(dashboard.schemaVersion >= 39, `schemaVersion ${dashboard.schemaVersion} is current (>= 39)`);
      const variables = dashboard.templating.list.map((variable) => variable.name);
      for (const name of requiredVariables(dashboard)) assert.ok(variables.includes(name), `variable ${name}`);
      const ids = dashboard.panels.map((panel) => panel.id);
      assert.equal(new Set(ids).size, ids.length, 'panel ids are unique');
      for (const panel of dashboard.panels) {
        assert.ok(panel.gridPos.x + panel.gridPos.w <= 24, `${panel.title} fits the 24-column grid`);
        if (panel.type === 'row') continue;
        assert.ok(panel.description, `${panel.title} says what it shows`);
        assert.equal(panel.datasource?.uid, '${datasource}', `${panel.title} uses the datasource variable`);
        assert.ok((panel.targets ?? []).length > 0, `${panel.title} has a query`);
        for (const target of panel.targets ?? []) assert.equal(target.datasource?.uid, '${datasource}');
      }
    });
  }
});

describe('dashboard queries on a real Prometheus scraping a running relay and operator', { timeout: 600_000 }, () => {
  let workDir = '';
  let relay: RelayUnderTraffic | undefined;
  let operator: OperatorUnderTest | undefined;
  let prometheus: ChildProcess | undefined;
  let prometheusUrl = '';
  let prometheusLog = '';

  async function api(path: string): Promise<{ status: string; data: unknown; error?: string }> {
    const response = await fetch(`${prometheusUrl}${path}`);
    return (await response.json()) as { status: string; data: unknown; error?: string };
  }

  async function instant(query: string): Promise<Array<{ metric: Record<string, string>; value: [number, string] }>> {
    const result = await api(`/api/v1/query?query=${encodeURIComponent(query)}`);
    if (result.status !== 'success') throw new Error(`${query}: ${result.error ?? ''}`);
    return (result.data as { result: Array<{ metric: Record<string, string>; value: [number, string] }> }).result;
  }

  before(async () => {
    ensurePrometheus();
    workDir = mkdtempSync(join(tmpdir(), 'vmta-dashboards-'));
    relay = await startRelayUnderTraffic();
    operator = await startOperatorWithErrors();
    const relayTarget = new URL(relay.relay.adminUrl).host;
    const operatorTarget = new URL(operator.metricsUrl).host;

    // The labels the chart's PodMonitor gives relay targets (namespace, pod, pool) and the
    // ServiceMonitor gives the operator (namespace, pod).
    writeFileSync(
      join(workDir, 'prometheus.yml'),
      [
        'global:',
        `  scrape_interval: ${SCRAPE_SECONDS}s`,
        `  scrape_timeout: ${SCRAPE_SECONDS}s`,
        'scrape_configs:',
        '  - job_name: vmta-relay',
        '    static_configs:',
        `      - targets: ['${relayTarget}']`,
        '        labels: {namespace: mail, pod: pool-a-0, pool: pool-a}',
        '  - job_name: vmta-operator',
        '    static_configs:',
        `      - targets: ['${operatorTarget}']`,
        '        labels: {namespace: vmta-system, pod: vmta-operator-0}',
        '',
      ].join('\n'),
    );
    const prometheusPort = await freePort();
    prometheusUrl = `http://127.0.0.1:${prometheusPort}`;
    prometheus = spawn(
      'prometheus',
      [`--config.file=${join(workDir, 'prometheus.yml')}`, `--storage.tsdb.path=${join(workDir, 'data')}`, `--web.listen-address=127.0.0.1:${prometheusPort}`],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    prometheus.stdout!.on('data', (chunk: Buffer) => (prometheusLog += chunk.toString()));
    prometheus.stderr!.on('data', (chunk: Buffer) => (prometheusLog += chunk.toString()));

    // Ready, with enough scrapes of both targets for the widest rate window of the queries, and
    // the relay has bounced, deferred and delivered mail while being scraped.
    const deadline = Date.now() + 150_000;
    const readiness = [
      'min(count_over_time(up[30s])) >= 8',
      'sum(vmta_delivery_attempts_total{result="delivered"}) > 0',
      'sum(vmta_delivery_attempts_total{result="deferred"}) > 0',
      'sum(vmta_delivery_attempts_total{result="bounced"}) > 0',
      'sum(vmta_backoff_active) > 0',
      'sum(controller_runtime_reconcile_errors_total) > 0',
    ];
    for (;;) {
      if (prometheus.exitCode !== null) throw new Error(`prometheus exited with ${prometheus.exitCode}:\n${prometheusLog}`);
      void relay.submissions; // throws when the traffic loop failed
      let missing = readiness;
      try {
        missing = [];
        for (const query of readiness) if ((await instant(query)).length === 0) missing.push(query);
        if (missing.length === 0) break;
      } catch {
        // not listening yet
      }
      if (Date.now() > deadline) throw new Error(`the scraped relay and operator did not show ${missing.join(', ')} in time:\n${prometheusLog.slice(-2000)}`);
      await sleep(1000);
    }
  });

  after(async () => {
    if (prometheus && prometheus.exitCode === null) {
      const exited = new Promise((resolve) => prometheus!.once('exit', resolve));
      prometheus.kill('SIGTERM');
      await exited;
    }
    await relay?.stop();
    await operator?.stop();
    if (workDir) rmSync(workDir, { recursive: true, force: true });
  });

  for (const { file, dashboard } of dashboards) {
    test(`every panel query of ${file} parses and returns data`, async () => {
      const empty: string[] = [];
      for (const panel of dashboard.panels) {
        for (const target of panel.targets ?? []) {
          const query = asSent(target.expr);
          const result = await api(`/api/v1/query?query=${encodeURIComponent(query)}`);
          assert.equal(result.status, 'success', `${panel.title} / ${target.refId}: ${query}: ${result.error ?? ''}`);
          const series = (result.data as { result: unknown[] }).result;
          const finite = series.filter((sample) => Number.isFinite(Number((sample as { value: [number, string] }).value[1])));
          if (finite.length === 0) empty.push(`${panel.title} / ${target.refId}: ${query}`);
        }
      }
      assert.deepEqual(empty, [], 'queries that returned no finite value');
    });

    test(`every template variable of ${file} finds values`, async () => {
      for (const variable of dashboard.templating.list.filter((v) => v.type === 'query')) {
        const text = typeof variable.query === 'string' ? variable.query : variable.query.query;
        const match = /^label_values\((.+),\s*(\w+)\)$/.exec(text);
        assert.ok(match, `${variable.name}: ${text} is a label_values() query`);
        const result = await api(`/api/v1/label/${match[2]}/values?match[]=${encodeURIComponent(asSent(match[1]!))}`);
        assert.equal(result.status, 'success', `${variable.name}: ${result.error ?? ''}`);
        assert.ok((result.data as string[]).length > 0, `${variable.name}: ${text} finds values`);
        assert.equal(variable.allValue, '.*', `${variable.name}: "All" matches every value`);
      }
    });
  }

  test('the bounce categories and DNS failures come from the test traffic: a 5xx sink and a missing domain', async () => {
    const categories = await instant('sum by (bounce_category) (vmta_delivery_attempts_total{result="bounced"})');
    assert.ok(categories.some((sample) => sample.metric['bounce_category'] !== 'none'), JSON.stringify(categories));
    assert.ok((await instant('sum(vmta_dns_failures_total{kind="no_such_domain"}) > 0')).length > 0);
    assert.ok((await instant('sum(vmta_outbound_connections_total{tls="tls"}) > 0')).length > 0, 'the accepting sink was reached over STARTTLS');
  });

  for (const [who, url] of [['relay', () => `${relay!.relay.adminUrl}/metrics`], ['operator', () => operator!.metricsUrl]] as const) {
    test(`promtool check metrics finds no problem in the running ${who}'s own metrics`, async (t) => {
      const text = await (await fetch(url())).text();
      const result = promtool(['check', 'metrics'], { input: text });
      const findings = `${result.stdout}${result.stderr}`.split('\n').filter((line) => line.trim() !== '');
      const ours = findings.filter((line) => /^(vmta_|controller_runtime_|workqueue_|leader_election_)/.test(line));
      const others = findings.filter((line) => !ours.includes(line));
      if (others.length > 0) t.diagnostic(`promtool lint on prom-client's default process metrics (not named by this project): ${others.join('; ')}`);
      assert.ok(text.includes(who === 'relay' ? 'vmta_delivery_attempts_total{' : 'controller_runtime_reconcile_total{'), 'the page has the metrics the dashboards read');
      assert.deepEqual(ours, []);
    });
  }
});
