// Reconcile of the vmta.dev kinds, level-based and idempotent. For a VirtualMtaPool: read the
// pool, the namespace's listeners, policies and Secret key names from the informer caches, render
// (pure), apply what render returns with server-side apply (skipping unchanged objects), prune
// owned objects render no longer wants, and write status through /status only when it changed.
// Problems render reports (a missing policy, a port clash, a missing Secret key) set Ready=False
// with the render's reason and message plus a Warning Event, and leave the running objects alone.
// A pool with DKIM keys also gets each key's DNS state (dkim-dns-check.ts) in status.dkimKeys
// and DkimPublished; when to look again without a change is pool-requeue.ts. SmtpListener and
// RelayPolicy status follow from their pool's latest render. Scale-in and deletion of a
// persistent pool wait for its leaving pods to drain (pool-drain.ts). The fleet ConfigMap
// carries the delivering pods' ordinals, the shares of the pool's limits (fleet-membership.ts).
import type { Logger } from 'pino';
import { parseVmtaResource, type VmtaResource } from '../api/parse.ts';
import type { RelayPolicy } from '../api/relay-policy.ts';
import type { SmtpListener } from '../api/smtp-listener.ts';
import type { VirtualMtaPool } from '../api/virtual-mta-pool.ts';
import type { ServerSideApplier } from '../kube/apply.ts';
import type { KubeClient } from '../kube/client.ts';
import type { EventRecorder } from '../kube/event-recorder.ts';
import type { ResourceCache } from '../kube/namespace-set-informer.ts';
import { resourceTypeOf } from '../kube/resources.ts';
import { objectKey, type KubeObject } from '../kube/types.ts';
import type { RenderProblem } from '../render/contract.ts';
import { poolSelector } from '../render/layout.ts';
import { renderPool, type PoolRender } from '../render/pool.ts';
import type { SecretSummary } from '../render/runtime-config.ts';
import type { ConfigHashReader } from './config-hash-reader.ts';
import { fleetObject, readyPoolPods } from './fleet-membership.ts';
import { egressProxyStatus, type EgressProxyReader } from './egress-proxy-status.ts';
import { warmupStatus, type WarmupReader } from './warmup-status.ts';
import { poolRequeue } from './pool-requeue.ts';
import { PUBLIC_KEYS_FIELD, USER_SECRETS_FIELD } from './cache-transforms.ts';
import type { DkimDnsChecker } from './dkim-dns-check.ts';
import { servedListener, type ListenerSelfCheck, type SelfCheckReport } from './listener-self-check.ts';
import type { PublicKeySummary } from '../../mta/signing/dkim-keys.ts';
import { findCondition, listPatch, mergeConditions, sameStatus, type Condition, type ConditionInput } from './conditions.ts';
import { DRAIN_FINALIZER, finalizersWith, PoolDrainer, withStatefulSetReplicas, type DrainDecision } from './pool-drain.ts';
import type { RelayDrainClient } from './relay-drain-client.ts';

export const PAUSED_ANNOTATION = 'vmta.dev/paused';

/** The kinds the operator creates for a pool; pruning looks at these. */
export const OWNED_KINDS = ['ConfigMap', 'Service', 'StatefulSet', 'Deployment', 'PodDisruptionBudget'] as const;
export type OwnedKind = (typeof OWNED_KINDS)[number];
/**
 * The owned kinds a spec change can make unwanted: a removed listener's Service, the StatefulSet
 * or Deployment after a spool mode change. A pool always has its ConfigMap and PDB; they go with
 * the pool through garbage collection, so the operator needs no right to delete them.
 */
export const PRUNED_KINDS: readonly OwnedKind[] = ['Service', 'StatefulSet', 'Deployment'];

export interface Caches {
  pools: ResourceCache;
  listeners: ResourceCache;
  policies: ResourceCache;
  secrets: ResourceCache;
  pods: ResourceCache;
  owned: Record<OwnedKind, ResourceCache>;
}

export interface ReconcilerOptions {
  client: KubeClient;
  caches: Caches;
  applier: ServerSideApplier;
  events: EventRecorder;
  configHashReader: ConfigHashReader;
  /** Reads each ready pod's egress proxy health (status.virtualMtas[].proxies). */
  egressProxyReader: EgressProxyReader;
  /** Reads each ready pod's warm-up use (status.warmup: the plan's pool caps, the pods' use summed). */
  warmupReader: WarmupReader;
  /** Relay image for pools that do not set spec.image. */
  image: string;
  /** How soon to look again at a pool that is still rolling out or applying its config. */
  pollIntervalMs: number;
  /** Checks each DKIM key's DNS record (status.dkimKeys, DkimPublished). */
  dkimChecker: DkimDnsChecker;
  /** How soon to look again at a pool whose DKIM keys are not all Published. */
  dkimRecheckIntervalMs: number;
  /** How soon to look again at a pool with a warming VirtualMTA, to refresh status.warmup. */
  warmupRefreshIntervalMs: number;
  logger: Logger;
  /** Called with keys whose status follows from a pool's render (its listeners and policies). */
  enqueue: (key: string) => void;
  /** The relays' drain API (scale-in, deletion). */
  relayDrainClient: RelayDrainClient;
  /** Probes each served listener through its Service (SelfCheck condition and status fields). */
  selfCheck: ListenerSelfCheck;
}

export type ReconcileOutcome = { requeueAfterMs?: number } | void;

type Kind = 'VirtualMtaPool' | 'SmtpListener' | 'RelayPolicy';

export function workKey(kind: Kind, namespace: string | undefined, name: string): string {
  return `${kind}:${namespace ?? ''}/${name}`;
}

export function parseWorkKey(key: string): { kind: Kind; namespace: string; name: string } {
  const colon = key.indexOf(':');
  const slash = key.indexOf('/', colon);
  return { kind: key.slice(0, colon) as Kind, namespace: key.slice(colon + 1, slash), name: key.slice(slash + 1) };
}

function isPaused(object: KubeObject): boolean {
  return object.metadata.annotations?.[PAUSED_ANNOTATION] === 'true';
}

function problemText(problems: RenderProblem[]): string {
  return problems.map((p) => p.message).join('; ');
}

const PAUSED_CONDITION: ConditionInput = { type: 'Paused', status: 'True', reason: 'PausedByAnnotation', message: `reconciling stopped by the annotation ${PAUSED_ANNOTATION}: "true"; remove it to resume` };

export class Reconciler {
  private readonly options: ReconcilerOptions;
  private readonly log: Logger;
  /** The latest render of each pool (by `namespace/name`) and its inputs: listener and policy status come from it. */
  private readonly renders = new Map<string, { inputs: string; render: PoolRender }>();
  /** Parsed resources by uid, re-parsed only when their resourceVersion changes. */
  private readonly parsed = new Map<string, { resourceVersion: string | undefined; result: ReturnType<typeof parseVmtaResource> }>();
  private readonly drainer: PoolDrainer;

  constructor(options: ReconcilerOptions) {
    this.options = options;
    this.log = options.logger;
    this.drainer = new PoolDrainer({ client: options.client, pods: options.caches.pods, statefulSets: options.caches.owned.StatefulSet, events: options.events, relays: options.relayDrainClient, logger: options.logger });
  }

  async reconcile(key: string): Promise<ReconcileOutcome> {
    const { kind, namespace, name } = parseWorkKey(key);
    switch (kind) {
      case 'VirtualMtaPool':
        return this.reconcilePool(namespace, name);
      case 'SmtpListener':
        return this.reconcileListener(namespace, name);
      case 'RelayPolicy':
        return this.reconcilePolicy(namespace, name);
    }
  }

  // ---- pools -------------------------------------------------------------------------------

  private async reconcilePool(namespace: string, name: string): Promise<ReconcileOutcome> {
    const { caches, events } = this.options;
    const raw = caches.pools.get(`${namespace}/${name}`);
    if (!raw) {
      // Deleted: the API server's garbage collector removes what it owned.
      this.renders.delete(`${namespace}/${name}`);
      this.enqueueDependents(namespace, name);
      return;
    }
    // Being deleted: its pods drain behind our finalizer; applying would only recreate what the garbage collector removes.
    if (raw.metadata.deletionTimestamp) return this.finalizePool(raw);
    const generation = raw.metadata.generation;
    const previous = raw.status as VirtualMtaPool['status'] | undefined;
    if (isPaused(raw)) {
      await this.writePausedStatus(raw, previous, ['Ready', 'Degraded', 'ConfigApplied']);
      return;
    }
    const parsed = this.parse(raw);
    if (!parsed.ok) {
      const message = `VirtualMtaPool "${name}": ${parsed.problems.join('; ')}`;
      await events.record(raw, 'Warning', 'InvalidSpec', message);
      await this.writeStatus(raw, { ...previous, observedGeneration: generation, conditions: mergeConditions(previous?.conditions, brokenConditions(previous, 'InvalidSpec', message), generation, new Date()) });
      return;
    }
    const pool = parsed.value as VirtualMtaPool;
    await this.setFinalizer(raw, pool.spec.spool.mode === 'persistent');
    const render = this.render(pool, namespace);
    this.enqueueDependents(namespace, name);

    if (render.problems.length > 0) {
      const [first] = render.problems;
      for (const problem of render.problems) await events.record(raw, 'Warning', problem.reason, problem.message);
      const conditions = mergeConditions(previous?.conditions, brokenConditions(previous, first!.reason, problemText(render.problems)), generation, new Date());
      await this.writeStatus(raw, { ...previous, observedGeneration: generation, conditions });
      return;
    }

    // The StatefulSet follows spec.replicas once the pods that go have drained.
    const drain = await this.drainer.scale(raw, pool, pool.spec.replicas);
    // The fleet membership (delivering pods) goes first: the pods mount it.
    const fleet = fleetObject({ pods: caches.pods, configMaps: caches.owned.ConfigMap }, pool, namespace, Date.now(), drain.replicas);
    const applied: PoolRender = { ...render, objects: [fleet.object, ...withStatefulSetReplicas(render.objects, drain.replicas)] };
    let written: string[];
    try {
      written = await this.applyObjects(raw, applied);
    } catch (error) {
      const message = `applying the rendered objects failed: ${error instanceof Error ? error.message : String(error)}`;
      await events.record(raw, 'Warning', 'ApplyFailed', message);
      await this.writeStatus(raw, { ...previous, observedGeneration: generation, conditions: mergeConditions(previous?.conditions, brokenConditions(previous, 'ApplyFailed', message), generation, new Date()) });
      throw error;
    }
    if (written.length > 0) await events.record(raw, 'Normal', 'Applied', `applied ${written.join(', ')}`);

    const rollout = await this.observeRollout(pool, applied);
    const proxies = await egressProxyStatus(pool, rollout.readyPods, this.options.egressProxyReader);
    const warmup = await warmupStatus(pool, rollout.readyPods, this.options.warmupReader, Date.now());
    const progressing = written.length > 0 || !rollout.workloadReady;
    const conditions: ConditionInput[] = [
      // Just-written objects are not observed yet: Ready waits for the next look.
      !progressing && rollout.configApplied.status === 'True'
        ? { type: 'Ready', status: 'True', reason: 'Ready', message: `${rollout.readyReplicas}/${rollout.desiredReplicas} relay pods ready with the current configuration` }
        : { type: 'Ready', status: 'False', reason: !rollout.workloadReady ? 'PodsNotReady' : written.length > 0 ? 'Applying' : 'ConfigPending', message: !rollout.workloadReady ? rollout.message : written.length > 0 ? `applied ${written.join(', ')}` : rollout.configApplied.message },
      progressing
        ? { type: 'Progressing', status: 'True', reason: written.length > 0 ? 'ObjectsApplied' : 'RollingOut', message: written.length > 0 ? `applied ${written.join(', ')}` : rollout.message }
        : { type: 'Progressing', status: 'False', reason: 'RolloutComplete', message: 'every object is applied and the workload is up to date' },
      { type: 'Degraded', status: 'False', reason: 'AsExpected', message: 'the pool renders and applies without problems' },
      rollout.configApplied,
      ...(drain.condition ? [drain.condition] : []),
    ];
    const dkim = await this.options.dkimChecker.check(pool, (secretName, key) => (caches.secrets.get(`${namespace}/${secretName}`)?.[PUBLIC_KEYS_FIELD] as Record<string, PublicKeySummary> | undefined)?.[key], previous?.dkimKeys);
    if (dkim) conditions.push(dkim.condition);
    for (const key of dkim?.changed ?? []) await events.record(raw, key.state === 'Published' ? 'Normal' : 'Warning', key.state === 'Unknown' ? 'DkimLookupFailed' : `Dkim${key.state}`, `DKIM key ${key.selector}._domainkey.${key.domain} (${key.algorithm}${key.virtualMta ? `, VirtualMTA ${key.virtualMta}` : ''}): ${key.message ?? key.state}`);
    await this.writeStatus(raw, {
      observedGeneration: generation,
      conditions: mergeConditions(previous?.conditions, conditions, generation, new Date()),
      replicas: rollout.replicas,
      readyReplicas: rollout.readyReplicas,
      selector: poolSelector(name),
      configHash: render.configHash,
      podTemplateHash: render.podTemplateHash,
      virtualMtas: pool.spec.virtualMtas.map((vmta) => ({
        name: vmta.name,
        ...(vmta.sourceAddress ? { sourceAddress: vmta.sourceAddress } : {}),
        hostname: vmta.hostname ?? pool.spec.hostname ?? '',
        domains: vmta.domains?.length ?? 0,
        ...(proxies.has(vmta.name) ? { proxies: proxies.get(vmta.name) } : {}),
      })),
      ...listPatch('dkimKeys', dkim?.keys, previous?.dkimKeys),
      ...listPatch('warmup', warmup, previous?.warmup),
      ...(drain.status ? { drain: drain.status } : {}),
    });
    const converged = !progressing && rollout.configApplied.status === 'True';
    return poolRequeue({ drainAfterMs: drain.requeueAfterMs, fleetAfterMs: fleet.recheckAfterMs, converged, dkimPending: dkim !== undefined && dkim.condition.status !== 'True', warming: warmup.length > 0 }, this.options);
  }

  /** A deleted pool: drain its pods, report, and remove the finalizer once they are done (or the timeout passed). */
  private async finalizePool(raw: KubeObject): Promise<ReconcileOutcome> {
    if (!raw.metadata.finalizers?.includes(DRAIN_FINALIZER)) return;
    const parsed = this.parse(raw);
    const drain: DrainDecision = await this.drainer.finalize(raw, parsed.ok ? (parsed.value as VirtualMtaPool) : undefined);
    const previous = raw.status as VirtualMtaPool['status'] | undefined;
    let resourceVersion = raw.metadata.resourceVersion;
    if (drain.condition || drain.status) {
      const others = keepConditions(previous?.conditions, (previous?.conditions ?? []).map((c) => c.type).filter((type) => type !== 'Draining'));
      const conditions = mergeConditions(previous?.conditions, [...others, ...(drain.condition ? [drain.condition] : [])], raw.metadata.generation, new Date());
      resourceVersion = (await this.writeStatus(raw, { ...previous, conditions, ...(drain.status ? { drain: drain.status } : {}) })) ?? resourceVersion;
    }
    if (!drain.finished) return { requeueAfterMs: drain.requeueAfterMs ?? this.options.pollIntervalMs };
    await this.setFinalizer({ ...raw, metadata: { ...raw.metadata, resourceVersion } }, false);
  }

  /** Adds or removes the drain finalizer (a merge patch with the resourceVersion: a concurrent change fails with 409 and is retried). */
  private async setFinalizer(raw: KubeObject, wanted: boolean): Promise<void> {
    const finalizers = finalizersWith(raw, wanted);
    if (!finalizers) return;
    try {
      await this.options.client.mergePatch(resourceTypeOf(raw.apiVersion, raw.kind), raw.metadata.namespace, raw.metadata.name, { metadata: { finalizers, resourceVersion: raw.metadata.resourceVersion } });
    } catch (error) {
      if ((error as { statusCode?: number }).statusCode !== 404) throw error;
    }
  }

  /**
   * Renders the pool, or reuses its last render when none of its inputs (the pool, the
   * namespace's listeners and policies, Secret key names) changed since: render is pure, and a
   * resync of hundreds of pools should not render them all again.
   */
  private render(pool: VirtualMtaPool, namespace: string): PoolRender {
    const { caches } = this.options;
    const secrets = caches.secrets.list(namespace).map((secret) => ({ name: secret.metadata.name, keys: Object.keys((secret.data as object | undefined) ?? {}), userSecrets: secret[USER_SECRETS_FIELD] as SecretSummary['userSecrets'] }));
    const versions = (informer: ResourceCache) => informer.list(namespace).map((o) => o.metadata.resourceVersion);
    const inputs = JSON.stringify([pool.metadata.resourceVersion, versions(caches.listeners), versions(caches.policies), secrets]);
    const key = `${namespace}/${pool.metadata.name}`;
    const previous = this.renders.get(key);
    if (previous && previous.inputs === inputs) return previous.render;
    const render = renderPool({
      pool,
      listeners: this.parsedList(caches.listeners, namespace) as SmtpListener[],
      policies: this.parsedList(caches.policies, namespace) as RelayPolicy[],
      invalidPolicyNames: caches.policies.list(namespace).filter((raw) => !this.parse(raw).ok).map((raw) => raw.metadata.name),
      secrets,
      image: this.options.image,
      namespace,
    });
    this.renders.set(key, { inputs, render });
    return render;
  }

  /** Applies what render wants and prunes what it no longer wants; returns what it wrote. */
  private async applyObjects(pool: KubeObject, render: PoolRender): Promise<string[]> {
    const { caches, applier, client } = this.options;
    const namespace = pool.metadata.namespace;
    const written: string[] = [];
    const wanted = new Set<string>();
    for (const desired of render.objects) {
      const kind = desired.kind as OwnedKind;
      const informer = caches.owned[kind];
      if (!informer) throw new Error(`render produced a ${desired.kind}, which the operator does not manage`);
      wanted.add(`${kind}/${desired.metadata.name}`);
      const object = { ...desired, metadata: { ...desired.metadata, namespace } } as KubeObject;
      const outcome = await applier.apply(object, informer.get(objectKey(object)));
      if (outcome.written) written.push(`${kind} ${desired.metadata.name}`);
    }
    for (const kind of PRUNED_KINDS) {
      for (const live of caches.owned[kind].list(namespace)) {
        const ownedByPool = live.metadata.ownerReferences?.some((ref) => ref.controller && ref.uid === pool.metadata.uid);
        if (!ownedByPool || wanted.has(`${kind}/${live.metadata.name}`)) continue;
        try {
          await client.delete(resourceTypeOf(live.apiVersion, kind), namespace, live.metadata.name);
        } catch (error) {
          if ((error as { statusCode?: number }).statusCode !== 404) throw error;
        }
        applier.forget(live);
        written.push(`deleted ${kind} ${live.metadata.name}`);
      }
    }
    return written;
  }

  private async observeRollout(pool: VirtualMtaPool, render: PoolRender) {
    const { caches } = this.options;
    const namespace = pool.metadata.namespace;
    const workloadDesired = render.objects.find((o) => o.kind === 'StatefulSet' || o.kind === 'Deployment');
    const workload = workloadDesired ? caches.owned[workloadDesired.kind as OwnedKind].get(`${namespace}/${workloadDesired.metadata.name}`) : undefined;
    const desiredReplicas = Number((workloadDesired?.spec as { replicas?: number } | undefined)?.replicas ?? 1);
    const status = (workload?.status ?? {}) as { observedGeneration?: number; replicas?: number; readyReplicas?: number; updatedReplicas?: number };
    const replicas = status.replicas ?? 0;
    const readyReplicas = status.readyReplicas ?? 0;
    const observed = workload !== undefined && (status.observedGeneration ?? 0) >= (workload.metadata.generation ?? 0);
    const workloadReady = observed && readyReplicas === desiredReplicas && (status.updatedReplicas ?? 0) === desiredReplicas && replicas === desiredReplicas;
    const message = !workload
      ? `waiting for the ${workloadDesired?.kind ?? 'workload'} to appear`
      : !observed
        ? `waiting for the ${workload.kind} controller to observe generation ${workload.metadata.generation}`
        : `${readyReplicas}/${desiredReplicas} pods ready, ${status.updatedReplicas ?? 0} updated`;

    const readyPods = readyPoolPods(caches.pods, namespace, pool.metadata.name);
    const hashes = await Promise.all(readyPods.map((pod) => this.options.configHashReader(pod)));
    const current = hashes.filter((h) => h === render.configHash).length;
    let configApplied: ConditionInput;
    if (desiredReplicas === 0) configApplied = { type: 'ConfigApplied', status: 'True', reason: 'NoReplicas', message: 'the pool is scaled to zero' };
    else if (readyPods.length === 0) configApplied = { type: 'ConfigApplied', status: 'Unknown', reason: 'NoReadyPods', message: 'no ready relay pod to report its configuration yet' };
    else if (current === readyPods.length) configApplied = { type: 'ConfigApplied', status: 'True', reason: 'ConfigLoaded', message: `${current}/${readyPods.length} ready pods run config ${render.configHash.slice(0, 12)}` };
    else {
      const stale = readyPods.filter((_, i) => hashes[i] !== render.configHash).map((p) => p.metadata.name);
      configApplied = { type: 'ConfigApplied', status: 'False', reason: 'ConfigPending', message: `${current}/${readyPods.length} ready pods run config ${render.configHash.slice(0, 12)}; waiting for ${stale.slice(0, 5).join(', ')}${stale.length > 5 ? ', ...' : ''}` };
    }
    return { desiredReplicas, replicas, readyReplicas, workloadReady, message, configApplied, readyPods };
  }

  // ---- listeners and policies ----------------------------------------------------------------

  private async reconcileListener(namespace: string, name: string): Promise<ReconcileOutcome> {
    const raw = this.options.caches.listeners.get(`${namespace}/${name}`);
    if (!raw) return;
    const previous = raw.status as SmtpListener['status'] | undefined;
    if (isPaused(raw)) {
      await this.writePausedStatus(raw, previous, ['Ready', 'SelfCheck']);
      return;
    }
    const parsed = this.parse(raw);
    let ready: ConditionInput;
    let port: number | undefined;
    let check: SelfCheckReport | undefined;
    if (!parsed.ok) ready = { type: 'Ready', status: 'False', reason: 'InvalidSpec', message: `SmtpListener "${name}": ${parsed.problems.join('; ')}` };
    else {
      const listener = parsed.value as SmtpListener;
      const poolName = listener.spec.poolRef.name;
      const render = this.renders.get(`${namespace}/${poolName}`)?.render;
      if (!this.options.caches.pools.get(`${namespace}/${poolName}`)) {
        ready = { type: 'Ready', status: 'False', reason: 'PoolNotFound', message: `SmtpListener "${name}" spec.poolRef.name: no VirtualMtaPool "${poolName}"` };
      } else if (!render) {
        // The pool has not been rendered yet; its reconcile enqueues this listener afterwards.
        return;
      } else {
        const own = render.problems.filter((p) => p.object.kind === 'SmtpListener' && p.object.name === name);
        const plan = render.runtime.listeners.find((p) => p.listener.metadata.name === name);
        port = plan?.resolved.port;
        if (own.length > 0) ready = { type: 'Ready', status: 'False', reason: own[0]!.reason, message: problemText(own) };
        else if (render.problems.length > 0) ready = { type: 'Ready', status: 'False', reason: 'PoolNotRendered', message: `VirtualMtaPool "${poolName}" cannot be rendered: ${problemText(render.problems)}` };
        else ready = { type: 'Ready', status: 'True', reason: 'Configured', message: `served by VirtualMtaPool "${poolName}"${port ? ` on port ${port}` : ''}` };
        const served = ready.status === 'True' && plan ? servedListener(this.options.caches, raw, listener, plan, render) : undefined;
        check = this.options.selfCheck.observe(raw, listener, served);
      }
    }
    await this.writeReadyStatus(raw, previous, ready, { ...(port === undefined ? {} : { port }), ...check?.fields }, check?.condition);
    return check?.requeueAfterMs === undefined ? undefined : { requeueAfterMs: check.requeueAfterMs };
  }

  private async reconcilePolicy(namespace: string, name: string): Promise<ReconcileOutcome> {
    const raw = this.options.caches.policies.get(`${namespace}/${name}`);
    if (!raw) return;
    const previous = raw.status as RelayPolicy['status'] | undefined;
    if (isPaused(raw)) {
      await this.writePausedStatus(raw, previous, ['Ready']);
      return;
    }
    const parsed = this.parse(raw);
    let ready: ConditionInput;
    if (!parsed.ok) ready = { type: 'Ready', status: 'False', reason: 'InvalidSpec', message: `RelayPolicy "${name}": ${parsed.problems.join('; ')}` };
    else {
      const own: RenderProblem[] = [];
      for (const [poolKey, { render }] of this.renders) {
        if (!poolKey.startsWith(`${namespace}/`)) continue;
        for (const problem of render.problems) {
          if (problem.object.kind === 'RelayPolicy' && problem.object.name === name && !own.some((p) => p.message === problem.message)) own.push(problem);
        }
      }
      const users = this.parsedList(this.options.caches.listeners, namespace).filter((l) => (l as SmtpListener).spec.relayPolicyRef.name === name).length;
      ready = own.length > 0 ? { type: 'Ready', status: 'False', reason: own[0]!.reason, message: problemText(own) } : { type: 'Ready', status: 'True', reason: 'Valid', message: `used by ${users} SmtpListener(s)` };
    }
    await this.writeReadyStatus(raw, previous, ready);
  }

  // ---- helpers -----------------------------------------------------------------------------

  /** Listeners of the pool and the policies they use: their status follows from its render. */
  private enqueueDependents(namespace: string, poolName: string): void {
    const policies = new Set<string>();
    for (const raw of this.options.caches.listeners.list(namespace)) {
      const spec = raw.spec as { poolRef?: { name?: string }; relayPolicyRef?: { name?: string } } | undefined;
      if (spec?.poolRef?.name !== poolName) continue;
      this.options.enqueue(workKey('SmtpListener', namespace, raw.metadata.name));
      if (spec.relayPolicyRef?.name) policies.add(spec.relayPolicyRef.name);
    }
    for (const policy of policies) this.options.enqueue(workKey('RelayPolicy', namespace, policy));
  }

  private parse(raw: KubeObject): ReturnType<typeof parseVmtaResource> {
    const id = raw.metadata.uid ?? `${raw.kind}/${objectKey(raw)}`;
    const cached = this.parsed.get(id);
    if (cached && cached.resourceVersion === raw.metadata.resourceVersion) return cached.result;
    const { status: _status, ...withoutStatus } = raw;
    const result = parseVmtaResource(withoutStatus);
    this.parsed.set(id, { resourceVersion: raw.metadata.resourceVersion, result });
    return result;
  }

  /** The valid resources of an informer in a namespace (invalid ones report on their own status). */
  private parsedList(informer: ResourceCache, namespace: string): VmtaResource[] {
    const valid: VmtaResource[] = [];
    for (const raw of informer.list(namespace)) {
      const result = this.parse(raw);
      if (result.ok) valid.push(result.value);
    }
    return valid;
  }

  forget(uid: string | undefined): void {
    this.drainer.forget(uid);
    this.options.selfCheck.forget(uid);
    if (uid) this.parsed.delete(uid);
  }

  /** Writes status through /status, and only when it differs from what the object shows. */
  /** Paused: the conditions of `keptTypes` stay as they were, and a Paused condition says why nothing changes. */
  private async writePausedStatus(raw: KubeObject, previous: { conditions?: Condition[] } | undefined, keptTypes: string[]): Promise<void> {
    const conditions = mergeConditions(previous?.conditions, [...keepConditions(previous?.conditions, keptTypes), PAUSED_CONDITION], raw.metadata.generation, new Date());
    await this.writeStatus(raw, { ...previous, conditions });
  }

  /** A listener's or policy's status: its Ready condition (with a Warning Event when False) and any extra fields. */
  private async writeReadyStatus(raw: KubeObject, previous: { conditions?: Condition[] } | undefined, ready: ConditionInput, extra: object = {}, selfCheck?: ConditionInput): Promise<void> {
    if (ready.status === 'False') await this.options.events.record(raw, 'Warning', ready.reason, ready.message);
    const generation = raw.metadata.generation;
    await this.writeStatus(raw, { observedGeneration: generation, conditions: mergeConditions(previous?.conditions, selfCheck ? [ready, selfCheck] : [ready], generation, new Date()), ...extra });
  }

  /** Returns the object's new resourceVersion when it wrote. */
  private async writeStatus(raw: KubeObject, status: object): Promise<string | undefined> {
    if (sameStatus(raw.status, status)) return undefined;
    const type = resourceTypeOf(raw.apiVersion, raw.kind);
    let written: KubeObject;
    try {
      written = await this.options.client.mergePatch(type, raw.metadata.namespace, raw.metadata.name, { status }, 'status');
    } catch (error) {
      if ((error as { statusCode?: number }).statusCode === 404) return undefined;
      throw error;
    }
    this.log.debug({ kind: raw.kind, name: raw.metadata.name, namespace: raw.metadata.namespace }, 'status written');
    return written.metadata.resourceVersion;
  }
}

/** Conditions of a pool that cannot be rendered or applied: it keeps running what it has. */
function brokenConditions(previous: VirtualMtaPool['status'] | undefined, reason: string, message: string): ConditionInput[] {
  const configApplied = findCondition(previous?.conditions, 'ConfigApplied');
  return [
    { type: 'Ready', status: 'False', reason, message },
    { type: 'Progressing', status: 'False', reason, message: 'nothing is applied until the problem is fixed; the running objects are left as they are' },
    { type: 'Degraded', status: 'True', reason, message },
    configApplied ? { type: 'ConfigApplied', status: configApplied.status, reason: configApplied.reason, message: configApplied.message } : { type: 'ConfigApplied', status: 'Unknown', reason: 'NotRendered', message: 'no configuration rendered yet' },
  ];
}

function keepConditions(conditions: Condition[] | undefined, types: string[]): ConditionInput[] {
  return (conditions ?? []).filter((c) => types.includes(c.type)).map(({ type, status, reason, message }) => ({ type, status, reason, message }));
}
