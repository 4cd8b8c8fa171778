// One cache over several namespaces (`vmta operator --namespace a,b`): an Informer per namespace,
// seen by the reconciler as one Informer (same get/list/onEvent), because a Role in each watched
// namespace grants list/watch there and nowhere else, so no cluster-wide watch is allowed.
import type { KubeClient } from './client.ts';
import { Informer, type InformerHandler, type InformerOptions, type InformerStats } from './informer.ts';
import type { KubeObject } from './types.ts';

/** What the reconciler reads from a cache, whichever namespaces it spans. */
export type ResourceCache<T extends KubeObject = KubeObject> = Pick<Informer<T>, 'stats' | 'onEvent' | 'hasSynced' | 'get' | 'list' | 'start' | 'stop'>;

export class NamespaceSetInformer<T extends KubeObject = KubeObject> implements ResourceCache<T> {
  private readonly byNamespace: Map<string, Informer<T>>;

  constructor(client: KubeClient, namespaces: readonly string[], options: Omit<InformerOptions, 'namespace'>) {
    this.byNamespace = new Map(namespaces.map((namespace) => [namespace, new Informer<T>(client, { ...options, namespace })]));
  }

  /** Sums over the namespaces. */
  get stats(): InformerStats {
    const sum: InformerStats = { lists: 0, watches: 0, relistsAfterGone: 0, watchdogRestarts: 0 };
    for (const informer of this.byNamespace.values()) for (const key of Object.keys(sum) as (keyof InformerStats)[]) sum[key] += informer.stats[key];
    return sum;
  }

  onEvent(handler: InformerHandler<T>): void {
    for (const informer of this.byNamespace.values()) informer.onEvent(handler);
  }

  get hasSynced(): boolean {
    return [...this.byNamespace.values()].every((informer) => informer.hasSynced);
  }

  /** key is "namespace/name", as objectKey() makes it. */
  get(key: string): T | undefined {
    return this.byNamespace.get(key.slice(0, key.indexOf('/')))?.get(key);
  }

  list(namespace?: string): T[] {
    if (namespace !== undefined) return this.byNamespace.get(namespace)?.list() ?? [];
    return [...this.byNamespace.values()].flatMap((informer) => informer.list());
  }

  async start(): Promise<void> {
    await Promise.all([...this.byNamespace.values()].map((informer) => informer.start()));
  }

  stop(): void {
    for (const informer of this.byNamespace.values()) informer.stop();
  }
}

/** An Informer for all namespaces (none given) or one, a NamespaceSetInformer for several. */
export function namespacedCache<T extends KubeObject = KubeObject>(client: KubeClient, namespaces: readonly string[] | undefined, options: Omit<InformerOptions, 'namespace'>): ResourceCache<T> {
  if (!namespaces || namespaces.length === 0) return new Informer<T>(client, options);
  if (namespaces.length === 1) return new Informer<T>(client, { ...options, namespace: namespaces[0] });
  return new NamespaceSetInformer<T>(client, namespaces, options);
}
