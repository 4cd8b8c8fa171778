// Where things are inside a relay pod, and the port rule shared by pods and local mode. The
// relay runs as a fixed non-root user with every capability dropped, so it cannot bind ports
// below 1024: it listens on port + 10000 instead (25 -> 10025, 587 -> 10587, 465 -> 10465;
// 2525 stays), and Services map the well-known port to it. Local mode uses the same rule.
import { RUNTIME_CONFIG_FILE } from '../../mta/config/schema.ts';

export const CONFIG_DIR = '/etc/vmta/config';
export const CONFIG_FILE = RUNTIME_CONFIG_FILE;
/** Each referenced Secret is mounted at SECRETS_DIR/<secret name>/ (one file per key). */
export const SECRETS_DIR = '/etc/vmta/secrets';
export const SPOOL_DIR = '/var/spool/vmta';
/** Accounting files live on the spool volume, in this folder of it (the queue is in queue/, state in state/). */
export const ACCOUNTING_DIR = 'accounting';
export const TMP_DIR = '/tmp';
export const ADMIN_PORT = 8025;
export const PRIVILEGED_PORT_OFFSET = 10_000;
/** The image's own USER (Dockerfile): volumes prepared for the image (hostPath, pre-created PVs) fit the pod. */
export const RELAY_USER_ID = 65_532;
/** Seconds the pod keeps receiving traffic after it is marked terminating, while endpoints update. */
export const PRE_STOP_SLEEP_SECONDS = 5;
/** `vmta mta --shutdown-timeout`: how long open sessions may take after SIGTERM. The grace period adds the preStop sleep and a margin for closing the spool. */
export const RELAY_SHUTDOWN_SECONDS = 30;
export const TERMINATION_GRACE_SECONDS = PRE_STOP_SLEEP_SECONDS + RELAY_SHUTDOWN_SECONDS + 25;

export const CONFIG_HASH_ANNOTATION = 'vmta.dev/config-hash';
export const POD_TEMPLATE_HASH_ANNOTATION = 'vmta.dev/pod-template-hash';
export const FIELD_MANAGER = 'vmta-operator';

/** The port the relay process listens on for a listener's port. */
export function relayPort(port: number): number {
  return port < 1024 ? port + PRIVILEGED_PORT_OFFSET : port;
}

export function secretDir(secretName: string): string {
  return `${SECRETS_DIR}/${secretName}`;
}

/** Labels that select a pool's pods (Services, PodDisruptionBudget, workload selector). */
export function selectorLabels(poolName: string): Record<string, string> {
  return { 'app.kubernetes.io/name': 'vmta-relay', 'app.kubernetes.io/instance': poolName };
}

/** The pool's pod selector as a string, for the scale subresource's `status.selector`. */
export function poolSelector(poolName: string): string {
  return Object.entries(selectorLabels(poolName))
    .map(([key, value]) => `${key}=${value}`)
    .join(',');
}

export function poolLabels(poolName: string): Record<string, string> {
  return {
    ...selectorLabels(poolName),
    'app.kubernetes.io/component': 'relay',
    'app.kubernetes.io/part-of': 'vmta',
    'app.kubernetes.io/managed-by': FIELD_MANAGER,
    'vmta.dev/pool': poolName,
  };
}
