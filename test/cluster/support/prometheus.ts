// A Prometheus server on the test host discovering pods through the cluster's API (kubernetes_sd,
// the admin kubeconfig) and scraping them as the chart's PodMonitor says: its selector, port,
// path and relabelings become the scrape job, as prometheus-operator would generate it.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { ensurePrometheus } from '../../chart/prometheus.ts';
import { freePort } from '../../fixtures/relay-process.ts';

interface PodMonitor {
  spec: {
    selector: { matchLabels: Record<string, string> };
    podMetricsEndpoints: { port: string; path?: string; interval?: string; relabelings?: Record<string, unknown>[] }[];
  };
}

/** `app.kubernetes.io/name` -> `__meta_kubernetes_pod_label_app_kubernetes_io_name`, as Prometheus names it. */
const podLabel = (name: string) => `__meta_kubernetes_pod_label_${name.replace(/[^a-zA-Z0-9_]/g, '_')}`;

/** The scrape job prometheus-operator derives from a PodMonitor, limited to the given namespaces. */
export function scrapeJob(monitor: PodMonitor, kubeconfig: string, namespaces: string[]): Record<string, unknown> {
  const endpoint = monitor.spec.podMetricsEndpoints[0]!;
  return {
    job_name: 'podmonitor',
    scrape_interval: '2s',
    metrics_path: endpoint.path ?? '/metrics',
    kubernetes_sd_configs: [{ role: 'pod', kubeconfig_file: kubeconfig, namespaces: { names: namespaces } }],
    relabel_configs: [
      ...Object.entries(monitor.spec.selector.matchLabels).map(([label, value]) => ({ source_labels: [podLabel(label)], regex: value, action: 'keep' })),
      { source_labels: ['__meta_kubernetes_pod_container_port_name'], regex: endpoint.port, action: 'keep' },
      { source_labels: ['__meta_kubernetes_namespace'], target_label: 'namespace' },
      { source_labels: ['__meta_kubernetes_pod_name'], target_label: 'pod' },
      ...(endpoint.relabelings ?? []).map((rule) => ({ source_labels: rule.sourceLabels, target_label: rule.targetLabel, action: rule.action, regex: rule.regex, replacement: rule.replacement })),
    ].map((rule) => Object.fromEntries(Object.entries(rule).filter(([, value]) => value !== undefined))),
  };
}

export interface HostPrometheus {
  /** Result vector of an instant query. */
  query(expression: string): Promise<{ metric: Record<string, string>; value: [number, string] }[]>;
  stop(): Promise<void>;
}

export async function startPrometheus(job: Record<string, unknown>): Promise<HostPrometheus> {
  ensurePrometheus();
  const directory = mkdtempSync(join(tmpdir(), 'vmta-cluster-prometheus-'));
  writeFileSync(join(directory, 'prometheus.yml'), stringify({ global: { scrape_interval: '2s' }, scrape_configs: [job] }));
  const port = await freePort();
  let log = '';
  const server: ChildProcess = spawn('prometheus', [`--config.file=${join(directory, 'prometheus.yml')}`, `--storage.tsdb.path=${join(directory, 'data')}`, `--web.listen-address=127.0.0.1:${port}`], { stdio: ['ignore', 'pipe', 'pipe'] });
  server.stdout!.on('data', (chunk: Buffer) => (log += chunk.toString()));
  server.stderr!.on('data', (chunk: Buffer) => (log += chunk.toString()));
  return {
    async query(expression) {
      if (server.exitCode !== null) throw new Error(`prometheus exited with ${server.exitCode}: ${log.slice(-1500)}`);
      const response = await fetch(`http://127.0.0.1:${port}/api/v1/query?query=${encodeURIComponent(expression)}`);
      const body = (await response.json()) as { data: { result: { metric: Record<string, string>; value: [number, string] }[] } };
      return body.data.result;
    },
    async stop() {
      if (server.exitCode === null) {
        server.kill('SIGTERM');
        await new Promise((resolve) => server.once('exit', resolve));
      }
      rmSync(directory, { recursive: true, force: true });
    },
  };
}
