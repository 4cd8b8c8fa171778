// How the controller learns which configuration a relay pod runs: the relay reports the hash of
// the relay.yaml it loaded at `GET /config` -> `{ "hash": ... }` on its admin port. The reader is
// pluggable so tests against the fake API server (which runs no pods) can answer for the pods.
import { ADMIN_PORT } from '../render/layout.ts';
import type { KubeObject } from '../kube/types.ts';
import { getPodAdminJson } from './pod-admin-json.ts';

/** Resolves to the config hash a pod reports, or undefined when it cannot be read. */
export type ConfigHashReader = (pod: KubeObject) => Promise<string | undefined>;

export function httpConfigHashReader(options: { port?: number; timeoutMs?: number } = {}): ConfigHashReader {
  const port = options.port ?? ADMIN_PORT;
  const timeoutMs = options.timeoutMs ?? 2000;
  return async (pod) => {
    const body = (await getPodAdminJson(pod, '/config', port, timeoutMs)) as { hash?: unknown } | undefined;
    return typeof body?.hash === 'string' ? body.hash : undefined;
  };
}
