// The operator process: informers for the vmta.dev kinds and everything the operator owns, one
// work queue feeding the reconciler, leader election (only the leader runs reconciles and so
// only the leader writes), and the health and metrics endpoints. Events from the caches map to
// work keys the way controller-runtime's For/Owns/Watches do.
import { hostname } from 'node:os';
import type { Logger } from 'pino';
import { ServerSideApplier } from '../kube/apply.ts';
import type { KubeClient } from '../kube/client.ts';
import { EventRecorder } from '../kube/event-recorder.ts';
import type { InformerEventKind } from '../kube/informer.ts';
import { namespacedCache, type ResourceCache } from '../kube/namespace-set-informer.ts';
import { LeaderElector } from '../kube/leader-election.ts';
import { RESOURCE_TYPES } from '../kube/resources.ts';
import type { KubeObject } from '../kube/types.ts';
import { WorkQueue } from '../kube/work-queue.ts';
import { OperatorMetrics } from '../observe/metrics.ts';
import { FIELD_MANAGER } from '../render/layout.ts';
import { podReadiness, PUBLIC_KEYS_FIELD, secretKeysOnly, withoutManagedFields } from './cache-transforms.ts';
import { DkimDnsChecker } from './dkim-dns-check.ts';
import type { ConfigHashReader } from './config-hash-reader.ts';
import { httpEgressProxyReader, type EgressProxyReader } from './egress-proxy-status.ts';
import { httpWarmupReader, type WarmupReader } from './warmup-status.ts';
import { HealthServer } from './health-server.ts';
import { ListenerSelfCheck, poolRolloutKey, type SelfCheckSettings } from './listener-self-check.ts';
import { httpRelayDrainClient, type RelayDrainClient } from './relay-drain-client.ts';
import { OWNED_KINDS, Reconciler, parseWorkKey, workKey, type Caches, type OwnedKind } from './reconciler.ts';

export const CONTROLLER_NAME = 'vmta';
const MANAGED_SELECTOR = `app.kubernetes.io/managed-by=${FIELD_MANAGER}`;
const RELAY_POD_SELECTOR = 'app.kubernetes.io/name=vmta-relay';

export interface LeaderElectionSettings {
  namespace: string;
  name?: string;
  identity?: string;
  leaseDurationMs?: number;
  renewDeadlineMs?: number;
  retryPeriodMs?: number;
}

export interface OperatorOptions {
  client: KubeClient;
  logger: Logger;
  image: string;
  configHashReader: ConfigHashReader;
  /** Each pod's egress proxy health; defaults to HTTP on each pod's IP and admin port. */
  egressProxyReader?: EgressProxyReader;
  /** Each pod's warm-up use (GET /warmup); defaults to HTTP on each pod's IP and admin port. */
  warmupReader?: WarmupReader;
  /** The relays' drain API; defaults to HTTP on each pod's IP and admin port. */
  relayDrainClient?: RelayDrainClient;
  /** Watch these namespaces; all namespaces when undefined. */
  namespaces?: readonly string[];
  /** Elect a leader on a Lease; without it this instance reconciles at once. */
  leaderElection?: LeaderElectionSettings;
  /** Port of /healthz, /readyz and /metrics; undefined starts no server, 0 picks a free port. */
  healthPort?: number;
  healthHost?: string;
  concurrency?: number;
  resyncPeriodMs?: number;
  watchdogMs?: number;
  pollIntervalMs?: number;
  /** How long a DKIM TXT lookup is cached, and how soon a pool with a key not yet Published is checked again (default 60 s). */
  dkimRecheckIntervalMs?: number;
  /** How often a pool with a warming VirtualMTA reads its pods' warm-up use into status.warmup (default 60 s). */
  warmupRefreshIntervalMs?: number;
  /** A repeated Event is written again (count patched) only after this long (default 10 min). */
  eventAggregationWindowMs?: number;
  metrics?: OperatorMetrics;
  /** How listeners are self-checked through their Services (addresses, step timeout, concurrency). */
  selfCheck?: SelfCheckSettings;
}

export class VmtaOperator {
  readonly metrics: OperatorMetrics;
  readonly caches: Caches;
  private readonly options: OperatorOptions;
  private readonly log: Logger;
  private readonly reconciler: Reconciler;
  private readonly informers: ResourceCache[];
  private readonly elector: LeaderElector | undefined;
  private readonly concurrency: number;
  private queue: WorkQueue | undefined;
  private health: HealthServer | undefined;
  private leading = false;

  constructor(options: OperatorOptions) {
    this.options = options;
    this.log = options.logger;
    this.metrics = options.metrics ?? new OperatorMetrics();
    this.concurrency = options.concurrency ?? 4;
    const informer = (type: (typeof RESOURCE_TYPES)[keyof typeof RESOURCE_TYPES], labelSelector?: string, transform = withoutManagedFields) =>
      namespacedCache(options.client, options.namespaces, { type, labelSelector, transform, resyncPeriodMs: options.resyncPeriodMs, watchdogMs: options.watchdogMs, logger: options.logger });
    this.caches = {
      pools: informer(RESOURCE_TYPES.VirtualMtaPool),
      listeners: informer(RESOURCE_TYPES.SmtpListener),
      policies: informer(RESOURCE_TYPES.RelayPolicy),
      secrets: informer(RESOURCE_TYPES.Secret, undefined, secretKeysOnly),
      pods: informer(RESOURCE_TYPES.Pod, RELAY_POD_SELECTOR, podReadiness),
      owned: Object.fromEntries(OWNED_KINDS.map((kind) => [kind, informer(RESOURCE_TYPES[kind], MANAGED_SELECTOR)])) as Record<OwnedKind, ResourceCache>,
    };
    this.informers = [this.caches.pools, this.caches.listeners, this.caches.policies, this.caches.secrets, this.caches.pods, ...Object.values(this.caches.owned)];
    const events = new EventRecorder(options.client, { logger: options.logger, aggregationWindowMs: options.eventAggregationWindowMs });
    this.reconciler = new Reconciler({
      client: options.client,
      caches: this.caches,
      applier: new ServerSideApplier(options.client),
      events,
      configHashReader: options.configHashReader,
      egressProxyReader: options.egressProxyReader ?? httpEgressProxyReader(),
      warmupReader: options.warmupReader ?? httpWarmupReader(),
      image: options.image,
      pollIntervalMs: options.pollIntervalMs ?? 5000,
      dkimChecker: new DkimDnsChecker({ cacheMs: options.dkimRecheckIntervalMs ?? 60_000 }),
      dkimRecheckIntervalMs: options.dkimRecheckIntervalMs ?? 60_000,
      warmupRefreshIntervalMs: options.warmupRefreshIntervalMs ?? 60_000,
      logger: options.logger,
      enqueue: (key) => this.queue?.add(key),
      relayDrainClient: options.relayDrainClient ?? httpRelayDrainClient(),
      selfCheck: new ListenerSelfCheck({
        ...options.selfCheck,
        client: options.client,
        events,
        metrics: this.metrics,
        logger: options.logger,
        enqueue: (namespace, name) => this.queue?.add(workKey('SmtpListener', namespace, name)),
      }),
    });
    this.wireEvents(events);
    if (options.leaderElection) {
      const le = options.leaderElection;
      this.elector = new LeaderElector(options.client, {
        namespace: le.namespace,
        name: le.name ?? 'vmta-operator-leader',
        identity: le.identity ?? `${hostname()}_${process.pid}`,
        leaseDurationMs: le.leaseDurationMs,
        renewDeadlineMs: le.renewDeadlineMs,
        retryPeriodMs: le.retryPeriodMs,
        logger: options.logger,
        onStartedLeading: () => this.startLeading(),
        onStoppedLeading: () => void this.stopLeading(),
      });
    }
    for (const kind of ['virtualmtapool', 'smtplistener', 'relaypolicy']) {
      this.metrics.maxConcurrentReconciles.set({ controller: kind }, this.concurrency);
      this.metrics.activeWorkers.set({ controller: kind }, 0);
    }
  }

  get isLeader(): boolean {
    return this.leading;
  }

  get healthPort(): number | undefined {
    return this.health?.port;
  }

  /** Starts caches and health endpoints, then reconciles (at once, or once elected). */
  async start(): Promise<void> {
    if (this.options.healthPort !== undefined) {
      this.health = new HealthServer({ metrics: this.metrics, ready: () => this.informers.every((i) => i.hasSynced) });
      await this.health.listen(this.options.healthPort, this.options.healthHost ?? '0.0.0.0');
    }
    await Promise.all(this.informers.map((i) => i.start()));
    this.log.info({ namespaces: this.options.namespaces ?? '(all)' }, 'caches synced');
    if (this.elector) this.elector.start();
    else this.startLeading();
  }

  /** Stops reconciling, then releases the Lease (so a successor never overlaps a running reconcile), then caches and endpoints. */
  async stop(): Promise<void> {
    await this.stopLeading();
    await this.elector?.stop();
    for (const informer of this.informers) informer.stop();
    await this.health?.close();
  }

  /** Resolves when the queue has nothing queued, delayed or running (tests and the benchmark). */
  async idle(): Promise<void> {
    await this.queue?.idle();
  }

  private startLeading(): void {
    if (this.leading) return;
    this.leading = true;
    this.metrics.leaderElectionStatus.set({ name: CONTROLLER_NAME }, 1);
    const queue = new WorkQueue({ name: CONTROLLER_NAME, concurrency: this.concurrency, metrics: this.metrics, rateLimitPerSecond: 50, burst: 300 });
    this.queue = queue;
    queue.start((key) => this.reconcileKey(key));
    for (const pool of this.caches.pools.list()) queue.add(workKey('VirtualMtaPool', pool.metadata.namespace, pool.metadata.name));
    for (const listener of this.caches.listeners.list()) queue.add(workKey('SmtpListener', listener.metadata.namespace, listener.metadata.name));
    for (const policy of this.caches.policies.list()) queue.add(workKey('RelayPolicy', policy.metadata.namespace, policy.metadata.name));
  }

  private async stopLeading(): Promise<void> {
    if (!this.leading) return;
    this.leading = false;
    this.metrics.leaderElectionStatus.set({ name: CONTROLLER_NAME }, 0);
    const queue = this.queue;
    this.queue = undefined;
    await queue?.shutdown();
  }

  private async reconcileKey(key: string) {
    const controller = parseWorkKey(key).kind.toLowerCase();
    const started = process.hrtime.bigint();
    this.metrics.activeWorkers.inc({ controller });
    try {
      const outcome = await this.reconciler.reconcile(key);
      this.metrics.reconcileTotal.inc({ controller, result: outcome?.requeueAfterMs !== undefined ? 'requeue_after' : 'success' });
      return outcome;
    } catch (error) {
      this.metrics.reconcileTotal.inc({ controller, result: 'error' });
      this.metrics.reconcileErrors.inc({ controller });
      this.log.warn({ err: error, reconcileKey: key }, 'reconcile failed; retrying with backoff');
      throw error;
    } finally {
      this.metrics.activeWorkers.dec({ controller });
      this.metrics.reconcileTime.observe({ controller }, Number(process.hrtime.bigint() - started) / 1e9);
    }
  }

  private enqueue(key: string): void {
    this.queue?.add(key);
  }

  private enqueueListenersOf(pool: KubeObject): void {
    for (const listener of this.caches.listeners.list(pool.metadata.namespace)) {
      if ((listener.spec as { poolRef?: { name?: string } } | undefined)?.poolRef?.name === pool.metadata.name) this.enqueue(workKey('SmtpListener', listener.metadata.namespace, listener.metadata.name));
    }
  }

  private enqueuePoolsOfNamespace(namespace: string | undefined): void {
    for (const pool of this.caches.pools.list(namespace)) this.enqueue(workKey('VirtualMtaPool', pool.metadata.namespace, pool.metadata.name));
  }

  private wireEvents(events: EventRecorder): void {
    // Own status writes change neither generation nor metadata: they need no reconcile.
    const specChanged = (kind: InformerEventKind, object: KubeObject, previous: KubeObject | undefined): boolean =>
      kind !== 'update' ||
      previous === object ||
      previous?.metadata.generation !== object.metadata.generation ||
      previous?.metadata.deletionTimestamp !== object.metadata.deletionTimestamp ||
      JSON.stringify(previous?.metadata.annotations ?? {}) !== JSON.stringify(object.metadata.annotations ?? {});

    this.caches.pools.onEvent((kind, pool, previous) => {
      if (kind === 'delete') {
        this.reconciler.forget(pool.metadata.uid);
        events.forgetObject(pool.metadata.uid);
      }
      if (specChanged(kind, pool, previous)) this.enqueue(workKey('VirtualMtaPool', pool.metadata.namespace, pool.metadata.name));
      // A pool that now runs its config on ready pods (or stopped doing so): its listeners' self-check is due.
      else if (kind === 'update' && poolRolloutKey(pool) !== poolRolloutKey(previous)) this.enqueueListenersOf(pool);
    });
    this.caches.listeners.onEvent((kind, listener, previous) => {
      if (kind === 'delete') {
        this.reconciler.forget(listener.metadata.uid);
        events.forgetObject(listener.metadata.uid);
      }
      if (!specChanged(kind, listener, previous)) return;
      this.enqueue(workKey('SmtpListener', listener.metadata.namespace, listener.metadata.name));
      for (const object of [listener, previous]) {
        const poolName = (object?.spec as { poolRef?: { name?: string } } | undefined)?.poolRef?.name;
        if (poolName) this.enqueue(workKey('VirtualMtaPool', listener.metadata.namespace, poolName));
      }
    });
    this.caches.policies.onEvent((kind, policy, previous) => {
      if (kind === 'delete') this.reconciler.forget(policy.metadata.uid);
      if (!specChanged(kind, policy, previous)) return;
      this.enqueue(workKey('RelayPolicy', policy.metadata.namespace, policy.metadata.name));
      const pools = new Set<string>();
      for (const listener of this.caches.listeners.list(policy.metadata.namespace)) {
        const spec = listener.spec as { poolRef?: { name?: string }; relayPolicyRef?: { name?: string } } | undefined;
        if (spec?.relayPolicyRef?.name === policy.metadata.name && spec.poolRef?.name) pools.add(spec.poolRef.name);
      }
      for (const pool of pools) this.enqueue(workKey('VirtualMtaPool', policy.metadata.namespace, pool));
    });
    this.caches.secrets.onEvent((kind, secret, previous) => {
      // Only the key names matter to rendering, and the public keys to the DKIM check; a resync or another value change needs nothing.
      const keys = (o: KubeObject | undefined) => JSON.stringify([Object.keys((o?.data as object | undefined) ?? {}).sort(), o?.[PUBLIC_KEYS_FIELD]]);
      if (kind === 'update' && keys(secret) === keys(previous)) return;
      this.enqueuePoolsOfNamespace(secret.metadata.namespace);
    });
    const enqueueOwner = (object: KubeObject) => {
      const owner = object.metadata.ownerReferences?.find((ref) => ref.controller && ref.kind === 'VirtualMtaPool');
      if (owner) this.enqueue(workKey('VirtualMtaPool', object.metadata.namespace, owner.name));
    };
    for (const informer of Object.values(this.caches.owned)) informer.onEvent((_kind, object) => enqueueOwner(object));
    this.caches.pods.onEvent((_kind, pod) => {
      const poolName = pod.metadata.labels?.['app.kubernetes.io/instance'];
      if (poolName) this.enqueue(workKey('VirtualMtaPool', pod.metadata.namespace, poolName));
    });
  }
}
