// The example resources of examples/, parsed, for render tests to vary one field at a time.
import path from 'node:path';
import { loadResourceDir, secretSummaries } from '../../operator/local/resource-files.ts';
import type { PoolRenderInput } from '../../operator/render/pool.ts';
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
