// The example resources of examples/, parsed, for render tests to vary one field at a time.
import path from 'node:path';
import { parse } from 'yaml';
import { RuntimeConfig } from '../../mta/config/schema.ts';
import { loadResourceDir, secretSummaries } from '../../operator/local/resource-files.ts';
import type { PoolRender, PoolRenderInput } from '../../operator/render/pool.ts';
import { REPOSITORY_ROOT } from '../../scripts/generated-files.ts';

export async function exampleInput(): Promise<PoolRenderInput> {
  const loaded = await loadResourceDir(path.join(REPOSITORY_ROOT, 'examples'));
  if (loaded.errors.length > 0) throw new Error(loaded.errors.join('\n'));
  const { pools, listeners, policies, secrets } = loaded.resources;
  const pool = pools[0];
  if (!pool) throw new Error('examples/ has no VirtualMtaPool');
  return { pool, listeners, policies, secrets: secretSummaries(secrets), image: 'registry.example/vmta:1.0.0', namespace: 'mail' };
}

/** A deep copy to change one field in. */
export function copy<T>(value: T): T {
  return structuredClone(value);
}

/** relay.yaml of a render's ConfigMap, parsed as the relay parses it. */
export function renderedRelayConfig(result: PoolRender): RuntimeConfig {
  const configMap = result.objects.find((object) => object.kind === 'ConfigMap') as unknown as { data: Record<string, string> };
  return RuntimeConfig.parse(parse(configMap.data['relay.yaml']!));
}

/** Where the rendered StatefulSet's relay container mounts its volumes. */
export function relayMountPaths(result: PoolRender): string[] {
  const workload = result.objects.find((object) => object.kind === 'StatefulSet') as unknown as { spec: { template: { spec: { containers: { volumeMounts: { mountPath: string }[] }[] } } } };
  return workload.spec.template.spec.containers[0]!.volumeMounts.map((mount) => mount.mountPath);
}
