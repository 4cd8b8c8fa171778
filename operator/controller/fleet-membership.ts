// Who holds a share of a pool's limits (docs/fleet-limits.md): the controller publishes the
// ordinals of the pool's ready pods in the fleet ConfigMap, and re-shares when that set changes
// (replicas changed, a pod stopped being ready or came back). A change lowers before it raises:
// the new membership goes out with the previous one and `raiseAfter`, until which every relay
// takes the smaller of its two shares. RAISE_DELAY_MS is longer than the kubelet takes to bring
// a ConfigMap change into the pods' files (its sync period, one minute by default), so by then
// every pod has read the change. While a change is pending the next one waits for it: each pod
// then holds at most what the settled membership before gave it, and the sum stays within the limit.
import type { VirtualMtaPool } from '../api/virtual-mta-pool.ts';
import type { ResourceCache } from '../kube/namespace-set-informer.ts';
import type { KubeObject } from '../kube/types.ts';
import type { DesiredObject } from '../render/contract.ts';
import { FLEET_FILE, fleetConfigMap, fleetConfigMapName } from '../render/fleet.ts';
import { selectorLabels } from '../render/layout.ts';
import { poolObjectMetadata } from '../render/pool.ts';
import { FleetMembership } from '../../mta/delivery/fleet-share.ts';

/** How long after a re-share the raised shares apply: past the kubelet's ConfigMap propagation. */
export const RAISE_DELAY_MS = 120_000;

/** The pool's pods that are Ready and not terminating. */
export function readyPoolPods(pods: ResourceCache, namespace: string | undefined, poolName: string): KubeObject[] {
  const selector = selectorLabels(poolName);
  return pods
    .list(namespace)
    .filter((pod) => Object.entries(selector).every(([k, v]) => pod.metadata.labels?.[k] === v))
    .filter((pod) => !pod.metadata.deletionTimestamp)
    .filter((pod) => ((pod.status as { conditions?: { type: string; status: string }[] } | undefined)?.conditions ?? []).some((c) => c.type === 'Ready' && c.status === 'True'));
}

/**
 * Ordinals for a Deployment's ready pods, whose names carry none: a pod keeps the rank the
 * published membership gave it, a new one takes the lowest ordinal no published member holds (so
 * under the previous table it is no member and holds nothing until the raise). Pods that are not
 * ready lose their entry, and with it any share.
 */
export function deploymentRanks(readyNames: readonly string[], published: FleetMembership | undefined): Record<string, number> {
  const ranks: Record<string, number> = {};
  const taken = new Set(published?.members ?? []);
  const fresh: string[] = [];
  for (const name of [...readyNames].sort()) {
    const rank = published?.ranks?.[name];
    if (rank === undefined) fresh.push(name);
    else {
      ranks[name] = rank;
      taken.add(rank);
    }
  }
  let next = 0;
  for (const name of fresh) {
    while (taken.has(next)) next += 1;
    ranks[name] = next;
    taken.add(next);
  }
  return ranks;
}

/** The ordinals of StatefulSet pods "<pool>-<n>", sorted. */
export function podOrdinals(pods: KubeObject[], poolName: string): number[] {
  const prefix = `${poolName}-`;
  return pods
    .map((pod) => pod.metadata.name)
    .filter((name) => name.startsWith(prefix) && /^\d+$/.test(name.slice(prefix.length)))
    .map((name) => Number(name.slice(prefix.length)))
    .sort((a, b) => a - b);
}

/** The membership the fleet ConfigMap holds now; undefined when there is none or it does not parse. */
export function publishedMembership(configMap: KubeObject | undefined): FleetMembership | undefined {
  const text = (configMap?.data as Record<string, string> | undefined)?.[FLEET_FILE];
  if (text === undefined) return undefined;
  try {
    const parsed = FleetMembership.safeParse(JSON.parse(text));
    return parsed.success ? parsed.data : undefined;
  } catch {
    return undefined;
  }
}

export interface MembershipDecision {
  membership: FleetMembership;
  /** Look again then: a pending raise holds back a change of the ready set. */
  recheckAfterMs?: number;
}

/**
 * The membership to publish given the published one and the ready ordinals at `now`. A pending
 * change: kept as it is until its raiseAfter. Nothing published yet, or a settled empty
 * membership (no pod holds anything): the ready set at once. Otherwise a changed set goes out with the
 * published members as previousMembers and raiseAfter = now + raiseDelayMs.
 */
export function nextMembership(published: FleetMembership | undefined, ready: readonly number[], now: number, raiseDelayMs = RAISE_DELAY_MS, ranks?: Record<string, number>): MembershipDecision {
  const members = [...new Set(ready)].sort((a, b) => a - b);
  const named = ranks ? { ranks } : {};
  if (!published) return { membership: { members, ...named } };
  const raiseAt = published.raiseAfter ? Date.parse(published.raiseAfter) : undefined;
  const same = published.members.length === members.length && published.members.every((member, index) => member === members[index]);
  if (raiseAt !== undefined && raiseAt > now) return { membership: published, ...(same ? {} : { recheckAfterMs: raiseAt - now }) };
  if (same) return { membership: published };
  if (published.members.length === 0) return { membership: { members, ...named } };
  return { membership: { members, previousMembers: published.members, raiseAfter: new Date(now + raiseDelayMs).toISOString(), ...named }, recheckAfterMs: raiseDelayMs };
}

/** The fleet ConfigMap a pool should have now: a StatefulSet's pods by their ordinals, a Deployment's by ranks. */
export function fleetObject(caches: { pods: ResourceCache; configMaps: ResourceCache }, pool: VirtualMtaPool, namespace: string, now: number): { object: DesiredObject; recheckAfterMs?: number } {
  const name = pool.metadata.name;
  const published = publishedMembership(caches.configMaps.get(`${namespace}/${fleetConfigMapName(name)}`));
  const readyPods = readyPoolPods(caches.pods, namespace, name);
  const ranks = pool.spec.spool.mode === 'ephemeral' ? deploymentRanks(readyPods.map((pod) => pod.metadata.name), published) : undefined;
  const decision = nextMembership(published, ranks ? Object.values(ranks) : podOrdinals(readyPods, name), now, RAISE_DELAY_MS, ranks);
  return { object: fleetConfigMap(name, decision.membership, poolObjectMetadata(pool, namespace)), ...(decision.recheckAfterMs === undefined ? {} : { recheckAfterMs: decision.recheckAfterMs }) };
}
