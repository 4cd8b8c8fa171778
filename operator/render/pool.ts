// Render one VirtualMtaPool and the listeners and policies it serves into the objects the
// controller applies: the ConfigMap with relay.yaml, the workload, Services and a
// PodDisruptionBudget. A pool with a cross-object problem renders no objects, so the
// controller leaves what is running alone. Pure: same inputs, same objects, same hashes.
import { API_GROUP_VERSION } from '../api/fields.ts';
import type { RelayPolicy } from '../api/relay-policy.ts';
import type { SmtpListener } from '../api/smtp-listener.ts';
import type { VirtualMtaPool } from '../api/virtual-mta-pool.ts';
import type { DesiredObject, PoolRenderResult, RenderProblem } from './contract.ts';
import { CONFIG_FILE, CONFIG_HASH_ANNOTATION, poolLabels } from './layout.ts';
import { reference, renderRuntimeConfig, sha256, type RuntimeConfigRender, type SecretSummary } from './runtime-config.ts';
import { headlessService, headlessServiceName, listenerService, listenerServiceName, podDisruptionBudget } from './services.ts';
import { podTemplate, workload, type WorkloadInputs } from './workload.ts';

export type { SecretSummary };

export interface PoolRenderInput {
  pool: VirtualMtaPool;
  /** Every SmtpListener of the namespace; those whose poolRef names this pool are rendered. */
  listeners: SmtpListener[];
  /** Every RelayPolicy of the namespace. */
  policies: RelayPolicy[];
  /** Names of the namespace's RelayPolicies that fail validation (they report on their own status). */
  invalidPolicyNames?: readonly string[];
  /** Names and keys of the namespace's Secrets (values are never needed). */
  secrets: SecretSummary[];
  /** Relay image when the pool does not set `spec.image` (the operator's own image). */
  image: string;
  /** Defaults to the pool's metadata.namespace, then "default". */
  namespace?: string;
}

/** PoolRenderResult plus the runtime config render local mode needs. */
export interface PoolRender extends PoolRenderResult {
  runtime: RuntimeConfigRender;
}

export function configMapName(poolName: string): string {
  return `${poolName}-config`;
}

export function renderPool(input: PoolRenderInput): PoolRender {
  const { pool } = input;
  const poolName = pool.metadata.name;
  const namespace = input.namespace ?? pool.metadata.namespace ?? 'default';
  const listeners = input.listeners.filter((listener) => listener.spec.poolRef.name === poolName);
  const runtime = renderRuntimeConfig({ pool, listeners, policies: input.policies, invalidPolicyNames: input.invalidPolicyNames, secrets: input.secrets, namespace });
  const problems = [...runtime.problems];
  for (const plan of runtime.listeners) {
    const serviceName = listenerServiceName(poolName, plan.listener.metadata.name);
    if (serviceName.length > 63) {
      problems.push({ reason: 'NameTooLong', message: `SmtpListener "${plan.listener.metadata.name}" metadata.name: its Service "${serviceName}" would exceed 63 characters; shorten the listener or pool name`, object: reference(plan.listener) });
    }
  }

  const metadata = poolObjectMetadata(pool, namespace);

  const workloadInputs: WorkloadInputs = {
    pool,
    image: input.image,
    listeners: runtime.listeners,
    secretNames: runtime.secretNames,
    configMapName: configMapName(poolName),
    headlessServiceName: headlessServiceName(poolName),
    metadata,
  };
  const podTemplateHash = coldHash(pool, workloadInputs);
  if (problems.length > 0) return { objects: [], configHash: runtime.configHash, podTemplateHash, problems, runtime };

  const configMap: DesiredObject = {
    apiVersion: 'v1',
    kind: 'ConfigMap',
    metadata: metadata(configMapName(poolName), { annotations: { [CONFIG_HASH_ANNOTATION]: runtime.configHash } }),
    data: { [CONFIG_FILE]: runtime.text },
  };
  const objects = [
    configMap,
    workload(workloadInputs, podTemplateHash),
    headlessService(pool, runtime.listeners, metadata),
    ...runtime.listeners.map((plan) => listenerService(pool, plan, metadata)),
    podDisruptionBudget(pool, metadata),
  ];
  return { objects, configHash: runtime.configHash, podTemplateHash, problems, runtime };
}

/** Metadata of an object the pool owns: its labels, namespace and controller reference (garbage collected with it). */
export function poolObjectMetadata(pool: VirtualMtaPool, namespace: string) {
  const labels = poolLabels(pool.metadata.name);
  const ownerReferences = pool.metadata.uid
    ? [{ apiVersion: API_GROUP_VERSION, kind: 'VirtualMtaPool', name: pool.metadata.name, uid: pool.metadata.uid, controller: true, blockOwnerDeletion: true }]
    : undefined;
  return (name: string, extra: { labels?: Record<string, string>; annotations?: Record<string, string> } = {}): DesiredObject['metadata'] => {
    const meta: DesiredObject['metadata'] = { name, namespace, labels: { ...labels, ...extra.labels } };
    if (extra.annotations && Object.keys(extra.annotations).length > 0) meta.annotations = extra.annotations;
    if (ownerReferences) meta.ownerReferences = ownerReferences;
    return meta;
  };
}

/**
 * The hash of the cold fields: the pod template itself (which holds nothing hot) plus the
 * VirtualMTAs' source addresses and the session process count, which live in relay.yaml but need
 * a new pod to take effect (the count left out while unset, so pools without it keep their hash).
 */
function coldHash(pool: VirtualMtaPool, inputs: WorkloadInputs): string {
  const sourceAddresses = pool.spec.virtualMtas.map((vmta) => [vmta.name, vmta.sourceAddress ?? null]);
  const { mode, size, storageClassName } = pool.spec.spool; // minFree and reserve are in relay.yaml, hot
  const sessionProcesses = pool.spec.sessionProcesses === undefined ? {} : { sessionProcesses: pool.spec.sessionProcesses };
  return sha256(JSON.stringify({ template: podTemplate(inputs), sourceAddresses, spool: { mode, size, storageClassName }, ...sessionProcesses }));
}

export interface NamespaceRenderInput {
  pools: VirtualMtaPool[];
  listeners: SmtpListener[];
  policies: RelayPolicy[];
  secrets: SecretSummary[];
  image: string;
  namespace?: string;
}

export interface NamespaceRender {
  pools: Map<string, PoolRender>;
  /** Problems of listeners that belong to no pool (their poolRef names a missing pool). */
  problems: RenderProblem[];
}

/** Every pool of a namespace, plus the listeners whose pool does not exist. */
export function renderNamespace(input: NamespaceRenderInput): NamespaceRender {
  const pools = new Map<string, PoolRender>();
  for (const pool of input.pools) pools.set(pool.metadata.name, renderPool({ ...input, pool }));
  const problems: RenderProblem[] = input.listeners
    .filter((listener) => !pools.has(listener.spec.poolRef.name))
    .map((listener) => ({
      reason: 'PoolNotFound',
      message: `SmtpListener "${listener.metadata.name}" spec.poolRef.name: no VirtualMtaPool "${listener.spec.poolRef.name}"`,
      object: reference(listener),
    }));
  return { pools, problems };
}
