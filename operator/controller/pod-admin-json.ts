// One unauthenticated GET of a relay pod's admin API (its pod IP, port 8025): the open endpoints
// the controller reads (/config, /egress-proxies, /warmup). Undefined when the pod has no IP yet,
// does not answer in time, answers other than 200, or sends no JSON: the caller treats that as
// "not known".
import http from 'node:http';
import type { KubeObject } from '../kube/types.ts';

export function getPodAdminJson(pod: KubeObject, path: string, port: number, timeoutMs: number): Promise<unknown> {
  const podIP = (pod.status as { podIP?: string } | undefined)?.podIP;
  if (!podIP) return Promise.resolve(undefined);
  return new Promise((resolve) => {
    const req = http.get({ host: podIP, port, path, timeout: timeoutMs }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        try {
          resolve(res.statusCode === 200 ? (JSON.parse(Buffer.concat(chunks).toString('utf8')) as unknown) : undefined);
        } catch {
          resolve(undefined);
        }
      });
      res.on('error', () => resolve(undefined));
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(undefined));
  });
}
