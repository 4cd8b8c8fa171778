// What the operator keeps of each cached object: only the fields it reads. managedFields are
// dropped everywhere, Secrets keep their key names but never their values (rendering needs only
// which keys exist), pods keep their labels, readiness and IP.
import type { KubeObject } from '../kube/types.ts';

export function withoutManagedFields(object: KubeObject): KubeObject {
  if (!('managedFields' in object.metadata)) return object;
  const { managedFields: _managedFields, ...metadata } = object.metadata;
  return { ...object, metadata: { ...metadata, name: object.metadata.name } };
}

export function secretKeysOnly(secret: KubeObject): KubeObject {
  const keys = [...Object.keys((secret.data as object | undefined) ?? {}), ...Object.keys((secret.stringData as object | undefined) ?? {})];
  const { name, namespace, uid, resourceVersion } = secret.metadata;
  return { apiVersion: secret.apiVersion, kind: secret.kind, metadata: { name, namespace, uid, resourceVersion }, data: Object.fromEntries(keys.map((key) => [key, ''])) };
}

export function podReadiness(pod: KubeObject): KubeObject {
  const { name, namespace, uid, resourceVersion, labels, deletionTimestamp } = pod.metadata;
  const status = pod.status as { podIP?: string; conditions?: { type: string; status: string }[] } | undefined;
  return {
    apiVersion: pod.apiVersion,
    kind: pod.kind,
    metadata: { name, namespace, uid, resourceVersion, labels, deletionTimestamp },
    status: { podIP: status?.podIP, conditions: (status?.conditions ?? []).filter((c) => c.type === 'Ready').map(({ type, status: value }) => ({ type, status: value })) },
  };
}
