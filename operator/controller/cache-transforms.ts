// What the operator keeps of each cached object: only the fields it reads. managedFields are
// dropped everywhere, Secrets keep their key names but never their values (rendering needs only
// which keys exist) — of a key holding a PEM private key only its public half and size are kept,
// for the DKIM DNS check, and of every key whether it is a usable SMTP user secret (clear or
// {SCRYPT}) or why not, for the credential check — and pods keep their labels, readiness, IP,
// phase and whether their relay container runs (fleet membership).
import { summarizePrivateKey, type PublicKeySummary } from '../../mta/signing/dkim-keys.ts';
import type { KubeObject } from '../kube/types.ts';
import { RELAY_CONTAINER } from '../render/workload.ts';
import { userSecretVerdict, type UserSecretVerdict } from '../../mta/config/user-secrets.ts';

/** The field of a cached Secret with the public keys of its private-key entries, by Secret key. */
export const PUBLIC_KEYS_FIELD = 'vmtaPublicKeys';
/** The field of a cached Secret with each key's UserSecretVerdict (how it is stored as a user secret, or its problem). */
export const USER_SECRETS_FIELD = 'vmtaUserSecrets';

export function withoutManagedFields(object: KubeObject): KubeObject {
  if (!('managedFields' in object.metadata)) return object;
  const { managedFields: _managedFields, ...metadata } = object.metadata;
  return { ...object, metadata: { ...metadata, name: object.metadata.name } };
}

export function secretKeysOnly(secret: KubeObject): KubeObject {
  const data = (secret.data as Record<string, string> | undefined) ?? {};
  const stringData = (secret.stringData as Record<string, string> | undefined) ?? {};
  const keys = [...Object.keys(data), ...Object.keys(stringData)];
  const publicKeys: Record<string, PublicKeySummary> = {};
  const userSecrets: Record<string, UserSecretVerdict> = {};
  for (const key of keys) {
    const value = key in data ? Buffer.from(data[key] ?? '', 'base64') : Buffer.from(stringData[key] ?? '', 'utf8');
    const summary = summarizePrivateKey(value);
    if (summary) publicKeys[key] = summary;
    userSecrets[key] = userSecretVerdict(value, `key "${key}"`);
  }
  const { name, namespace, uid, resourceVersion } = secret.metadata;
  return { apiVersion: secret.apiVersion, kind: secret.kind, metadata: { name, namespace, uid, resourceVersion }, data: Object.fromEntries(keys.map((key) => [key, ''])), [PUBLIC_KEYS_FIELD]: publicKeys, [USER_SECRETS_FIELD]: userSecrets };
}

interface CachedPodStatus {
  podIP?: string;
  phase?: string;
  conditions?: { type: string; status: string }[];
  containerStatuses?: { name: string; started?: boolean; restartCount?: number; state?: { running?: { startedAt?: string } } }[];
}

export function podReadiness(pod: KubeObject): KubeObject {
  const { name, namespace, uid, resourceVersion, labels, deletionTimestamp } = pod.metadata;
  const status = pod.status as CachedPodStatus | undefined;
  const relay = status?.containerStatuses?.find((container) => container.name === RELAY_CONTAINER);
  const relayState = relay && { name: relay.name, started: relay.started, restartCount: relay.restartCount, state: relay.state?.running ? { running: { startedAt: relay.state.running.startedAt } } : {} };
  return {
    apiVersion: pod.apiVersion,
    kind: pod.kind,
    metadata: { name, namespace, uid, resourceVersion, labels, deletionTimestamp },
    status: {
      podIP: status?.podIP,
      phase: status?.phase,
      conditions: (status?.conditions ?? []).filter((c) => c.type === 'Ready').map(({ type, status: value }) => ({ type, status: value })),
      ...(relayState ? { containerStatuses: [relayState] } : {}),
    },
  };
}
