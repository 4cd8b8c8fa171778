// A Prometheus server on the test host scraping relay pods as the chart's PodMonitor says: its
// selector, port, path and relabelings become the scrape job, as prometheus-operator generates
// it. Debian bookworm's prometheus (2.42) is built without kubernetes_sd_configs, so the pod
// role of Kubernetes SD is done here: `kubectl get pods -o json` every 2 s becomes a file_sd
// target file with the same targets (one per container port of a pod with an IP) and the same
// `__meta_kubernetes_*` labels; the job's relabelling then selects and labels them in Prometheus.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { ensurePrometheus } from '../../chart/prometheus.ts';
import { freePort } from '../../fixtures/relay-process.ts';
import { getJson } from './kubectl.ts';

interface PodMonitor {
  spec: {
    selector: { matchLabels: Record<string, string> };
    podMetricsEndpoints: { port: string; path?: string; interval?: string; relabelings?: Record<string, unknown>[] }[];
  };
}

type Json = Record<string, any>;
/** One entry of a file_sd target file. */
export interface TargetGroup {
  targets: string[];
  labels: Record<string, string>;
}

/** A label or annotation name as Prometheus spells it in a meta label (`app.kubernetes.io/name` -> `app_kubernetes_io_name`). */
const sanitize = (name: string) => name.replace(/[^a-zA-Z0-9_]/g, '_');

/** Kubernetes SD, role pod: a target per container port, with the labels Prometheus' discovery/kubernetes/pod.go sets. */
export function podTargets(pods: Json[]): TargetGroup[] {
  const groups: TargetGroup[] = [];
  for (const pod of pods) {
    if (!pod.status?.podIP) continue;
    const ready = pod.status.conditions?.find((entry: Json) => entry.type === 'Ready')?.status ?? 'unknown';
    const controller = (pod.metadata.ownerReferences ?? []).find((owner: Json) => owner.controller);
    const podLabels: Record<string, string> = {
      __meta_kubernetes_namespace: pod.metadata.namespace,
      __meta_kubernetes_pod_name: pod.metadata.name,
      __meta_kubernetes_pod_ip: pod.status.podIP,
      __meta_kubernetes_pod_ready: String(ready).toLowerCase(),
      __meta_kubernetes_pod_phase: pod.status.phase ?? '',
      __meta_kubernetes_pod_node_name: pod.spec.nodeName ?? '',
      __meta_kubernetes_pod_host_ip: pod.status.hostIP ?? '',
      __meta_kubernetes_pod_uid: pod.metadata.uid,
      ...(controller ? { __meta_kubernetes_pod_controller_kind: controller.kind, __meta_kubernetes_pod_controller_name: controller.name } : {}),
    };
    for (const [name, value] of Object.entries<string>(pod.metadata.labels ?? {})) {
      podLabels[`__meta_kubernetes_pod_label_${sanitize(name)}`] = value;
      podLabels[`__meta_kubernetes_pod_labelpresent_${sanitize(name)}`] = 'true';
    }
    for (const container of pod.spec.containers ?? []) {
      for (const port of container.ports ?? []) {
        groups.push({
          targets: [`${pod.status.podIP}:${port.containerPort}`],
          labels: {
            ...podLabels,
            __meta_kubernetes_pod_container_name: container.name,
            __meta_kubernetes_pod_container_image: container.image ?? '',
            __meta_kubernetes_pod_container_port_name: port.name ?? '',
            __meta_kubernetes_pod_container_port_number: String(port.containerPort),
            __meta_kubernetes_pod_container_port_protocol: port.protocol ?? 'TCP',
          },
        });
      }
    }
  }
  return groups;
}

/** The scrape job prometheus-operator derives from a PodMonitor, its targets read from `targetFile`. */
export function scrapeJob(monitor: PodMonitor, targetFile: string): Record<string, unknown> {
  const endpoint = monitor.spec.podMetricsEndpoints[0]!;
  return {
    job_name: 'podmonitor',
    scrape_interval: '2s',
    metrics_path: endpoint.path ?? '/metrics',
    file_sd_configs: [{ files: [targetFile], refresh_interval: '2s' }],
    relabel_configs: [
      { source_labels: ['__meta_kubernetes_pod_phase'], regex: '(Failed|Succeeded)', action: 'drop' },
      ...Object.entries(monitor.spec.selector.matchLabels).map(([label, value]) => (
        { source_labels: [`__meta_kubernetes_pod_label_${sanitize(label)}`, `__meta_kubernetes_pod_labelpresent_${sanitize(label)}`], regex: `(${value});true`, action: 'keep' }
      )),
      { source_labels: ['__meta_kubernetes_pod_container_port_name'], regex: endpoint.port, action: 'keep' },
      { source_labels: ['__meta_kubernetes_namespace'], target_label: 'namespace' },
      { source_labels: ['__meta_kubernetes_pod_container_name'], target_label: 'container' },
      { source_labels: ['__meta_kubernetes_pod_name'], target_label: 'pod' },
      ...(endpoint.relabelings ?? []).map((rule) => ({ source_labels: rule.sourceLabels, target_label: rule.targetLabel, action: rule.action, regex: rule.regex, replacement: rule.replacement, separator: rule.separator })),
    ].map((rule) => Object.fromEntries(Object.entries(rule).filter(([, value]) => value !== undefined))),
  };
}

export interface HostPrometheus {
  /** Result vector of an instant query. */
  query(expression: string): Promise<{ metric: Record<string, string>; value: [number, string] }[]>;
  stop(): Promise<void>;
}

/** Starts Prometheus with the PodMonitor's job over the pods of `namespaces`, rediscovered every 2 s. */
export async function startPrometheus(monitor: PodMonitor, namespaces: string[]): Promise<HostPrometheus> {
  ensurePrometheus();
  const directory = mkdtempSync(join(tmpdir(), 'vmta-cluster-prometheus-'));
  const targetFile = join(directory, 'pods.json');
  const discover = async () => {
    const pods = (await Promise.all(namespaces.map((namespace) => getJson<{ items: Json[] }>(['-n', namespace, 'get', 'pods'])))).flatMap((list) => list.items);
    writeFileSync(`${targetFile}.new`, JSON.stringify(podTargets(pods)));
    renameSync(`${targetFile}.new`, targetFile);
  };
  await discover();
  let discoveryError: unknown;
  const rediscovery = setInterval(() => void discover().catch((error: unknown) => (discoveryError = error)), 2000);
  writeFileSync(join(directory, 'prometheus.yml'), stringify({ global: { scrape_interval: '2s' }, scrape_configs: [scrapeJob(monitor, targetFile)] }));
  const port = await freePort();
  let log = '';
  const server: ChildProcess = spawn('prometheus', [`--config.file=${join(directory, 'prometheus.yml')}`, `--storage.tsdb.path=${join(directory, 'data')}`, `--web.listen-address=127.0.0.1:${port}`], { stdio: ['ignore', 'pipe', 'pipe'] });
  server.stdout!.on('data', (chunk: Buffer) => (log += chunk.toString()));
  server.stderr!.on('data', (chunk: Buffer) => (log += chunk.toString()));
  return {
    async query(expression) {
      if (server.exitCode !== null) throw new Error(`prometheus exited with ${server.exitCode}: ${log.slice(-1500)}`);
      if (discoveryError) throw new Error(`pod discovery failed: ${discoveryError instanceof Error ? discoveryError.message : String(discoveryError)}`);
      const response = await fetch(`http://127.0.0.1:${port}/api/v1/query?query=${encodeURIComponent(expression)}`);
      const body = (await response.json()) as { data: { result: { metric: Record<string, string>; value: [number, string] }[] } };
      return body.data.result;
    },
    async stop() {
      clearInterval(rediscovery);
      if (server.exitCode === null) {
        server.kill('SIGTERM');
        await new Promise((resolve) => server.once('exit', resolve));
      }
      rmSync(directory, { recursive: true, force: true });
    },
  };
}
