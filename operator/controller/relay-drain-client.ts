// How the controller talks to the drain API of a relay pod (mta/drain/drain-api.ts) on its admin
// port: read the drain report, start a drain with peers and a deadline, cancel it. Every call
// carries the pool's admin token. Where a pod's admin API is (and so the hand-over address its
// peers are given) is pluggable: pod IP and port 8025 in a cluster, loopback ports in tests.
import { z } from 'zod';
import type { KubeObject } from '../kube/types.ts';
import { ADMIN_PORT } from '../render/layout.ts';

export const RelayDrainReport = z.object({
  state: z.enum(['idle', 'draining', 'drained', 'incomplete']),
  queuedAtStart: z.number().int().min(0),
  handedOver: z.number().int().min(0),
  delivered: z.number().int().min(0),
  remaining: z.number().int().min(0),
  lastError: z.string().nullable().optional(),
});
export type RelayDrainReport = z.output<typeof RelayDrainReport>;

export interface RelayDrainClient {
  /** host:port of the pod's admin API (what peers hand over to), or undefined without a pod IP. */
  adminAddress(pod: KubeObject): string | undefined;
  /** The pod's drain report, or undefined when it does not answer. */
  report(pod: KubeObject, token: string): Promise<RelayDrainReport | undefined>;
  start(pod: KubeObject, token: string, request: { handOverTo: string[]; deadlineSeconds: number }): Promise<RelayDrainReport | undefined>;
  cancel(pod: KubeObject, token: string): Promise<RelayDrainReport | undefined>;
}

export function httpRelayDrainClient(options: { adminAddress?: (pod: KubeObject) => string | undefined; timeoutMs?: number } = {}): RelayDrainClient {
  const adminAddress =
    options.adminAddress ??
    ((pod: KubeObject) => {
      const podIP = (pod.status as { podIP?: string } | undefined)?.podIP;
      if (!podIP) return undefined;
      return podIP.includes(':') ? `[${podIP}]:${ADMIN_PORT}` : `${podIP}:${ADMIN_PORT}`;
    });
  const call = async (pod: KubeObject, token: string, method: string, body?: unknown): Promise<RelayDrainReport | undefined> => {
    const address = adminAddress(pod);
    if (!address) return undefined;
    try {
      const response = await fetch(`http://${address}/api/v1/drain`, {
        method,
        headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
        signal: AbortSignal.timeout(options.timeoutMs ?? 5000),
      });
      const parsed = RelayDrainReport.safeParse(await response.json());
      return response.ok && parsed.success ? parsed.data : undefined;
    } catch {
      return undefined;
    }
  };
  return {
    adminAddress,
    report: (pod, token) => call(pod, token, 'GET'),
    start: (pod, token, request) => call(pod, token, 'POST', request),
    cancel: (pod, token) => call(pod, token, 'DELETE'),
  };
}
