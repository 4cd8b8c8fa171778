// How a pool is reached and protected: one Service per SmtpListener (its `service` settings;
// LoadBalancer and NodePort keep client addresses with `externalTrafficPolicy: Local` unless
// told otherwise), a headless Service for the StatefulSet's pod DNS and the admin port, and a
// PodDisruptionBudget that lets drains move one pod at a time.
import type { VirtualMtaPool } from '../api/virtual-mta-pool.ts';
import type { DesiredObject } from './contract.ts';
import { ADMIN_PORT, selectorLabels } from './layout.ts';
import { compact, type ListenerPlan } from './runtime-config.ts';
import { listenerPortName } from './workload.ts';

export function listenerServiceName(poolName: string, listenerName: string): string {
  return `${poolName}-${listenerName}`;
}

export function headlessServiceName(poolName: string): string {
  return `${poolName}-headless`;
}

type Metadata = (name: string, extra?: { labels?: Record<string, string>; annotations?: Record<string, string> }) => DesiredObject['metadata'];

export function listenerService(pool: VirtualMtaPool, plan: ListenerPlan, metadata: Metadata): DesiredObject {
  const service = plan.listener.spec.service ?? { type: 'ClusterIP' as const };
  const external = service.type !== 'ClusterIP';
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: metadata(listenerServiceName(pool.metadata.name, plan.listener.metadata.name), {
      labels: { 'vmta.dev/listener': plan.listener.metadata.name },
      annotations: service.annotations ?? {},
    }),
    spec: compact({
      type: service.type,
      selector: selectorLabels(pool.metadata.name),
      ports: [compact({ name: 'smtp', port: service.port ?? plan.resolved.port, targetPort: listenerPortName(plan), protocol: 'TCP', nodePort: service.nodePort })],
      externalTrafficPolicy: external ? (service.externalTrafficPolicy ?? 'Local') : undefined,
      loadBalancerSourceRanges: service.loadBalancerSourceRanges,
    }),
  };
}

export function headlessService(pool: VirtualMtaPool, listeners: ListenerPlan[], metadata: Metadata): DesiredObject {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: metadata(headlessServiceName(pool.metadata.name)),
    spec: {
      clusterIP: 'None',
      publishNotReadyAddresses: true,
      selector: selectorLabels(pool.metadata.name),
      ports: [
        ...listeners.map((plan) => ({ name: listenerPortName(plan), port: plan.resolved.port, targetPort: listenerPortName(plan), protocol: 'TCP' })),
        { name: 'admin', port: ADMIN_PORT, targetPort: 'admin', protocol: 'TCP' },
      ],
    },
  };
}

export function podDisruptionBudget(pool: VirtualMtaPool, metadata: Metadata): DesiredObject {
  return {
    apiVersion: 'policy/v1',
    kind: 'PodDisruptionBudget',
    metadata: metadata(pool.metadata.name),
    spec: { maxUnavailable: 1, selector: { matchLabels: selectorLabels(pool.metadata.name) }, unhealthyPodEvictionPolicy: 'AlwaysAllow' },
  };
}
