// How the controller learns which configuration a relay pod runs: the relay reports the hash of
// the relay.yaml it loaded at `GET /config` -> `{ "hash": ... }` on its admin port. The reader is
// pluggable so tests against the fake API server (which runs no pods) can answer for the pods.
import http from 'node:http';
import { ADMIN_PORT } from '../render/layout.ts';
import type { KubeObject } from '../kube/types.ts';

/** Resolves to the config hash a pod reports, or undefined when it cannot be read. */
export type ConfigHashReader = (pod: KubeObject) => Promise<string | undefined>;

export function httpConfigHashReader(options: { port?: number; timeoutMs?: number } = {}): ConfigHashReader {
  const port = options.port ?? ADMIN_PORT;
  const timeoutMs = options.timeoutMs ?? 2000;
  return (pod) => {
    const podIP = (pod.status as { podIP?: string } | undefined)?.podIP;
    if (!podIP) return Promise.resolve(undefined);
    return new Promise((resolve) => {
      const req = http.get({ host: podIP, port, path: '/config', timeout: timeoutMs }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          try {
            const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { hash?: unknown };
            resolve(res.statusCode === 200 && typeof body.hash === 'string' ? body.hash : undefined);
          } catch {
            resolve(undefined);
          }
        });
        res.on('error', () => resolve(undefined));
      });
      req.on('timeout', () => req.destroy());
      req.on('error', () => resolve(undefined));
    });
  };
}
