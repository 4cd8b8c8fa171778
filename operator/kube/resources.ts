// The Kubernetes resource types the operator touches, and the exact RBAC verbs it uses on each.
// The client refuses any request not declared here, and config/rbac/role.yaml is generated from
// this table (a test keeps them equal), so the Role grants exactly what the code does.
export interface ResourceType {
  group: string;
  version: string;
  kind: string;
  plural: string;
  namespaced: boolean;
}

export const RESOURCE_TYPES = {
  ConfigMap: { group: '', version: 'v1', kind: 'ConfigMap', plural: 'configmaps', namespaced: true },
  Secret: { group: '', version: 'v1', kind: 'Secret', plural: 'secrets', namespaced: true },
  Service: { group: '', version: 'v1', kind: 'Service', plural: 'services', namespaced: true },
  Pod: { group: '', version: 'v1', kind: 'Pod', plural: 'pods', namespaced: true },
  Event: { group: '', version: 'v1', kind: 'Event', plural: 'events', namespaced: true },
  StatefulSet: { group: 'apps', version: 'v1', kind: 'StatefulSet', plural: 'statefulsets', namespaced: true },
  Deployment: { group: 'apps', version: 'v1', kind: 'Deployment', plural: 'deployments', namespaced: true },
  PodDisruptionBudget: { group: 'policy', version: 'v1', kind: 'PodDisruptionBudget', plural: 'poddisruptionbudgets', namespaced: true },
  Lease: { group: 'coordination.k8s.io', version: 'v1', kind: 'Lease', plural: 'leases', namespaced: true },
  SmtpListener: { group: 'vmta.dev', version: 'v1alpha1', kind: 'SmtpListener', plural: 'smtplisteners', namespaced: true },
  RelayPolicy: { group: 'vmta.dev', version: 'v1alpha1', kind: 'RelayPolicy', plural: 'relaypolicies', namespaced: true },
  VirtualMtaPool: { group: 'vmta.dev', version: 'v1alpha1', kind: 'VirtualMtaPool', plural: 'virtualmtapools', namespaced: true },
} as const satisfies Record<string, ResourceType>;

export type Verb = 'get' | 'list' | 'watch' | 'create' | 'update' | 'patch' | 'delete';

/** One RBAC rule: resource (optionally `plural/subresource`) and the verbs the operator uses on it. */
export interface PermissionRule {
  group: string;
  resources: string[];
  verbs: Verb[];
}

/**
 * Every request the operator makes, by resource. Objects the operator owns are applied and read
 * through informers (list, watch); server-side apply is a PATCH that creates the object when it
 * does not exist yet, which the API server authorizes as `create` (so applying needs both); those a spec change can make unwanted (a listener's
 * Service, the StatefulSet or Deployment when the spool mode changes) are pruned (delete).
 * Secrets and pods are observed; the admin token Secret of a pool is read (get) to authenticate a
 * drain to its relays, and pools are patched for the drain finalizer (vmta.dev/drain).
 * Leases use get/create/update for optimistic-concurrency leader election.
 */
export const OPERATOR_PERMISSIONS: PermissionRule[] = [
  { group: 'vmta.dev', resources: ['smtplisteners', 'relaypolicies', 'virtualmtapools'], verbs: ['list', 'watch'] },
  { group: 'vmta.dev', resources: ['smtplisteners/status', 'relaypolicies/status', 'virtualmtapools/status'], verbs: ['patch'] },
  { group: 'vmta.dev', resources: ['virtualmtapools'], verbs: ['patch'] },
  { group: '', resources: ['services'], verbs: ['list', 'watch', 'create', 'patch', 'delete'] },
  { group: 'apps', resources: ['statefulsets', 'deployments'], verbs: ['list', 'watch', 'create', 'patch', 'delete'] },
  { group: '', resources: ['configmaps'], verbs: ['list', 'watch', 'create', 'patch'] },
  { group: 'policy', resources: ['poddisruptionbudgets'], verbs: ['list', 'watch', 'create', 'patch'] },
  { group: '', resources: ['secrets', 'pods'], verbs: ['list', 'watch'] },
  { group: '', resources: ['secrets'], verbs: ['get'] },
  { group: '', resources: ['events'], verbs: ['create', 'patch'] },
  { group: 'coordination.k8s.io', resources: ['leases'], verbs: ['get', 'create', 'update'] },
];

export function isPermitted(group: string, resource: string, verb: Verb): boolean {
  return OPERATOR_PERMISSIONS.some((rule) => rule.group === group && rule.resources.includes(resource) && rule.verbs.includes(verb));
}

export function apiVersionOf(type: ResourceType): string {
  return type.group === '' ? type.version : `${type.group}/${type.version}`;
}

export function resourceTypeOf(apiVersion: string, kind: string): ResourceType {
  const found = Object.values(RESOURCE_TYPES).find((t) => apiVersionOf(t) === apiVersion && t.kind === kind);
  if (!found) throw new Error(`unknown resource type ${apiVersion} ${kind}: add it to operator/kube/resources.ts`);
  return found;
}

/** The REST path of a collection (no name) or an object, optionally a subresource. */
export function resourcePath(type: ResourceType, namespace?: string, name?: string, subresource?: string): string {
  const base = type.group === '' ? `/api/${type.version}` : `/apis/${type.group}/${type.version}`;
  const ns = type.namespaced && namespace ? `/namespaces/${encodeURIComponent(namespace)}` : '';
  const object = name ? `/${encodeURIComponent(name)}${subresource ? `/${subresource}` : ''}` : '';
  return `${base}${ns}/${type.plural}${object}`;
}
