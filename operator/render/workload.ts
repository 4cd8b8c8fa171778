// The pods of a pool: a StatefulSet with a claim per pod for a durable spool (the default,
// claims retained on scale-down and delete) or a Deployment with an emptyDir (`spool.mode:
// ephemeral`). The pod template holds only cold fields (image, ports, network, resources,
// storage, mounted Secrets); everything the relay can take live is in the ConfigMap, mounted
// as a directory (not subPath) so the kubelet updates it in place.
import type { VirtualMtaPool } from '../api/virtual-mta-pool.ts';
import type { DesiredObject } from './contract.ts';
import {
  ADMIN_PORT,
  CONFIG_DIR,
  POD_TEMPLATE_HASH_ANNOTATION,
  poolLabels,
  PRE_STOP_SLEEP_SECONDS,
  RELAY_SHUTDOWN_SECONDS,
  RELAY_USER_ID,
  secretDir,
  selectorLabels,
  SPOOL_DIR,
  TERMINATION_GRACE_SECONDS,
  TMP_DIR,
} from './layout.ts';
import { compact, type ListenerPlan } from './runtime-config.ts';
import { RELAY_NODE_OPTIONS } from '../../mta/process-options.ts';
import { FLEET_DIR, fleetConfigMapName } from './fleet.ts';

export interface WorkloadInputs {
  pool: VirtualMtaPool;
  image: string;
  listeners: ListenerPlan[];
  secretNames: string[];
  configMapName: string;
  headlessServiceName: string;
  metadata: (name: string) => DesiredObject['metadata'];
}

/** Container port name of a listener: unique per pod because ports are. */
/** The relay's container in a pool pod (the operator reads its status: fleet membership). */
export const RELAY_CONTAINER = 'relay';

export function listenerPortName(plan: ListenerPlan): string {
  return `smtp-${plan.resolved.port}`;
}

/** The pod template without its hash annotation: exactly the cold fields. */
export function podTemplate(inputs: WorkloadInputs): { metadata: { labels: Record<string, string>; annotations: Record<string, string> }; spec: Record<string, unknown> } {
  const { pool } = inputs;
  const spec = pool.spec;
  const hostNetwork = spec.egress.mode === 'hostNetwork';
  const secretVolumes = inputs.secretNames.map((secretName, index) => ({ name: `secret-${index}`, secretName }));
  const volumes: Record<string, unknown>[] = [
    { name: 'config', configMap: { name: inputs.configMapName } },
    ...secretVolumes.map((volume) => ({ name: volume.name, secret: { secretName: volume.secretName, defaultMode: 0o440 } })),
    { name: 'tmp', emptyDir: { sizeLimit: '64Mi' } },
  ];
  if (spec.spool.mode === 'ephemeral') volumes.push({ name: 'spool', emptyDir: { sizeLimit: spec.spool.size } });
  // The membership the pool's limits are shared by: its own ConfigMap, so its changes are no template change.
  volumes.push({ name: 'fleet', configMap: { name: fleetConfigMapName(pool.metadata.name) } });
  const adminProbe = (path: string) => ({ httpGet: { path, port: 'admin' } });
  const container = compact({
    name: RELAY_CONTAINER,
    image: spec.image ?? inputs.image,
    imagePullPolicy: 'IfNotPresent',
    args: ['mta', '--config', CONFIG_DIR, '--shutdown-timeout', `${RELAY_SHUTDOWN_SECONDS}s`],
    ports: [
      ...inputs.listeners.map((plan) => ({ name: listenerPortName(plan), containerPort: plan.relayPort, protocol: 'TCP' })),
      { name: 'admin', containerPort: ADMIN_PORT, protocol: 'TCP' },
    ],
    env: [
      { name: 'POD_NAME', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } },
      { name: 'POD_NAMESPACE', valueFrom: { fieldRef: { fieldPath: 'metadata.namespace' } } },
      { name: 'NODE_OPTIONS', value: RELAY_NODE_OPTIONS },
    ],
    resources: spec.pod?.resources ?? {},
    // Spool recovery after a crash may take a while; liveness starts only once it is done.
    startupProbe: { ...adminProbe('/healthz'), periodSeconds: 2, failureThreshold: 150 },
    livenessProbe: { ...adminProbe('/healthz'), periodSeconds: 10, timeoutSeconds: 3, failureThreshold: 6 },
    readinessProbe: { ...adminProbe('/readyz'), periodSeconds: 5, timeoutSeconds: 3, failureThreshold: 2 },
    // Native sleep action (Kubernetes 1.30+): the image needs no shell. Keeps accepting while endpoints drop the pod.
    lifecycle: { preStop: { sleep: { seconds: PRE_STOP_SLEEP_SECONDS } } },
    securityContext: { allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, runAsNonRoot: true, capabilities: { drop: ['ALL'] } },
    volumeMounts: [
      { name: 'config', mountPath: CONFIG_DIR, readOnly: true },
      ...secretVolumes.map((volume) => ({ name: volume.name, mountPath: secretDir(volume.secretName), readOnly: true })),
      { name: 'spool', mountPath: SPOOL_DIR },
      { name: 'tmp', mountPath: TMP_DIR },
      { name: 'fleet', mountPath: FLEET_DIR, readOnly: true },
    ],
  });
  return {
    metadata: { labels: poolLabels(pool.metadata.name), annotations: { ...(spec.pod?.annotations ?? {}) } },
    spec: compact({
      automountServiceAccountToken: false,
      enableServiceLinks: false,
      hostNetwork: hostNetwork || undefined,
      dnsPolicy: hostNetwork ? 'ClusterFirstWithHostNet' : undefined,
      securityContext: { runAsNonRoot: true, runAsUser: RELAY_USER_ID, runAsGroup: RELAY_USER_ID, fsGroup: RELAY_USER_ID, fsGroupChangePolicy: 'OnRootMismatch', seccompProfile: { type: 'RuntimeDefault' } },
      terminationGracePeriodSeconds: TERMINATION_GRACE_SECONDS,
      nodeSelector: spec.pod?.nodeSelector,
      tolerations: spec.pod?.tolerations,
      priorityClassName: spec.pod?.priorityClassName,
      containers: [container],
      volumes,
    }),
  };
}

/** StatefulSet (persistent spool) or Deployment (ephemeral spool) with the hashed template. */
export function workload(inputs: WorkloadInputs, podTemplateHash: string): DesiredObject {
  const { pool } = inputs;
  const name = pool.metadata.name;
  const base = podTemplate(inputs);
  const template = { metadata: { ...base.metadata, annotations: { ...base.metadata.annotations, [POD_TEMPLATE_HASH_ANNOTATION]: podTemplateHash } }, spec: base.spec };
  const selector = { matchLabels: selectorLabels(name) };
  if (pool.spec.spool.mode === 'ephemeral') {
    return {
      apiVersion: 'apps/v1',
      kind: 'Deployment',
      metadata: inputs.metadata(name),
      spec: { replicas: pool.spec.replicas, selector, strategy: { type: 'RollingUpdate', rollingUpdate: { maxUnavailable: 0, maxSurge: 1 } }, template },
    };
  }
  return {
    apiVersion: 'apps/v1',
    kind: 'StatefulSet',
    metadata: inputs.metadata(name),
    spec: {
      replicas: pool.spec.replicas,
      serviceName: inputs.headlessServiceName,
      podManagementPolicy: 'Parallel',
      selector,
      updateStrategy: { type: 'RollingUpdate' },
      persistentVolumeClaimRetentionPolicy: { whenDeleted: 'Retain', whenScaled: 'Retain' },
      template,
      volumeClaimTemplates: [
        {
          apiVersion: 'v1',
          kind: 'PersistentVolumeClaim',
          metadata: { name: 'spool', labels: selectorLabels(name) },
          spec: compact({ accessModes: ['ReadWriteOnce'], storageClassName: pool.spec.spool.storageClassName, resources: { requests: { storage: pool.spec.spool.size } } }),
        },
      ],
    },
  };
}
