// A watch-backed cache of one resource type (optionally one namespace and a label selector):
// list, then watch from the list's resourceVersion with bookmarks. It survives what real API
// servers do to long watches: 410 Gone (history compacted) relists; a dropped connection
// reconnects from the last seen resourceVersion with exponential backoff; a watchdog restarts a
// watch that went silent (no event and no bookmark); a periodic resync replays every cached
// object so level-based reconcilers catch up on anything missed.
import type { Logger } from 'pino';
import { KubeApiError, type KubeClient, type WatchEventType, type WatchHandle } from './client.ts';
import type { ResourceType } from './resources.ts';
import { objectKey, type KubeObject } from './types.ts';
import { withDefaults } from './defaults.ts';

export type InformerEventKind = 'add' | 'update' | 'delete';
export type InformerHandler<T extends KubeObject> = (kind: InformerEventKind, object: T, previous: T | undefined) => void;

export interface InformerOptions {
  type: ResourceType;
  namespace?: string;
  labelSelector?: string;
  /** Replay every cached object as an update this often (0 disables). */
  resyncPeriodMs?: number;
  /** Restart a watch that delivered nothing (not even a bookmark) for this long. */
  watchdogMs?: number;
  /** First reconnect delay after a failure; doubles up to maxBackoffMs. */
  initialBackoffMs?: number;
  maxBackoffMs?: number;
  /** Trims each object before it is cached (keep only what the controller reads). */
  transform?: (object: KubeObject) => KubeObject;
  logger?: Logger;
}

export interface InformerStats {
  lists: number;
  watches: number;
  relistsAfterGone: number;
  watchdogRestarts: number;
}

export class Informer<T extends KubeObject = KubeObject> {
  readonly stats: InformerStats = { lists: 0, watches: 0, relistsAfterGone: 0, watchdogRestarts: 0 };
  private readonly client: KubeClient;
  private readonly options: Required<Omit<InformerOptions, 'namespace' | 'labelSelector' | 'logger' | 'transform'>> & Pick<InformerOptions, 'namespace' | 'labelSelector' | 'logger' | 'transform'>;
  private readonly cache = new Map<string, T>();
  private readonly handlers: InformerHandler<T>[] = [];
  private resourceVersion = '';
  private watchHandle: WatchHandle | undefined;
  /** Identifies the current watch so late callbacks of an abandoned one are ignored. */
  private watchGeneration = 0;
  private failures = 0;
  private stopped = true;
  private synced = false;
  private watchdogTimer: NodeJS.Timeout | undefined;
  private resyncTimer: NodeJS.Timeout | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private syncWaiters: (() => void)[] = [];

  constructor(client: KubeClient, options: InformerOptions) {
    this.client = client;
    this.options = withDefaults({ resyncPeriodMs: 10 * 60_000, watchdogMs: 5 * 60_000, initialBackoffMs: 200, maxBackoffMs: 30_000 }, options);
  }

  onEvent(handler: InformerHandler<T>): void {
    this.handlers.push(handler);
  }

  get hasSynced(): boolean {
    return this.synced;
  }

  get(key: string): T | undefined {
    return this.cache.get(key);
  }

  list(namespace?: string): T[] {
    const all = [...this.cache.values()];
    return namespace === undefined ? all : all.filter((o) => o.metadata.namespace === namespace);
  }

  /** Starts list+watch; resolves once the first list has filled the cache. */
  async start(): Promise<void> {
    if (!this.stopped) return this.waitForSync();
    this.stopped = false;
    void this.relist();
    if (this.options.resyncPeriodMs > 0) {
      this.resyncTimer = setInterval(() => this.resync(), this.options.resyncPeriodMs);
      this.resyncTimer.unref();
    }
    return this.waitForSync();
  }

  stop(): void {
    this.stopped = true;
    this.watchGeneration += 1;
    this.watchHandle?.abort();
    this.watchHandle = undefined;
    clearTimeout(this.watchdogTimer);
    clearTimeout(this.retryTimer);
    clearInterval(this.resyncTimer);
  }

  private waitForSync(): Promise<void> {
    if (this.synced) return Promise.resolve();
    return new Promise((resolve) => this.syncWaiters.push(resolve));
  }

  private async relist(): Promise<void> {
    if (this.stopped) return;
    try {
      this.stats.lists += 1;
      const list = await this.client.list<T>(this.options.type, { namespace: this.options.namespace, labelSelector: this.options.labelSelector });
      if (this.stopped) return;
      const seen = new Set<string>();
      for (const object of list.items) {
        const key = objectKey(object);
        seen.add(key);
        this.store(object);
      }
      for (const [key, object] of [...this.cache]) {
        if (!seen.has(key)) {
          this.cache.delete(key);
          this.emit('delete', object, undefined);
        }
      }
      this.resourceVersion = list.metadata.resourceVersion ?? '';
      if (!this.synced) {
        this.synced = true;
        for (const resolve of this.syncWaiters.splice(0)) resolve();
      }
      this.failures = 0;
      await this.startWatch();
    } catch (error) {
      this.options.logger?.warn({ err: error, resource: this.options.type.plural }, 'list failed; retrying');
      this.retryLater(() => this.relist());
    }
  }

  private async startWatch(): Promise<void> {
    if (this.stopped) return;
    const generation = ++this.watchGeneration;
    this.stats.watches += 1;
    this.armWatchdog(generation);
    try {
      const handle = await this.client.watch(
        this.options.type,
        { namespace: this.options.namespace, labelSelector: this.options.labelSelector, resourceVersion: this.resourceVersion },
        (type, object) => {
          if (generation === this.watchGeneration) this.onWatchEvent(generation, type, object);
        },
        (error) => {
          if (generation === this.watchGeneration) this.onWatchEnd(generation, error);
        },
      );
      if (generation !== this.watchGeneration) handle.abort();
      else this.watchHandle = handle;
    } catch (error) {
      if (generation === this.watchGeneration) this.onWatchEnd(generation, error);
    }
  }

  private onWatchEvent(generation: number, type: WatchEventType, object: KubeObject): void {
    this.armWatchdog(generation);
    if (type === 'ERROR') {
      const status = object as unknown as { code?: number; message?: string };
      this.abandonWatch();
      if (status.code === 410) {
        this.stats.relistsAfterGone += 1;
        this.options.logger?.info({ resource: this.options.type.plural, message: status.message }, 'watch history expired (410); relisting');
        void this.relist();
      } else {
        this.retryLater(() => this.startWatch());
      }
      return;
    }
    this.failures = 0;
    const rv = object.metadata?.resourceVersion;
    if (rv) this.resourceVersion = rv;
    if (type === 'BOOKMARK') return;
    const typed = { ...object, apiVersion: object.apiVersion ?? '', kind: object.kind ?? this.options.type.kind } as T;
    if (type === 'DELETED') {
      const key = objectKey(typed);
      const previous = this.cache.get(key);
      this.cache.delete(key);
      this.emit('delete', typed, previous);
    } else this.store(typed);
  }

  private onWatchEnd(generation: number, error: unknown): void {
    if (this.stopped || generation !== this.watchGeneration) return;
    this.abandonWatch();
    if (error instanceof KubeApiError ? error.statusCode === 410 : (error as { statusCode?: number } | null)?.statusCode === 410) {
      this.stats.relistsAfterGone += 1;
      void this.relist();
      return;
    }
    // A clean end (server timeout) reconnects at once, and so does the Watch's own inactivity
    // timeout (30 s without a byte, common on quiet resources between bookmarks); a failure backs off.
    const quietTimeout = error instanceof Error && error.name === 'TimeoutError';
    if (error && !quietTimeout) {
      this.options.logger?.info({ err: error, resource: this.options.type.plural }, 'watch failed; reconnecting');
      this.retryLater(() => this.startWatch());
    } else void this.startWatch();
  }

  private abandonWatch(): void {
    this.watchGeneration += 1;
    clearTimeout(this.watchdogTimer);
    this.watchHandle?.abort();
    this.watchHandle = undefined;
  }

  private armWatchdog(generation: number): void {
    clearTimeout(this.watchdogTimer);
    this.watchdogTimer = setTimeout(() => {
      if (this.stopped || generation !== this.watchGeneration) return;
      this.stats.watchdogRestarts += 1;
      this.options.logger?.warn({ resource: this.options.type.plural }, 'watch silent too long; restarting it');
      this.abandonWatch();
      void this.startWatch();
    }, this.options.watchdogMs);
    this.watchdogTimer.unref();
  }

  private retryLater(action: () => Promise<void>): void {
    if (this.stopped) return;
    const delay = Math.min(this.options.maxBackoffMs, this.options.initialBackoffMs * 2 ** this.failures);
    this.failures += 1;
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => void action(), delay * (0.8 + Math.random() * 0.4));
    this.retryTimer.unref();
  }

  private store(received: T): void {
    const object = (this.options.transform ? this.options.transform(received) : received) as T;
    const key = objectKey(object);
    const previous = this.cache.get(key);
    if (previous && previous.metadata.resourceVersion === object.metadata.resourceVersion) return;
    this.cache.set(key, object);
    this.emit(previous ? 'update' : 'add', object, previous);
  }

  private resync(): void {
    for (const object of this.cache.values()) this.emit('update', object, object);
  }

  private emit(kind: InformerEventKind, object: T, previous: T | undefined): void {
    for (const handler of this.handlers) handler(kind, object, previous);
  }
}
