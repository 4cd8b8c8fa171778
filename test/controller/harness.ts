// An operator against the fake API server, with the example resources loaded into it and a
// stand-in for the relay admin endpoint: a pod "reports" the hash of the relay.yaml currently in
// its pool's ConfigMap (what a relay that hot-reloaded the mounted ConfigMap would report), or a
// hash the test pins to simulate a relay that has not reloaded yet.
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { parseAllDocuments } from 'yaml';
import { pino } from 'pino';
import { KubeClient, loadKubeConfig } from '../../operator/kube/client.ts';
import type { KubeObject } from '../../operator/kube/types.ts';
import { VmtaOperator, type OperatorOptions } from '../../operator/controller/operator.ts';
import type { ConfigHashReader } from '../../operator/controller/config-hash-reader.ts';
import type { FakeKubeApi, JsonObject } from '../fixtures/fake-kube-api.ts';

export const NAMESPACE = 'mail';
export const IMAGE = 'registry.example/vmta:1.0.0';
const EXAMPLES = path.join(import.meta.dirname, '..', '..', 'examples');

/** The objects of examples/*.yaml as `kubectl apply` would send them. */
export async function exampleObjects(): Promise<JsonObject[]> {
  const objects: JsonObject[] = [];
  for (const file of ['secrets.yaml', 'policies.yaml', 'pool.yaml', 'listeners.yaml']) {
    const text = await readFile(path.join(EXAMPLES, file), 'utf8');
    for (const doc of parseAllDocuments(text)) {
      const value = doc.toJS() as JsonObject | null;
      if (value) objects.push(value);
    }
  }
  return objects;
}

export async function loadExamples(api: FakeKubeApi, namespace = NAMESPACE): Promise<void> {
  for (const object of await exampleObjects()) {
    api.put({ ...object, metadata: { ...(object.metadata as JsonObject), namespace } });
  }
}

/** Pods report the hash of their pool's ConfigMap, unless `pinned` holds a hash for the pod. */
export function fakeRelayReader(api: FakeKubeApi, pinned = new Map<string, string>()): ConfigHashReader {
  return async (pod: KubeObject) => {
    const fixed = pinned.get(pod.metadata.name);
    if (fixed) return fixed;
    const pool = pod.metadata.labels?.['app.kubernetes.io/instance'];
    const configMap = api.get('v1', 'ConfigMap', pod.metadata.namespace, `${pool}-config`);
    const text = (configMap?.data as Record<string, string> | undefined)?.['relay.yaml'];
    return text === undefined ? undefined : createHash('sha256').update(text).digest('hex');
  };
}

export function startOperator(api: FakeKubeApi, kubeconfig: string, options: Partial<OperatorOptions> & { identity?: string } = {}): VmtaOperator {
  const { identity, ...rest } = options;
  const operator = new VmtaOperator({
    client: new KubeClient(loadKubeConfig(kubeconfig), { userAgent: `vmta-operator/${identity ?? 'test'}` }),
    logger: pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' }),
    image: IMAGE,
    configHashReader: fakeRelayReader(api),
    pollIntervalMs: 200,
    ...rest,
  });
  return operator;
}

export interface Condition {
  type: string;
  status: string;
  reason: string;
  message: string;
  observedGeneration?: number;
}

export function condition(object: JsonObject | undefined, type: string): Condition | undefined {
  return ((object?.status as { conditions?: Condition[] } | undefined)?.conditions ?? []).find((c) => c.type === type);
}
