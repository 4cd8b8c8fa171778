// When and how the operator self-checks each SmtpListener: it probes the listener's Service (its
// cluster IP, so through kube-proxy as any client, without needing cluster DNS) as a remote client
// inside the cluster would (listener-probe.ts), once the pool runs its current
// config and again after every change of the listener, its pool's config or pod template, or its
// certificate Secret, and every spec.selfCheck.interval. Probes run in the background, a few at a
// time; each result becomes status fields and the SelfCheck condition (written by the reconciler
// on the next look, which the result enqueues), the vmta_listener_* metrics, and an Event when
// the outcome changes (a failure is not repeated every interval).
import { setTimeout as delay } from 'node:timers/promises';
import type { Logger } from 'pino';
import { parseDuration } from '../../mta/config/duration.ts';
import type { SmtpListener } from '../api/smtp-listener.ts';
import type { KubeClient } from '../kube/client.ts';
import type { EventRecorder } from '../kube/event-recorder.ts';
import { RESOURCE_TYPES } from '../kube/resources.ts';
import type { KubeObject } from '../kube/types.ts';
import type { OperatorMetrics } from '../observe/metrics.ts';
import type { ListenerPlan } from '../render/runtime-config.ts';
import { listenerServiceName } from '../render/services.ts';
import type { ResourceCache } from '../kube/namespace-set-informer.ts';
import type { PoolRender } from '../render/pool.ts';
import { findCondition, type Condition, type ConditionInput } from './conditions.ts';
import { PROBE_STEPS, probeListener, type ProbeResult } from './listener-probe.ts';

/** The status fields the self-check owns on an SmtpListener. */
export const SELF_CHECK_FIELDS = ['checkedAt', 'checkedAddress', 'banner', 'tls', 'cipher', 'certificateExpires'] as const;
type SelfCheckFields = Partial<Record<(typeof SELF_CHECK_FIELDS)[number], string | null>>;
type SelfCheckValues = Partial<Record<(typeof SELF_CHECK_FIELDS)[number], string>>;

export interface SelfCheckSettings {
  /** Where a listener's Service is reached; by default its cluster IP (or, without one yet, its DNS name `<service>.<namespace>.svc`) and Service port. */
  address?: (service: { name: string; namespace: string; port: number; clusterIP?: string }) => { host: string; port: number };
  /** Timeout of each probe step (connect, greeting, each reply, the TLS handshake); default 10 s. */
  stepTimeoutMs?: number;
  /** Probes running at once; default 4. */
  concurrency?: number;
  /** How long after a new failure the probe runs again to confirm it before it is reported; default 10 s. */
  confirmDelayMs?: number;
}

export interface ListenerSelfCheckOptions extends SelfCheckSettings {
  client: KubeClient;
  events: EventRecorder;
  metrics: OperatorMetrics;
  logger: Logger;
  /** Called with the listener's namespace and name once a probe result is ready to be written. */
  enqueue: (namespace: string, name: string) => void;
}

/** What the reconciler knows of the listener's pool when it looks at the listener. */
export interface ServedListener {
  plan: ListenerPlan;
  poolName: string;
  /** The name a client expects in the certificate: the listener's hostname, else the pool's. */
  hostname: string;
  /** The cluster IP of the listener's Service, from the cache; the probe needs no cluster DNS with it. */
  clusterIP?: string;
  /** The pool runs the config rendered now on at least one ready pod. */
  poolSettled: boolean;
  /** Changes whenever what a client sees may have changed (generation, config and template hashes, Secret version). */
  revision: string;
}

/** The self-check part of a listener's status: fields (null removes one), the SelfCheck condition, when to look again. */
export interface SelfCheckReport {
  fields: SelfCheckFields;
  condition?: ConditionInput;
  requeueAfterMs?: number;
}

interface Checked {
  result: ProbeResult;
  address: string;
  at: Date;
  revision: string;
}

interface ListenerState {
  labels: { listener_namespace: string; listener: string; pool: string };
  running: boolean;
  latest?: Checked;
  /** The outcome the last Event told of: "ok", or the failed step and its message. */
  reported?: string;
  warned?: string;
}

export class ListenerSelfCheck {
  private readonly options: ListenerSelfCheckOptions;
  private readonly states = new Map<string, ListenerState>();
  private readonly waiting: (() => void)[] = [];
  private running = 0;

  constructor(options: ListenerSelfCheckOptions) {
    this.options = options;
  }

  /** The listener's self-check status now; starts a probe when one is due. `served` is undefined when no pool serves it. */
  observe(raw: KubeObject, listener: SmtpListener, served: ServedListener | undefined): SelfCheckReport {
    const { values, ...report } = this.look(raw, listener, served);
    return { ...report, fields: withRemovals(raw, values) };
  }

  private look(raw: KubeObject, listener: SmtpListener, served: ServedListener | undefined): Omit<SelfCheckReport, 'fields'> & { values: SelfCheckValues } {
    const uid = raw.metadata.uid ?? `${raw.metadata.namespace}/${raw.metadata.name}`;
    const settings = listener.spec.selfCheck ?? { enabled: true, interval: '5m' };
    if (!settings.enabled || !served) {
      this.forget(uid);
      return { values: {} };
    }
    const state = this.stateOf(uid, raw, served.poolName);
    const intervalMs = parseDuration(settings.interval);
    const latest = state.latest;
    if (!served.poolSettled) {
      // The pool's status change enqueues this listener again (operator.ts), so nothing needs polling here.
      if (latest) return this.report(latest);
      return { values: {}, condition: { type: 'SelfCheck', status: 'Unknown', reason: 'WaitingForPool', message: `the self-check runs once VirtualMtaPool "${served.poolName}" has a ready pod with its current configuration` } };
    }
    const dueInMs = latest && latest.revision === served.revision ? latest.at.getTime() + intervalMs - Date.now() : 0;
    if (dueInMs <= 0 && !state.running) void this.run(uid, state, raw, listener, served);
    if (!latest) return { values: {}, condition: { type: 'SelfCheck', status: 'Unknown', reason: 'Probing', message: 'the first self-check is running' } };
    // A running probe enqueues the listener when it ends; otherwise look again when the next one is due.
    return { ...this.report(latest), requeueAfterMs: state.running ? undefined : dueInMs };
  }

  forget(uid: string | undefined): void {
    const state = uid ? this.states.get(uid) : undefined;
    if (!state || !uid) return;
    this.states.delete(uid);
    for (const step of PROBE_STEPS) this.options.metrics.listenerCheckSuccess.remove({ ...state.labels, step });
    this.options.metrics.certificateExpiries.delete(uid);
  }

  private stateOf(uid: string, raw: KubeObject, pool: string): ListenerState {
    const labels = { listener_namespace: raw.metadata.namespace ?? '', listener: raw.metadata.name, pool };
    let state = this.states.get(uid);
    if (state && state.labels.pool !== pool) this.forget(uid);
    state = this.states.get(uid);
    if (!state) {
      state = { labels, running: false };
      this.states.set(uid, state);
    }
    return state;
  }

  private report(checked: Checked): { values: SelfCheckValues; condition: ConditionInput } {
    const { result } = checked;
    const fields: SelfCheckValues = {
      checkedAt: checked.at.toISOString().replace(/\.\d{3}Z$/, 'Z'),
      checkedAddress: checked.address,
      banner: result.banner?.slice(0, 512),
      tls: result.tls?.version,
      cipher: result.tls?.cipher,
      certificateExpires: result.certificate?.expires,
    };
    const failed = result.steps.filter((verdict) => !verdict.ok);
    if (failed.length > 0) {
      const message = `a client of ${checked.address} fails at ${failed.map((verdict) => `${verdict.step}: ${verdict.message}`).join('; ')}`;
      return { values: fields, condition: { type: 'SelfCheck', status: 'False', reason: FAILURE_REASONS[failed[0]!.step], message: message.slice(0, 2048) } };
    }
    const summary = [result.tls ? `${result.tls.version} ${result.tls.cipher}` : 'plaintext', result.certificate ? `certificate valid until ${result.certificate.expires}` : undefined].filter(Boolean).join(', ');
    if (result.warnings.length > 0) return { values: fields, condition: { type: 'SelfCheck', status: 'True', reason: 'CertificateExpiresSoon', message: `a client of ${checked.address} passes every step (${summary}), but ${result.warnings.join('; ')}` } };
    return { values: fields, condition: { type: 'SelfCheck', status: 'True', reason: 'Passed', message: `a client of ${checked.address} passes every step: ${summary}` } };
  }

  private async run(uid: string, state: ListenerState, raw: KubeObject, listener: SmtpListener, served: ServedListener): Promise<void> {
    state.running = true;
    await this.slot();
    try {
      const { plan } = served;
      const namespace = raw.metadata.namespace ?? 'default';
      const service = { name: listenerServiceName(served.poolName, listener.metadata.name), namespace, port: listener.spec.service?.port ?? plan.resolved.port, clusterIP: served.clusterIP };
      const address = this.options.address?.(service) ?? { host: service.clusterIP ?? `${service.name}.${namespace}.svc`, port: service.port };
      const tlsMode = plan.resolved.tlsMode;
      const ca = tlsMode === 'none' ? undefined : await this.secretCa(namespace, listener.spec.tls?.secretName);
      const probe = () => probeListener({
        host: address.host,
        port: address.port,
        tlsMode,
        hostname: served.hostname,
        ca,
        expectAuth: tlsMode !== 'none' && plan.resolved.authMechanisms.length > 0,
        stepTimeoutMs: this.options.stepTimeoutMs ?? 10_000,
      });
      let result = await probe();
      // A new failure is confirmed by a second probe before it is reported: just after a change the
      // Service's endpoints, kube-proxy or the pods may not have caught up yet.
      if (!result.ok && failureOf(result) !== (state.latest && failureOf(state.latest.result))) {
        await delay(this.options.confirmDelayMs ?? 10_000);
        result = await probe();
      }
      if (this.states.get(uid) !== state) return;
      state.latest = { result, address: `${service.name}.${namespace}.svc:${service.port}`, at: new Date(), revision: served.revision };
      this.recordMetrics(uid, state, result);
      await this.recordEvents(state, raw, state.latest);
      this.options.enqueue(namespace, raw.metadata.name);
    } catch (error) {
      this.options.logger.warn({ err: error, listener: raw.metadata.name }, 'listener self-check could not run');
    } finally {
      state.running = false;
      this.running -= 1;
      this.waiting.shift()?.();
    }
  }

  /** Waits for one of the `concurrency` probe slots. */
  private async slot(): Promise<void> {
    if (this.running >= (this.options.concurrency ?? 4)) await new Promise<void>((resolve) => this.waiting.push(resolve));
    this.running += 1;
  }

  /** The CA a cert-manager style TLS Secret carries under ca.crt; undefined (the system CAs) when it has none. */
  private async secretCa(namespace: string, secretName: string | undefined): Promise<string | undefined> {
    if (!secretName) return undefined;
    try {
      const secret = await this.options.client.get(RESOURCE_TYPES.Secret, namespace, secretName);
      const value = (secret.data as Record<string, string> | undefined)?.['ca.crt'];
      return value ? Buffer.from(value, 'base64').toString('utf8') : undefined;
    } catch (error) {
      this.options.logger.warn({ err: error, secret: secretName }, 'self-check could not read the listener Secret for its ca.crt; verifying against the system CAs');
      return undefined;
    }
  }

  private recordMetrics(uid: string, state: ListenerState, result: ProbeResult): void {
    const { metrics } = this.options;
    for (const step of PROBE_STEPS) {
      const verdict = result.steps.find((v) => v.step === step);
      if (verdict) metrics.listenerCheckSuccess.set({ ...state.labels, step }, verdict.ok ? 1 : 0);
      else metrics.listenerCheckSuccess.remove({ ...state.labels, step });
    }
    if (result.certificate) metrics.certificateExpiries.set(uid, { labels: state.labels, expiresAtMs: Date.parse(result.certificate.expires) });
    else metrics.certificateExpiries.delete(uid);
  }

  /** An Event when the outcome changed since the last one: Warning on a (new) failure or an expiry warning, Normal on recovery. */
  private async recordEvents(state: ListenerState, raw: KubeObject, checked: Checked): Promise<void> {
    const { condition } = this.report(checked);
    const outcome = condition.status === 'False' ? `${condition.reason}|${checked.result.steps.find((v) => !v.ok)?.message}` : 'ok';
    // After an operator restart the status tells what was last reported: the same failure is no news, a recovery is.
    const shown = findCondition((raw.status as { conditions?: Condition[] } | undefined)?.conditions, 'SelfCheck');
    if (state.reported === undefined && shown?.status === 'False') state.reported = shown.reason === condition.reason && shown.message === condition.message ? outcome : 'failed before';
    if (outcome !== state.reported) {
      if (condition.status === 'False') await this.options.events.record(raw, 'Warning', `SelfCheck${condition.reason}`, condition.message);
      else if (state.reported !== undefined) await this.options.events.record(raw, 'Normal', 'SelfCheckPassed', condition.message);
      state.reported = outcome;
    }
    const warning = checked.result.warnings.join('; ');
    if (warning && warning !== state.warned) await this.options.events.record(raw, 'Warning', 'CertificateExpiresSoon', `${checked.address}: ${warning}`);
    state.warned = warning || undefined;
  }
}

/** The first failing step and what it saw, or undefined when every step passed. */
function failureOf(result: ProbeResult): string | undefined {
  const failed = result.steps.find((verdict) => !verdict.ok);
  return failed && `${failed.step}|${failed.message}`;
}

const FAILURE_REASONS: Record<(typeof PROBE_STEPS)[number], string> = {
  connect: 'ConnectFailed',
  banner: 'NoGreeting',
  ehlo: 'EhloRefused',
  tls: 'TlsFailed',
  expiry: 'CertificateExpired',
  chain: 'CertificateUntrusted',
  name: 'CertificateNameMismatch',
  auth: 'AuthCheckFailed',
};

type PoolRollout = { configHash?: string; readyReplicas?: number; conditions?: Condition[] };

/** The parts of a pool's status that decide whether its listeners can be probed: a change means their look is due. */
export function poolRolloutKey(pool: KubeObject | undefined): string {
  const status = pool?.status as PoolRollout | undefined;
  return JSON.stringify([status?.configHash, status?.readyReplicas, findCondition(status?.conditions, 'ConfigApplied')?.status]);
}

/** What the self-check needs of a listener its pool serves, from the caches and the pool's latest render. */
export function servedListener(caches: { pools: ResourceCache; secrets: ResourceCache; owned: { Service: ResourceCache } }, raw: KubeObject, listener: SmtpListener, plan: ListenerPlan, render: PoolRender): ServedListener {
  const namespace = raw.metadata.namespace;
  const poolName = listener.spec.poolRef.name;
  const poolStatus = caches.pools.get(`${namespace}/${poolName}`)?.status as PoolRollout | undefined;
  const secretName = listener.spec.tls?.secretName;
  const secretVersion = secretName ? caches.secrets.get(`${namespace}/${secretName}`)?.metadata.resourceVersion : undefined;
  const clusterIP = (caches.owned.Service.get(`${namespace}/${listenerServiceName(poolName, listener.metadata.name)}`)?.spec as { clusterIP?: string } | undefined)?.clusterIP;
  return {
    plan,
    poolName,
    clusterIP: clusterIP && clusterIP !== 'None' ? clusterIP : undefined,
    hostname: listener.spec.hostname ?? render.runtime.config.hostname,
    poolSettled: poolStatus?.configHash === render.configHash && (poolStatus.readyReplicas ?? 0) > 0 && findCondition(poolStatus.conditions, 'ConfigApplied')?.status === 'True',
    revision: [raw.metadata.generation, render.configHash, render.podTemplateHash, secretVersion, clusterIP].join('|'),
  };
}

/** The values, plus null for each self-check field the status still shows without a value now, so a merge patch removes it. */
function withRemovals(raw: KubeObject, values: SelfCheckValues): SelfCheckFields {
  const status = (raw.status ?? {}) as Record<string, unknown>;
  const fields: SelfCheckFields = {};
  for (const field of SELF_CHECK_FIELDS) {
    if (values[field] !== undefined) fields[field] = values[field];
    else if (status[field] !== undefined) fields[field] = null;
  }
  return fields;
}
