// Drain before pods go away (docs/operations.md, "Scale-in and delete"). A StatefulSet removes
// its highest ordinals, so on scale-in from L to D pods the StatefulSet stays at L while pods
// D..L-1 hand their queue to the Ready pods 0..D-1 (through their relays' drain API); it follows
// the pool's replicas once every leaving pod reports an empty queue, or when the pool's drain
// timeout has passed (what is left stays on the retained claims and is reported, never deleted).
// Deleting a persistent pool drains every pod (delivering: no pod remains) behind the finalizer
// vmta.dev/drain, then lets garbage collection go on. Progress is the Draining condition,
// status.drain (per-pod counts; its startedAt keeps the timeout across operator restarts) and
// Events. Pure decisions here; the reconciler applies the replicas and writes the status.
import type { Logger } from 'pino';
import { parseDuration } from '../../mta/config/duration.ts';
import type { DrainStatus, VirtualMtaPool } from '../api/virtual-mta-pool.ts';
import type { EventRecorder } from '../kube/event-recorder.ts';
import type { Informer } from '../kube/informer.ts';
import type { KubeClient } from '../kube/client.ts';
import { RESOURCE_TYPES } from '../kube/resources.ts';
import type { KubeObject } from '../kube/types.ts';
import { ADMIN_TOKEN_KEY } from '../render/runtime-config.ts';
import type { DesiredObject } from '../render/contract.ts';
import { findCondition, type Condition, type ConditionInput } from './conditions.ts';
import type { RelayDrainClient, RelayDrainReport } from './relay-drain-client.ts';

export const DRAIN_FINALIZER = 'vmta.dev/drain';
/** How soon to look again while pods drain. */
const DRAIN_POLL_MS = 1000;

type DrainedPod = DrainStatus['pods'][number];

export interface PoolDrainerOptions {
  client: KubeClient;
  pods: Pick<Informer, 'get'>;
  statefulSets: Pick<Informer, 'get'>;
  events: EventRecorder;
  relays: RelayDrainClient;
  logger: Logger;
  now?: () => number;
}

export interface DrainDecision {
  /** The replicas the StatefulSet gets now. */
  replicas: number;
  /** status.drain to write (the previous one when nothing changed). */
  status: DrainStatus | undefined;
  /** The Draining condition; undefined for a pool that never drained. */
  condition: ConditionInput | undefined;
  /** Set while pods drain. */
  requeueAfterMs?: number;
  /** Deletion: the drain is over and the finalizer may go. */
  finished?: boolean;
}

interface DrainRun {
  raw: KubeObject;
  reason: DrainStatus['reason'];
  targets: string[];
  peers: string[];
  token: string;
  startedAt: number;
  timeoutMs: number;
  fromReplicas: number;
  toReplicas: number;
  previous: DrainStatus | undefined;
}

export class PoolDrainer {
  private readonly options: PoolDrainerOptions;
  private readonly now: () => number;
  /** The latest drain status and condition by pool uid: the cached pool may not show our last status write yet. */
  private readonly latest = new Map<string, { status: DrainStatus | undefined; condition: ConditionInput | undefined }>();

  constructor(options: PoolDrainerOptions) {
    this.options = options;
    this.now = options.now ?? Date.now;
  }

  /** Scale a persistent pool to `desired`: the replicas for the StatefulSet now, with status and condition. */
  async scale(raw: KubeObject, pool: VirtualMtaPool, desired: number): Promise<DrainDecision> {
    return this.remember(raw, await this.decideScale(raw, pool, desired));
  }

  /** A pool being deleted: drain every pod, then `finished` lets the reconciler remove the finalizer. */
  async finalize(raw: KubeObject, pool: VirtualMtaPool | undefined): Promise<DrainDecision> {
    const decision = this.remember(raw, await this.decideFinalize(raw, pool));
    if (decision.finished) this.latest.delete(raw.metadata.uid ?? '');
    return decision;
  }

  /** The pool is gone. */
  forget(uid: string | undefined): void {
    if (uid) this.latest.delete(uid);
  }

  private remember(raw: KubeObject, decision: DrainDecision): DrainDecision {
    this.latest.set(raw.metadata.uid ?? '', { status: decision.status, condition: decision.condition });
    return decision;
  }

  private known(raw: KubeObject): { status: DrainStatus | undefined; condition: ConditionInput | undefined } {
    return this.latest.get(raw.metadata.uid ?? '') ?? { status: drainStatusOf(raw), condition: keptCondition(raw) };
  }

  private async decideScale(raw: KubeObject, pool: VirtualMtaPool, desired: number): Promise<DrainDecision> {
    const { status: previous, condition } = this.known(raw);
    const kept: DrainDecision = { replicas: desired, status: previous, condition };
    if (pool.spec.spool.mode !== 'persistent') return kept;
    const live = this.liveReplicas(raw);
    const running = previous && !previous.finishedAt && previous.reason === 'ScaleIn' ? previous : undefined;
    if (live === undefined || desired >= live) return running ? this.cancel(raw, pool, running, desired) : kept;
    // Decided already; the StatefulSet has not been seen at its new size yet.
    if (previous?.finishedAt && previous.reason === 'ScaleIn' && previous.fromReplicas === live && previous.toReplicas === desired) return kept;
    const token = await this.token(pool);
    if (!token) return this.unavailable(raw, pool, desired, `scaling in from ${live} to ${desired} without draining`);
    const same = running && running.fromReplicas === live && running.toReplicas === desired ? running : undefined;
    const name = pool.metadata.name;
    const targets = ordinals(desired, live).map((index) => `${name}-${index}`);
    const peers = ordinals(0, desired)
      .map((index) => this.options.pods.get(`${raw.metadata.namespace}/${name}-${index}`))
      .filter((pod): pod is KubeObject => pod !== undefined && isReady(pod))
      .map((pod) => this.options.relays.adminAddress(pod))
      .filter((address): address is string => address !== undefined);
    const timeoutMs = parseDuration(pool.spec.drain.timeout);
    if (!same) {
      await this.options.events.record(raw, 'Normal', 'DrainStarted', `draining ${targets.join(', ')} into ${peers.length} ready pod(s) before scaling in from ${live} to ${desired} (timeout ${pool.spec.drain.timeout})`);
    }
    return this.progress({ raw, reason: 'ScaleIn', targets, peers, token, startedAt: same ? Date.parse(same.startedAt) : this.now(), timeoutMs, fromReplicas: live, toReplicas: desired, previous: same });
  }

  private async decideFinalize(raw: KubeObject, pool: VirtualMtaPool | undefined): Promise<DrainDecision> {
    const { status: previous, condition } = this.known(raw);
    const live = this.liveReplicas(raw) ?? 0;
    if (!pool || pool.spec.spool.mode !== 'persistent' || live === 0) return { replicas: live, status: previous, condition, finished: true };
    const token = await this.token(pool);
    if (!token) return { ...(await this.unavailable(raw, pool, live, 'deleting the pool without draining its pods')), finished: true };
    const running = previous && !previous.finishedAt && previous.reason === 'PoolDeleted' ? previous : undefined;
    const startedAt = running ? Date.parse(running.startedAt) : Date.parse(raw.metadata.deletionTimestamp ?? new Date(this.now()).toISOString());
    const targets = ordinals(0, live).map((index) => `${pool.metadata.name}-${index}`);
    if (!running) await this.options.events.record(raw, 'Normal', 'DrainStarted', `pool deleted: ${targets.join(', ')} deliver their queue before the pool's objects go (timeout ${pool.spec.drain.timeout})`);
    const decision = await this.progress({ raw, reason: 'PoolDeleted', targets, peers: [], token, startedAt, timeoutMs: parseDuration(pool.spec.drain.timeout), fromReplicas: live, toReplicas: 0, previous: running });
    return { ...decision, replicas: live, finished: decision.requeueAfterMs === undefined };
  }

  private async progress(run: DrainRun): Promise<DrainDecision> {
    const { raw, token, previous } = run;
    const now = this.now();
    const deadline = run.startedAt + run.timeoutMs;
    const deadlineSeconds = Math.max(1, Math.ceil((deadline - now) / 1000));
    const pods = await Promise.all(
      run.targets.map(async (name): Promise<DrainedPod> => {
        const pod = this.options.pods.get(`${raw.metadata.namespace}/${name}`);
        let report = pod ? await this.options.relays.report(pod, token) : undefined;
        if (pod && report?.state === 'idle' && now < deadline) report = (await this.options.relays.start(pod, token, { handOverTo: run.peers, deadlineSeconds })) ?? report;
        return podStatus(name, report, previous?.pods.find((p) => p.name === name));
      }),
    );
    const status: DrainStatus = { reason: run.reason, fromReplicas: run.fromReplicas, toReplicas: run.toReplicas, startedAt: new Date(run.startedAt).toISOString(), pods };
    const moved = pods.reduce((sum, pod) => sum + pod.handedOver + pod.delivered, 0);
    const seconds = Math.round((now - run.startedAt) / 1000);
    const allEnded = pods.every((pod) => pod.state === 'drained' || pod.state === 'incomplete');
    if (allEnded && pods.every((pod) => pod.state === 'drained' && pod.remaining === 0)) {
      const message = `${run.targets.join(', ')} drained in ${seconds}s: ${moved} message(s) moved (${sum(pods, 'handedOver')} handed over, ${sum(pods, 'delivered')} delivered); their claims are empty`;
      await this.options.events.record(raw, 'Normal', 'Drained', message);
      return { replicas: run.toReplicas, status: { ...status, finishedAt: new Date(now).toISOString(), outcome: 'Drained' }, condition: { type: 'Draining', status: 'False', reason: 'Drained', message } };
    }
    if (allEnded || now >= deadline) {
      const left = pods.filter((pod) => pod.state !== 'drained' || pod.remaining > 0).map((pod) => `spool-${pod.name} (${pod.state === 'unreachable' ? 'unknown, the pod did not answer' : `${pod.remaining} message(s)`})`);
      const message = `drain ended after ${seconds}s (timeout ${Math.round(run.timeoutMs / 1000)}s) with mail left, kept on the claims ${left.join(', ')}; ${moved} message(s) moved. A pod started on such a claim delivers it.`;
      await this.options.events.record(raw, 'Warning', 'DrainTimedOut', message);
      return { replicas: run.toReplicas, status: { ...status, finishedAt: new Date(now).toISOString(), outcome: 'DrainTimedOut' }, condition: { type: 'Draining', status: 'False', reason: 'DrainTimedOut', message } };
    }
    const message = `${run.reason === 'ScaleIn' ? `scaling in from ${run.fromReplicas} to ${run.toReplicas}` : 'pool deleted'}: ${pods.map((pod) => `${pod.name} ${pod.state} (${pod.handedOver + pod.delivered} moved, ${pod.remaining} left)`).join(', ')}; ${Math.max(0, Math.round((deadline - now) / 1000))}s to the timeout`;
    const counts = (list: DrainedPod[] | undefined) => JSON.stringify((list ?? []).map((pod) => [pod.state, pod.handedOver, pod.delivered, pod.remaining]));
    if (counts(pods) !== counts(previous?.pods)) await this.options.events.record(raw, 'Normal', 'Draining', message);
    return { replicas: run.fromReplicas, status, condition: { type: 'Draining', status: 'True', reason: run.reason, message }, requeueAfterMs: DRAIN_POLL_MS };
  }

  /** Scaled back up during a drain: the pods that stay open their listeners again. */
  private async cancel(raw: KubeObject, pool: VirtualMtaPool, running: DrainStatus, desired: number): Promise<DrainDecision> {
    const token = await this.token(pool);
    if (token) {
      for (const drained of running.pods) {
        const pod = this.options.pods.get(`${raw.metadata.namespace}/${drained.name}`);
        if (pod) await this.options.relays.cancel(pod, token);
      }
    }
    const message = `scaled to ${desired} during the drain: ${running.pods.map((pod) => pod.name).join(', ')} accept mail again and keep what they still hold`;
    await this.options.events.record(raw, 'Normal', 'DrainCancelled', message);
    return { replicas: desired, status: { ...running, finishedAt: new Date(this.now()).toISOString(), outcome: 'Cancelled' }, condition: { type: 'Draining', status: 'False', reason: 'Cancelled', message } };
  }

  private async unavailable(raw: KubeObject, pool: VirtualMtaPool, replicas: number, what: string): Promise<DrainDecision> {
    const message = `${what}: a drain needs spec.admin.tokenSecretName (a Secret with key "token") to authenticate to the relays; queued mail of the pods that go stays on their claims`;
    await this.options.events.record(raw, 'Warning', 'DrainUnavailable', message);
    return { replicas, status: this.known(raw).status, condition: { type: 'Draining', status: 'False', reason: 'DrainUnavailable', message } };
  }

  private liveReplicas(raw: KubeObject): number | undefined {
    const statefulSet = this.options.statefulSets.get(`${raw.metadata.namespace}/${raw.metadata.name}`);
    const replicas = (statefulSet?.spec as { replicas?: number } | undefined)?.replicas;
    return statefulSet ? (replicas ?? 1) : undefined;
  }

  /** The pool's admin token, read from its Secret (the cache keeps no values). */
  private async token(pool: VirtualMtaPool): Promise<string | undefined> {
    const secretName = pool.spec.admin?.tokenSecretName;
    if (!secretName) return undefined;
    try {
      const secret = await this.options.client.get(RESOURCE_TYPES.Secret, pool.metadata.namespace, secretName);
      const encoded = (secret.data as Record<string, string> | undefined)?.[ADMIN_TOKEN_KEY];
      const token = encoded === undefined ? '' : Buffer.from(encoded, 'base64').toString('utf8').trim();
      return token === '' ? undefined : token;
    } catch (error) {
      this.options.logger.warn({ err: error, secret: secretName, namespace: pool.metadata.namespace }, 'cannot read the admin token Secret for a drain');
      return undefined;
    }
  }
}

function ordinals(from: number, to: number): number[] {
  return Array.from({ length: Math.max(0, to - from) }, (_, index) => from + index);
}

function sum(pods: DrainedPod[], field: 'handedOver' | 'delivered'): number {
  return pods.reduce((total, pod) => total + pod[field], 0);
}

function isReady(pod: KubeObject): boolean {
  if (pod.metadata.deletionTimestamp) return false;
  return ((pod.status as { conditions?: { type: string; status: string }[] } | undefined)?.conditions ?? []).some((c) => c.type === 'Ready' && c.status === 'True');
}

/** A pod that does not answer keeps the counts it last reported. */
function podStatus(name: string, report: RelayDrainReport | undefined, before: DrainedPod | undefined): DrainedPod {
  if (!report) return { name, state: 'unreachable', queuedAtStart: before?.queuedAtStart ?? 0, handedOver: before?.handedOver ?? 0, delivered: before?.delivered ?? 0, remaining: before?.remaining ?? 0 };
  return { name, state: report.state, queuedAtStart: report.queuedAtStart, handedOver: report.handedOver, delivered: report.delivered, remaining: report.remaining };
}

function drainStatusOf(raw: KubeObject): DrainStatus | undefined {
  return (raw.status as { drain?: DrainStatus } | undefined)?.drain;
}

function keptCondition(raw: KubeObject): ConditionInput | undefined {
  const found = findCondition((raw.status as { conditions?: Condition[] } | undefined)?.conditions, 'Draining');
  return found ? { type: found.type, status: found.status, reason: found.reason, message: found.message } : undefined;
}

/** The rendered objects with the StatefulSet at `replicas` (render wants the pool's own count). */
export function withStatefulSetReplicas(objects: readonly DesiredObject[], replicas: number): DesiredObject[] {
  return objects.map((object) => (object.kind === 'StatefulSet' ? { ...object, spec: { ...(object.spec as object), replicas } } : object));
}

/** The finalizer list after adding or removing ours, or undefined when it is already so. */
export function finalizersWith(raw: KubeObject, wanted: boolean): string[] | undefined {
  const current = raw.metadata.finalizers ?? [];
  if (current.includes(DRAIN_FINALIZER) === wanted) return undefined;
  return wanted ? [...current, DRAIN_FINALIZER] : current.filter((finalizer) => finalizer !== DRAIN_FINALIZER);
}
