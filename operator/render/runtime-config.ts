// Resources -> the relay's runtime config (`relay.yaml`) for one pool, and the cross-object
// problems that stop it: a listener naming a missing policy, two listeners on one port, a missing
// Secret or key, unusable AUTH credentials (credential-check.ts), a routing rule naming a
// VirtualMTA the pool lacks, a warm-up overflow naming a missing, warming or the same VirtualMTA.
// Secrets are referenced by the path where the pod mounts them, never copied. Pure: no I/O.
import { createHash } from 'node:crypto';
import { stringify } from 'yaml';
import { describeIssue, formatPath } from '../../mta/config/parse.ts';
import { warmupProblems } from '../../mta/config/warmup-plan.ts';
import { RUNTIME_CONFIG_API_VERSION, RuntimeConfig, type RuntimeConfigInput } from '../../mta/config/schema.ts';
import type { UserSecretVerdict } from '../../mta/config/user-secrets.ts';
import type { DomainSettings } from '../api/domain-settings.ts';
import { API_GROUP_VERSION } from '../api/fields.ts';
import type { RelayPolicy } from '../api/relay-policy.ts';
import { resolveListener, type ResolvedListener, type SmtpListener } from '../api/smtp-listener.ts';
import type { VirtualMtaPool } from '../api/virtual-mta-pool.ts';
import type { ObjectReference, RenderProblem } from './contract.ts';
import { credentialProblems } from './credential-check.ts';
import { dkimConfig, dkimKeyConfig, dkimKeysWithFields } from './dkim-config.ts';
import { ACCOUNTING_DIR, ADMIN_PORT, relayPort, secretDir, SPOOL_DIR } from './layout.ts';
import { quantityBytes } from './quantity.ts';
import { headlessServiceName } from './services.ts';
import { FLEET_DIR, FLEET_FILE } from './fleet.ts';
import { smarthostConfig, smarthostSecrets } from './smarthost-config.ts';

/** What render may know of a Secret: its name and the keys it holds, never the values. */
export interface SecretSummary {
  name: string;
  keys: string[];
  /** Each key as an SMTP user secret: how it is stored or why it is unusable (never the value). */
  userSecrets?: Record<string, UserSecretVerdict>;
}

export interface RuntimeConfigInputs {
  pool: VirtualMtaPool;
  /** The listeners whose poolRef names this pool. */
  listeners: SmtpListener[];
  /** Every RelayPolicy of the namespace (those the listeners name are used). */
  policies: RelayPolicy[];
  /** Policies that exist but fail validation: a listener naming one is told so, not that it is missing. */
  invalidPolicyNames?: readonly string[];
  secrets: SecretSummary[];
  /** The pool's namespace: the tenant of its accounting records. */
  namespace: string;
}

export interface ListenerPlan {
  listener: SmtpListener;
  resolved: ResolvedListener;
  /** The port the relay process binds (see layout.ts). */
  relayPort: number;
}

export interface RuntimeConfigRender {
  config: RuntimeConfigInput;
  /** relay.yaml as written to the ConfigMap. */
  text: string;
  /** sha256 hex of `text`. */
  configHash: string;
  listeners: ListenerPlan[];
  /** Secret names the pods mount, sorted. */
  secretNames: string[];
  problems: RenderProblem[];
}

const TLS_KEYS = ['tls.crt', 'tls.key'];
export const ADMIN_TOKEN_KEY = 'token';

export function reference(object: SmtpListener | RelayPolicy | VirtualMtaPool): ObjectReference {
  return { apiVersion: API_GROUP_VERSION, kind: object.kind, namespace: object.metadata.namespace, name: object.metadata.name };
}

export function sha256(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

export function renderRuntimeConfig(inputs: RuntimeConfigInputs): RuntimeConfigRender {
  const { pool } = inputs;
  const problems: RenderProblem[] = [];
  const problem = (object: SmtpListener | RelayPolicy | VirtualMtaPool, reason: string, message: string) =>
    problems.push({ reason, message: `${object.kind} "${object.metadata.name}" ${message}`, object: reference(object) });

  const secrets = new Map(inputs.secrets.map((secret) => [secret.name, new Set(secret.keys)]));
  const secretNames = new Set<string>();
  const requireSecret = (object: SmtpListener | RelayPolicy | VirtualMtaPool, field: string, name: string, keys: string[]): boolean => {
    const present = secrets.get(name);
    if (!present) {
      problem(object, 'SecretNotFound', `${field}: no Secret "${name}"`);
      return false;
    }
    const missing = keys.filter((key) => !present.has(key));
    if (missing.length > 0) problem(object, 'SecretKeyMissing', `${field}: Secret "${name}" has no key ${missing.map((key) => `"${key}"`).join(', ')}`);
    secretNames.add(name);
    return missing.length === 0;
  };

  const listeners = [...inputs.listeners].sort(byName).map((listener) => {
    const resolved = resolveListener(listener.spec);
    return { listener, resolved, relayPort: relayPort(resolved.port) };
  });
  const portOwners = new Map<number, string>();
  for (const plan of listeners) {
    for (const port of new Set([plan.resolved.port, plan.relayPort])) {
      const owner = portOwners.get(port);
      if (owner) problem(plan.listener, 'PortConflict', `spec.port: port ${port} is already used by SmtpListener "${owner}" in pool "${pool.metadata.name}"`);
      else portOwners.set(port, plan.listener.metadata.name);
    }
  }

  const policyByName = new Map(inputs.policies.map((policy) => [policy.metadata.name, policy]));
  const usedPolicies = new Map<string, RelayPolicy>();
  for (const { listener } of listeners) {
    const name = listener.spec.relayPolicyRef.name;
    const policy = policyByName.get(name);
    if (!policy && inputs.invalidPolicyNames?.includes(name)) problem(listener, 'PolicyInvalid', `spec.relayPolicyRef.name: RelayPolicy "${name}" is invalid (its Ready condition says why), so nothing is rendered`);
    else if (!policy) problem(listener, 'PolicyNotFound', `spec.relayPolicyRef.name: no RelayPolicy "${name}"`);
    else usedPolicies.set(name, policy);
    const secretName = listener.spec.tls?.secretName;
    if (secretName && listener.spec.tls?.mode !== 'none') requireSecret(listener, 'spec.tls.secretName', secretName, TLS_KEYS);
  }

  const vmtaNames = new Set(pool.spec.virtualMtas.map((vmta) => vmta.name));
  const policies = [...usedPolicies.values()].sort(byName);
  for (const policy of policies) {
    const users = policy.spec.users;
    if (users) {
      const senders = users.senders ?? [];
      if (requireSecret(policy, 'spec.users.secretName', users.secretName, senders.map((sender) => sender.user)) && secrets.get(users.secretName)?.size === 0) {
        problem(policy, 'SecretKeyMissing', `spec.users.secretName: Secret "${users.secretName}" holds no users`);
      }
    }
    policy.spec.routing?.rules?.forEach((rule, index) => {
      if (!vmtaNames.has(rule.virtualMta)) problem(policy, 'VirtualMtaNotFound', `spec.routing.rules[${index}].virtualMta: no VirtualMTA "${rule.virtualMta}" in pool "${pool.metadata.name}"`);
    });
    const fallback = policy.spec.routing?.defaultVirtualMta;
    if (fallback && !vmtaNames.has(fallback)) problem(policy, 'VirtualMtaNotFound', `spec.routing.defaultVirtualMta: no VirtualMTA "${fallback}" in pool "${pool.metadata.name}"`);
  }

  for (const found of credentialProblems(listeners, usedPolicies, inputs.secrets)) problem(found.object, found.reason, found.message);
  for (const field of ['tokenSecretName', 'readTokenSecretName'] as const) {
    const tokenSecret = pool.spec.admin?.[field];
    if (tokenSecret) requireSecret(pool, `spec.admin.${field}`, tokenSecret, [ADMIN_TOKEN_KEY]);
  }
  if (pool.spec.admin?.readTokenSecretName !== undefined && pool.spec.admin.readTokenSecretName === pool.spec.admin.tokenSecretName) {
    problem(pool, 'SameAdminTokens', `spec.admin.readTokenSecretName: "${pool.spec.admin.readTokenSecretName}" is also spec.admin.tokenSecretName; a read-only token must be another Secret (whoever holds it could change the queues)`);
  }
  for (const [index, vmta] of pool.spec.virtualMtas.entries()) {
    for (const [proxyIndex, proxy] of (vmta.proxies ?? []).entries()) {
      if (proxy.credentialsSecretName) requireSecret(pool, `spec.virtualMtas[${index}].proxies[${proxyIndex}].credentialsSecretName`, proxy.credentialsSecretName, EGRESS_PROXY_CREDENTIAL_KEYS);
    }
  }
  for (const found of warmupProblems(pool.spec)) problem(pool, 'InvalidWarmup', `spec.${formatPath(found.path)}: ${found.message} (got ${JSON.stringify(found.input)})`);
  for (const { key, field } of dkimKeysWithFields(pool)) requireSecret(pool, `${field}.secretName`, key.secretName, [key.secretKey]);
  for (const { field, secretName, keys } of smarthostSecrets(pool)) requireSecret(pool, field, secretName, keys);
  const reportingCa = pool.spec.tlsReporting?.https?.caSecretName;
  if (reportingCa) requireSecret(pool, 'spec.tlsReporting.https.caSecretName', reportingCa, [TLS_REPORTING_CA_KEY]);

  const config = buildConfig(pool, listeners, policies, inputs.namespace);
  const checked = RuntimeConfig.safeParse(config, { reportInput: true });
  if (!checked.success && problems.length === 0) {
    for (const issue of checked.error.issues) problem(pool, 'InvalidRuntimeConfig', `renders an invalid relay config: ${describeIssue(issue, config)}`);
  }
  const text = `# Rendered by vmta-operator from VirtualMtaPool "${pool.metadata.name}". Do not edit: edit the resources.\n${stringify(config, { lineWidth: 0 })}`;
  return { config, text, configHash: sha256(text), listeners, secretNames: [...secretNames].sort(), problems };
}

function buildConfig(pool: VirtualMtaPool, listeners: ListenerPlan[], policies: RelayPolicy[], namespace: string): RuntimeConfigInput {
  const spec = pool.spec;
  const firstVmta = spec.virtualMtas[0];
  return {
    apiVersion: RUNTIME_CONFIG_API_VERSION,
    hostname: spec.hostname ?? firstVmta?.hostname ?? pool.metadata.name,
    pool: {
      name: pool.metadata.name,
      selection: spec.selection,
      domainDefaults: (spec.domainDefaults ?? []).map(domainSettings),
      virtualMtas: spec.virtualMtas.map((vmta) =>
        compact({ name: vmta.name, sourceAddress: vmta.sourceAddress, hostname: vmta.hostname, weight: vmta.weight, domains: (vmta.domains ?? []).map(domainSettings), dkimKeys: vmta.dkimKeys?.map(dkimKeyConfig), proxies: vmta.proxies?.map(egressProxyConfig), warmup: vmta.warmup }),
      ),
      ...(spec.dkim ? { dkim: dkimConfig(pool) } : {}),
      ...(spec.providerGroups ? { providerGroups: spec.providerGroups.map(({ domainSettings, ...group }) => compact({ ...group, domainSettings: domainSettings ? compact(retryForm(domainSettings)) : undefined })) } : {}),
      ...(spec.overflowVirtualMtas ? { overflowVirtualMtas: spec.overflowVirtualMtas } : {}),
    },
    listeners: listeners.map(listenerConfig),
    relayPolicies: policies.map(policyConfig),
    spool: { path: SPOOL_DIR, minFreeBytes: quantityBytes(spec.spool.minFree), reserveBytes: quantityBytes(spec.spool.reserve) },
    admin: compact({ port: ADMIN_PORT, tokenFile: tokenFile(spec.admin?.tokenSecretName), readTokenFile: tokenFile(spec.admin?.readTokenSecretName) }),
    ...(spec.sessionProcesses !== undefined ? { sessionProcesses: spec.sessionProcesses } : {}),
    delivery: compact({ resolvers: spec.resolvers, dnssecResolvers: spec.dnssecResolvers, trackedDomains: spec.trackedDomains, delayWarningAfter: spec.dsn?.delayWarningAfter, mxRollup: spec.mxRollup, connectionIdleTimeout: spec.connectionIdleTimeout, maxConnections: spec.maxDeliveryConnections, accounting: spec.accounting ? accountingConfig(spec.accounting, namespace) : undefined }),
    fleet: { membershipFile: `${FLEET_DIR}/${FLEET_FILE}` },
    ...(spec.tlsReporting ? { tlsReporting: tlsReportingConfig(spec.tlsReporting) } : {}),
    ...(spec.suppression ? { suppression: { mode: spec.suppression.mode, hardBounceCategories: spec.suppression.hardBounceCategories, peers: suppressionPeers(pool) } } : {}),
  };
}

/** Accounting files on the spool volume, with the pool's namespace as the records' tenant. */
function accountingConfig(accounting: NonNullable<VirtualMtaPool['spec']['accounting']>, namespace: string): NonNullable<RuntimeConfigInput['delivery']>['accounting'] {
  return compact({
    file: accounting.format === 'csv' ? undefined : `${SPOOL_DIR}/${ACCOUNTING_DIR}/acct.jsonl`,
    csvFile: accounting.format === 'jsonl' ? undefined : `${SPOOL_DIR}/${ACCOUNTING_DIR}/acct.csv`,
    receipts: accounting.receipts,
    jobHeader: accounting.jobHeader,
    tenant: namespace,
    rotate: accounting.rotate ? compact({ maxBytes: accounting.rotate.size === undefined ? undefined : quantityBytes(accounting.rotate.size), interval: accounting.rotate.interval }) : undefined,
    retain: accounting.retain ? compact({ maxFiles: accounting.retain.files, maxAge: accounting.retain.maxAge }) : undefined,
    syncInterval: accounting.syncInterval,
  });
}

const TLS_REPORTING_CA_KEY = 'ca.crt';

function tlsReportingConfig(reporting: NonNullable<VirtualMtaPool['spec']['tlsReporting']>): NonNullable<RuntimeConfigInput['tlsReporting']> {
  const caSecret = reporting.https?.caSecretName;
  return compact({
    enabled: reporting.enabled,
    submitter: reporting.submitter,
    contactInfo: reporting.contactInfo,
    from: reporting.from,
    interval: reporting.interval,
    virtualMta: reporting.virtualMta,
    https: compact({ trustedCaFile: caSecret ? `${secretDir(caSecret)}/${TLS_REPORTING_CA_KEY}` : undefined, allowPrivateAddresses: reporting.https?.allowPrivateAddresses }),
  });
}

const EGRESS_PROXY_CREDENTIAL_KEYS = ['username', 'password'];

function egressProxyConfig(proxy: NonNullable<VirtualMtaPool['spec']['virtualMtas'][number]['proxies']>[number]) {
  return compact({ server: proxy.server, credentialsDir: proxy.credentialsSecretName ? secretDir(proxy.credentialsSecretName) : undefined });
}

function tokenFile(secretName: string | undefined): string | undefined {
  return secretName ? `${secretDir(secretName)}/${ADMIN_TOKEN_KEY}` : undefined;
}

/**
 * The admin addresses of the pool's pods, which share the suppression list (each relay leaves
 * itself out by its POD_NAME). Only a StatefulSet's pods have stable DNS names; an ephemeral
 * pool's pods each keep their own list, which goes with the pod. The list follows replicas:
 * peers are a hot field, so scaling re-renders relay.yaml without restarting pods.
 */
function suppressionPeers(pool: VirtualMtaPool): string[] {
  // Peers take changes only with the pool's admin token; without one each pod keeps its own list.
  if (pool.spec.spool.mode !== 'persistent' || !pool.spec.admin?.tokenSecretName) return [];
  // <pod>.<headless service> resolves through the pods' DNS search path (their own namespace).
  const name = pool.metadata.name;
  return Array.from({ length: pool.spec.replicas }, (_, ordinal) => `${name}-${ordinal}.${headlessServiceName(name)}:${ADMIN_PORT}`);
}

type ListenerConfigInput = RuntimeConfigInput['listeners'][number];

function listenerConfig({ listener, resolved, relayPort: port }: ListenerPlan): ListenerConfigInput {
  const spec = listener.spec;
  const secretName = spec.tls?.secretName;
  const encrypted = resolved.tlsMode !== 'none' && secretName !== undefined;
  return compact({
    name: listener.metadata.name,
    address: resolved.address,
    port,
    hostname: spec.hostname,
    tls: compact({
      mode: resolved.tlsMode,
      required: resolved.tlsRequired,
      certFile: encrypted ? `${secretDir(secretName)}/tls.crt` : undefined,
      keyFile: encrypted ? `${secretDir(secretName)}/tls.key` : undefined,
      minVersion: spec.tls?.minVersion,
    }),
    auth: compact({ required: resolved.authRequired, mechanisms: resolved.authMechanisms, maxFailures: spec.auth?.maxFailures, failureWindow: spec.auth?.failureWindow }),
    relayPolicy: spec.relayPolicyRef.name,
    proxyProtocol: { enabled: spec.proxyProtocol?.enabled ?? false, trustedCidrs: spec.proxyProtocol?.trustedCidrs ?? [] },
    limits: compact({ ...spec.limits }),
  }) as ListenerConfigInput;
}

type PolicyConfigInput = RuntimeConfigInput['relayPolicies'][number];

function policyConfig(policy: RelayPolicy): PolicyConfigInput {
  const spec = policy.spec;
  const users = spec.users;
  return compact({
    name: policy.metadata.name,
    requireTlsForAuth: spec.requireTlsForAuth,
    allowedCidrs: spec.alwaysAllowRelaying ?? [],
    relayDomains: spec.relayDomains ?? [],
    relayAddresses: spec.relayAddresses ?? [],
    users: users
      ? {
          secretPath: secretDir(users.secretName),
          allowedSenderDomains: Object.fromEntries((users.senders ?? []).map((sender) => [sender.user, sender.allowedSenderDomains])),
          defaultAllowedSenderDomains: users.defaultAllowedSenderDomains ?? [],
        }
      : undefined,
    routing: compact({
      honorVirtualMtaHeader: spec.routing?.honorVirtualMtaHeader ?? false,
      rules: (spec.routing?.rules ?? []).map((rule) => compact({ ...rule })),
      defaultVirtualMta: spec.routing?.defaultVirtualMta,
    }),
  }) as PolicyConfigInput;
}

type DomainConfigInput = RuntimeConfigInput['pool']['domainDefaults'] extends (infer T)[] | undefined ? T : never;

/** PowerMTA's single `retryAfter` becomes a one-step schedule; `retrySchedule` and `retryBackoff` map as they are. */
function retryForm<T extends Pick<DomainSettings, 'retryAfter' | 'retrySchedule' | 'retryBackoff'>>(settings: T): Omit<T, 'retryAfter' | 'retrySchedule' | 'retryBackoff'> & { retryAfter: DomainConfigInput['retryAfter'] } {
  const { retryAfter, retrySchedule, retryBackoff, ...rest } = settings;
  return { ...rest, retryAfter: retryAfter ? [retryAfter] : (retrySchedule ?? retryBackoff) };
}

function domainSettings(settings: DomainSettings): DomainConfigInput {
  const { domain, smarthost, ...rest } = settings;
  return compact({ match: domain, ...retryForm(rest), smarthost: smarthost ? smarthostConfig(smarthost) : undefined }) as DomainConfigInput;
}

/** Drops undefined fields so relay.yaml lists only what was set. */
export function compact<T extends Record<string, unknown>>(object: T): T {
  return Object.fromEntries(Object.entries(object).filter(([, value]) => value !== undefined)) as T;
}

function byName(a: { metadata: { name: string } }, b: { metadata: { name: string } }): number {
  return a.metadata.name < b.metadata.name ? -1 : a.metadata.name > b.metadata.name ? 1 : 0;
}
