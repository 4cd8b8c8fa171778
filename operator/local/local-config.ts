// The one difference between a pod and local mode: where things are. Takes the runtime config
// exactly as the operator renders it into the ConfigMap and rewrites only locations: Secret
// mounts (certificates, users, admin token, DKIM keys) -> files in the work dir, the spool -> the work dir, listeners -> 127.0.0.1 (ports
// keep the pod rule: below 1024 +10000, plus an optional shift to run several copies side by
// side), the admin port -> one per pool, and source addresses this machine does not own are
// left out (the relay could not bind them). Pure.
import path from 'node:path';
import type { RuntimeConfigInput } from '../../mta/config/schema.ts';
import { ADMIN_PORT, SECRETS_DIR, SPOOL_DIR } from '../render/layout.ts';
import { compact } from '../render/runtime-config.ts';

export interface LocalPlacement {
  /** Root of local state: secrets/, pools/<pool>/{config,spool}/. */
  workDir: string;
  poolName: string;
  /** Added to every port (listeners and admin), 0 by default. */
  portShift: number;
  /** Position of the pool among the pools: admin ports are 8025, 8026, ... */
  poolIndex: number;
  /** Addresses of this machine's interfaces. */
  localAddresses: ReadonlySet<string>;
}

export interface LocalConfig {
  config: RuntimeConfigInput;
  /** What was changed for local use that a user should know (left-out source addresses). */
  notes: string[];
}

export function localSecretDir(workDir: string, secretName: string): string {
  return path.join(workDir, 'secrets', secretName);
}

export function localPoolDir(workDir: string, poolName: string): string {
  return path.join(workDir, 'pools', poolName);
}

export function localizeConfig(rendered: RuntimeConfigInput, placement: LocalPlacement): LocalConfig {
  const config = structuredClone(rendered);
  const notes: string[] = [];
  const secretPath = (file: string | undefined) => (file?.startsWith(`${SECRETS_DIR}/`) ? path.join(placement.workDir, 'secrets', file.slice(SECRETS_DIR.length + 1)) : file);
  const poolDir = localPoolDir(placement.workDir, placement.poolName);
  for (const listener of config.listeners) {
    listener.address = '127.0.0.1';
    listener.port += placement.portShift;
    if (listener.tls) {
      listener.tls.certFile = secretPath(listener.tls.certFile);
      listener.tls.keyFile = secretPath(listener.tls.keyFile);
    }
  }
  for (const policy of config.relayPolicies) {
    if (policy.users) policy.users.secretPath = secretPath(policy.users.secretPath) ?? policy.users.secretPath;
  }
  for (const smarthost of [...(config.pool.domainDefaults ?? []), ...config.pool.virtualMtas.flatMap((vmta) => vmta.domains ?? [])].flatMap((block) => block.smarthost ?? [])) {
    if (smarthost.auth) smarthost.auth.secretPath = secretPath(smarthost.auth.secretPath) ?? smarthost.auth.secretPath;
    if (smarthost.caFile) smarthost.caFile = secretPath(smarthost.caFile);
  }
  for (const key of [...(config.pool.dkim?.keys ?? []), ...config.pool.virtualMtas.flatMap((vmta) => vmta.dkimKeys ?? [])]) key.keyFile = secretPath(key.keyFile) ?? key.keyFile;
  if (config.spool.path === SPOOL_DIR) config.spool.path = path.join(poolDir, 'spool');
  config.admin = compact({ ...config.admin, address: '127.0.0.1', port: ADMIN_PORT + placement.poolIndex + placement.portShift, tokenFile: secretPath(config.admin?.tokenFile), readTokenFile: secretPath(config.admin?.readTokenFile) });
  // One local relay per pool: nobody to share the suppression list or the pool's limits with.
  if (config.suppression) config.suppression.peers = [];
  delete config.fleet;
  for (const vmta of config.pool.virtualMtas) {
    if (vmta.sourceAddress && !placement.localAddresses.has(vmta.sourceAddress)) {
      notes.push(`VirtualMTA "${vmta.name}": source address ${vmta.sourceAddress} is not on this machine; sending from the default address instead`);
      delete vmta.sourceAddress;
    }
  }
  return { config, notes };
}

