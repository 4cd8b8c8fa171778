// Leader election on a coordination.k8s.io/v1 Lease, as client-go does it: acquire the Lease when
// it is free or its holder let it expire, renew it before it expires, give it up on shutdown.
// Every write is an update with the Lease's resourceVersion, so two candidates racing for it
// cannot both win: the second gets 409 Conflict. A leader that cannot renew within the renew
// deadline stops leading (onStoppedLeading) before anyone else may take over.
import type { Logger } from 'pino';
import { isConflict, isNotFound, type KubeClient } from './client.ts';
import { RESOURCE_TYPES } from './resources.ts';
import type { KubeObject } from './types.ts';
import { withDefaults } from './defaults.ts';

interface LeaseSpec {
  holderIdentity?: string | null;
  leaseDurationSeconds?: number;
  acquireTime?: string | null;
  renewTime?: string | null;
  leaseTransitions?: number;
}

type Lease = KubeObject & { spec?: LeaseSpec };

export interface LeaderElectionOptions {
  namespace: string;
  name: string;
  identity: string;
  leaseDurationMs?: number;
  renewDeadlineMs?: number;
  retryPeriodMs?: number;
  onStartedLeading: () => void;
  onStoppedLeading: () => void;
  logger?: Logger;
}

/** Lease timestamps are RFC 3339 with microseconds (MicroTime). */
function microTime(date: Date): string {
  return date.toISOString().replace(/\.(\d{3})Z$/, '.$1000Z');
}

export class LeaderElector {
  private readonly client: KubeClient;
  private readonly options: Required<Omit<LeaderElectionOptions, 'logger'>> & { logger?: Logger };
  private leading = false;
  private stopped = false;
  private timer: NodeJS.Timeout | undefined;
  private lastRenew = 0;
  private lease: Lease | undefined;

  constructor(client: KubeClient, options: LeaderElectionOptions) {
    this.client = client;
    this.options = withDefaults({ leaseDurationMs: 15_000, renewDeadlineMs: 10_000, retryPeriodMs: 2_000 }, options);
  }

  get isLeader(): boolean {
    return this.leading;
  }

  start(): void {
    this.stopped = false;
    void this.tick();
  }

  /** Stops campaigning; a leader releases the Lease so a successor need not wait for expiry. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    if (!this.leading) return;
    this.leading = false;
    this.options.onStoppedLeading();
    if (this.lease?.spec?.holderIdentity === this.options.identity) {
      try {
        const released: Lease = { ...this.lease, spec: { ...this.lease.spec, holderIdentity: null, acquireTime: null, renewTime: null, leaseDurationSeconds: 1 } };
        await this.client.update(released);
      } catch (error) {
        this.options.logger?.warn({ err: error }, 'could not release the leader lease');
      }
    }
  }

  private schedule(): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => void this.tick(), this.options.retryPeriodMs);
    this.timer.unref();
  }

  private async tick(): Promise<void> {
    if (this.stopped) return;
    let ok = false;
    try {
      ok = await this.tryAcquireOrRenew();
    } catch (error) {
      this.options.logger?.warn({ err: error }, 'leader election request failed');
    }
    if (this.stopped) return;
    if (ok) {
      this.lastRenew = Date.now();
      if (!this.leading) {
        this.leading = true;
        this.options.logger?.info({ identity: this.options.identity }, 'became leader');
        this.options.onStartedLeading();
      }
    } else if (this.leading && Date.now() - this.lastRenew > this.options.renewDeadlineMs) {
      this.leading = false;
      this.options.logger?.warn({ identity: this.options.identity }, 'lost leadership: could not renew the lease in time');
      this.options.onStoppedLeading();
    }
    this.schedule();
  }

  private async tryAcquireOrRenew(): Promise<boolean> {
    const { namespace, name, identity } = this.options;
    const now = new Date();
    const durationSeconds = Math.ceil(this.options.leaseDurationMs / 1000);
    let current: Lease;
    try {
      current = await this.client.get<Lease>(RESOURCE_TYPES.Lease, namespace, name);
    } catch (error) {
      if (!isNotFound(error)) throw error;
      const created: Lease = {
        apiVersion: 'coordination.k8s.io/v1',
        kind: 'Lease',
        metadata: { name, namespace },
        spec: { holderIdentity: identity, leaseDurationSeconds: durationSeconds, acquireTime: microTime(now), renewTime: microTime(now), leaseTransitions: 0 },
      };
      try {
        this.lease = await this.client.create(created);
        return true;
      } catch (createError) {
        if (isConflict(createError)) return false;
        throw createError;
      }
    }
    const spec = current.spec ?? {};
    const holder = spec.holderIdentity ?? '';
    const renewedAt = spec.renewTime ? Date.parse(spec.renewTime) : 0;
    const expired = renewedAt + (spec.leaseDurationSeconds ?? 0) * 1000 < now.getTime();
    if (holder !== '' && holder !== identity && !expired) {
      this.lease = current;
      return false;
    }
    const takingOver = holder !== identity;
    const next: Lease = {
      ...current,
      spec: {
        ...spec,
        holderIdentity: identity,
        leaseDurationSeconds: durationSeconds,
        renewTime: microTime(now),
        acquireTime: takingOver ? microTime(now) : (spec.acquireTime ?? microTime(now)),
        leaseTransitions: (spec.leaseTransitions ?? 0) + (takingOver && holder !== '' ? 1 : 0),
      },
    };
    try {
      this.lease = await this.client.update(next);
      return true;
    } catch (error) {
      if (isConflict(error)) return false;
      throw error;
    }
  }
}
