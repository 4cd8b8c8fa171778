// The egress proxy health of a pool for its status: each ready relay pod reports, at the open
// `GET /egress-proxies` of its admin port, whether its last connection through each VirtualMTA's
// SOCKS5 proxies went through (mta/delivery/egress-proxy-health.ts). Per VirtualMTA and proxy the
// status says healthy when every pod that tried it succeeded, unhealthy with the error and the pod
// when one failed, and leaves healthy out while no pod has tried it. Pluggable like the config
// hash reader, so tests against the fake API server can answer for pods.
import type { EgressProxyState } from '../../mta/delivery/egress-proxy-health.ts';
import type { VirtualMtaPool } from '../api/virtual-mta-pool.ts';
import type { KubeObject } from '../kube/types.ts';
import { ADMIN_PORT } from '../render/layout.ts';
import { getPodAdminJson } from './pod-admin-json.ts';

/** The proxy states a pod reports, or undefined when it cannot be read. */
export type EgressProxyReader = (pod: KubeObject) => Promise<EgressProxyState[] | undefined>;

export interface ProxyStatus {
  server: string;
  healthy?: boolean;
  lastError?: string;
  pod?: string;
}

export function httpEgressProxyReader(options: { port?: number; timeoutMs?: number } = {}): EgressProxyReader {
  const port = options.port ?? ADMIN_PORT;
  const timeoutMs = options.timeoutMs ?? 2000;
  return async (pod) => {
    const body = (await getPodAdminJson(pod, '/egress-proxies', port, timeoutMs)) as { proxies?: unknown } | undefined;
    return Array.isArray(body?.proxies) ? (body.proxies as EgressProxyState[]) : undefined;
  };
}

/** Per VirtualMTA with proxies, the status of each of its proxies in spec order, from what the ready pods report. */
export async function egressProxyStatus(pool: VirtualMtaPool, readyPods: readonly KubeObject[], reader: EgressProxyReader): Promise<Map<string, ProxyStatus[]>> {
  const proxied = pool.spec.virtualMtas.filter((vmta) => (vmta.proxies ?? []).length > 0);
  const result = new Map<string, ProxyStatus[]>();
  if (proxied.length === 0) return result;
  const reports = await Promise.all(readyPods.map(async (pod) => ({ pod: pod.metadata.name, states: (await reader(pod)) ?? [] })));
  for (const vmta of proxied) {
    result.set(vmta.name, (vmta.proxies ?? []).map((proxy) => {
      const seen = reports.flatMap(({ pod, states }) => states.filter((state) => state.virtualMta === vmta.name && state.proxy === proxy.server).map((state) => ({ pod, state })));
      const failing = seen.find(({ state }) => state.healthy === false);
      if (failing) return { server: proxy.server, healthy: false, ...(failing.state.lastError ? { lastError: failing.state.lastError.slice(0, 1024) } : {}), pod: failing.pod };
      return seen.some(({ state }) => state.healthy === true) ? { server: proxy.server, healthy: true } : { server: proxy.server };
    }));
  }
  return result;
}
