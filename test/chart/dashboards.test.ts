// The chart's Grafana dashboards (charts/vmta-operator/dashboards/*.json): well-formed for the
// current Grafana schema, and every panel query and template variable evaluated by a real
// Prometheus server on loopback, which scrapes the relay's metrics registry (RelayMetrics of
// mta/observe/metrics.ts, served over HTTP and active between scrapes); each must parse and
// return data. Until `vmta mta` runs in this tree the registry stands in for a whole relay.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { createServer as createNetServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { RelayMetrics } from '../../mta/observe/metrics.ts';
import { CHART_DIR } from './helm.ts';
import { ensurePrometheus } from './prometheus.ts';

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

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createNetServer();
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address() as AddressInfo;
      probe.close(() => resolve(port));
    });
  });
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

describe('dashboard queries on a real Prometheus scraping the relay metrics', { timeout: 300_000 }, () => {
  let workDir = '';
  let metricsServer: Server | undefined;
  let prometheus: ChildProcess | undefined;
  let prometheusUrl = '';
  let prometheusLog = '';

  async function api(path: string): Promise<{ status: string; data: unknown; error?: string }> {
    const response = await fetch(`${prometheusUrl}${path}`);
    return (await response.json()) as { status: string; data: unknown; error?: string };
  }

  before(async () => {
    ensurePrometheus();
    workDir = mkdtempSync(join(tmpdir(), 'vmta-dashboards-'));
    // The relay's registry, with traffic on two listeners between scrapes so every rate has data.
    const metrics = new RelayMetrics();
    let scrapes = 0;
    metricsServer = createServer((_request, response) => {
      scrapes += 1;
      for (const [listener, tlsMode, tlsVersion] of [
        ['submission', 'starttls', 'TLSv1.3'],
        ['relay', 'starttls', 'none'],
      ] as const) {
        metrics.inboundConnectionsActive.set({ listener }, 1 + (scrapes % 3));
        metrics.inboundConnections.inc({ listener, tls_mode: tlsMode, tls_version: tlsVersion }, 2);
        metrics.messagesReceived.inc({ listener }, 3);
        metrics.bytesReceived.inc({ listener }, 4096);
        metrics.authAttempts.inc({ listener, mechanism: 'plain', result: scrapes % 4 === 0 ? 'failure' : 'success' });
        metrics.rejections.inc({ listener, reason: 'relay_denied' });
        metrics.certificateExpiry.set({ listener, server_name: `${listener}.example.com` }, Date.now() / 1000 + 86400 * 40);
      }
      metrics.spoolWriteSeconds.observe(0.002);
      metrics.spoolWriteSeconds.observe(0.02);
      metrics.spoolFsyncs.inc(2);
      metrics.queueDepth.set({ virtual_mta: 'vmta-a', state: 'ready' }, 5);
      metrics.queueDepth.set({ virtual_mta: 'vmta-b', state: 'scheduled' }, 2);
      metrics.configReloads.inc({ result: 'success' });
      metrics.configLastReloadSuccessful.set(1);
      metrics.configLastReloadSuccessTimestamp.set(Date.now() / 1000);
      metrics.configInfo.set({ hash: 'e3b0c44298fc1c14' }, 1);
      metrics.registry.metrics().then(
        (text) => response.writeHead(200, { 'content-type': metrics.registry.contentType }).end(text),
        (error: Error) => response.writeHead(500).end(error.message),
      );
    });
    await new Promise<void>((resolve) => metricsServer!.listen(0, '127.0.0.1', resolve));
    const metricsPort = (metricsServer.address() as AddressInfo).port;

    // The labels the chart's PodMonitor gives relay targets: namespace, pod and pool.
    writeFileSync(
      join(workDir, 'prometheus.yml'),
      [
        'global:',
        `  scrape_interval: ${SCRAPE_SECONDS}s`,
        `  scrape_timeout: ${SCRAPE_SECONDS}s`,
        'scrape_configs:',
        '  - job_name: vmta-relay',
        '    static_configs:',
        `      - targets: ['127.0.0.1:${metricsPort}']`,
        '        labels: {namespace: mail, pod: relay-0, pool: outbound}',
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

    // Ready, then enough scrapes for the widest rate window of the queries.
    const deadline = Date.now() + 90_000; // under the suite runner's 120 s per-test limit, with its own message
    for (;;) {
      if (prometheus.exitCode !== null) throw new Error(`prometheus exited with ${prometheus.exitCode}:\n${prometheusLog}`);
      if (Date.now() > deadline) throw new Error(`prometheus did not scrape the relay metrics in time:\n${prometheusLog}`);
      try {
        const samples = await api(`/api/v1/query?query=${encodeURIComponent('count_over_time(vmta_inbound_messages_total{listener="relay"}[30s])')}`);
        const value = (samples.data as { result: Array<{ value: [number, string] }> } | undefined)?.result[0]?.value[1];
        if (Number(value) >= 8) break;
      } catch {
        // not listening yet
      }
      await sleep(500);
    }
  });

  after(async () => {
    if (prometheus && prometheus.exitCode === null) {
      const exited = new Promise((resolve) => prometheus!.once('exit', resolve));
      prometheus.kill('SIGTERM');
      await exited;
    }
    await new Promise((resolve) => (metricsServer ? metricsServer.close(resolve) : resolve(undefined)));
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
});
