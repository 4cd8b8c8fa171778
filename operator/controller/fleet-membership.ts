// Who holds a share of a pool's limits (docs/fleet-limits.md): the controller publishes the
// ordinals of the pool's delivering pods (relay container started and running, pod not
// terminating) in the fleet ConfigMap, and re-shares when that set changes (replicas changed, a
// relay stopped or came back). Readiness is about accepting mail, not delivering it: a draining
// pod is not ready and still delivers its queue, and a readiness probe that misses once must not
// cost a pod its share for a raise delay. A StatefulSet's ordinals below its replicas whose pod is
// not there yet, is terminating (a roll or a deleted pod: the StatefulSet replaces it under the
// same ordinal, never both at once) or whose relay is starting for the first time keep (or get)
// their share, so a rolling update re-shares nothing (it lost the rolled pods minutes of sending
// behind raise delays); a new
// pool's ConfigMap names every pod before the pods mount it, so they start with their shares
// rather than after the kubelet's propagation, and a scale-out lowers the others while the new
// pod starts. A Deployment's pods carry no ordinal before they exist: their first membership waits
// (GATHER_MS at most) until every pod the workload should have delivers. A change lowers before it raises:
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
import { RELAY_CONTAINER } from '../render/workload.ts';
import { poolObjectMetadata } from '../render/pool.ts';
import { FleetMembership } from '../../mta/delivery/fleet-share.ts';

/** How long after a re-share the raised shares apply: past the kubelet's ConfigMap propagation. */
export const RAISE_DELAY_MS = 120_000;
/** How long the first membership of a rollout waits for the workload's other pods to start delivering. */
export const GATHER_MS = 30_000;
const GATHER_RECHECK_MS = 2000;

/** The pool's pods that are Ready and not terminating. */
export function readyPoolPods(pods: ResourceCache, namespace: string | undefined, poolName: string): KubeObject[] {
  return poolPods(pods, namespace, poolName)
    .filter((pod) => !pod.metadata.deletionTimestamp)
    .filter((pod) => ((pod.status as { conditions?: { type: string; status: string }[] } | undefined)?.conditions ?? []).some((c) => c.type === 'Ready' && c.status === 'True'));
}

interface PodState {
  phase?: string;
  containerStatuses?: { name: string; started?: boolean; restartCount?: number; state?: { running?: { startedAt?: string } } }[];
}

/** A pod whose relay has not started yet and never ran: scheduled, pulling, or past its start and before its startup probe passed. */
function isStartingFirstTime(pod: KubeObject): boolean {
  if (pod.metadata.deletionTimestamp) return false;
  const relay = (pod.status as PodState | undefined)?.containerStatuses?.find((container) => container.name === RELAY_CONTAINER);
  return !relay || (!relay.started && (relay.restartCount ?? 0) === 0);
}

/**
 * The ordinals of a StatefulSet pool that hold shares: its delivering pods, and the ordinals below
 * the workload's replicas whose pod does not exist yet, is being replaced (terminating) or starts
 * for the first time.
 */
export function statefulSetMembers(pods: readonly KubeObject[], poolName: string, replicas: number): number[] {
  const byOrdinal = new Map(pods.map((pod) => [podOrdinals([pod], poolName)[0], pod] as const).filter((entry): entry is readonly [number, KubeObject] => entry[0] !== undefined));
  const members = new Set(podOrdinals(pods.filter(isDelivering), poolName));
  for (let ordinal = 0; ordinal < replicas; ordinal += 1) {
    const pod = byOrdinal.get(ordinal);
    if (!pod || pod.metadata.deletionTimestamp || isStartingFirstTime(pod)) members.add(ordinal);
  }
  return [...members].sort((a, b) => a - b);
}

/** When the pod's relay container started running; undefined while it is not running (starting, crashed, waiting to restart). */
function relayRunningSince(pod: KubeObject): number | undefined {
  const status = pod.status as PodState | undefined;
  if (status?.phase !== 'Running') return undefined;
  const relay = status.containerStatuses?.find((container) => container.name === RELAY_CONTAINER);
  if (!relay?.started || !relay.state?.running) return undefined;
  const since = Date.parse(relay.state.running.startedAt ?? '');
  return Number.isNaN(since) ? 0 : since;
}

/** A pod whose relay delivers: not terminating, its relay container started (past its startup probe) and running; readiness does not matter. */
export function isDelivering(pod: KubeObject): boolean {
  return !pod.metadata.deletionTimestamp && relayRunningSince(pod) !== undefined;
}

/** The pool's pods. */
function poolPods(pods: ResourceCache, namespace: string | undefined, poolName: string): KubeObject[] {
  const selector = selectorLabels(poolName);
  return pods.list(namespace).filter((pod) => Object.entries(selector).every(([k, v]) => pod.metadata.labels?.[k] === v));
}

/**
 * Ordinals for a Deployment's delivering pods, whose names carry none: a pod keeps the rank the
 * published membership gave it, a new one takes the lowest ordinal no published member holds (so
 * under the previous table it is no member and holds nothing until the raise). Pods that do not
 * deliver lose their entry, and with it any share.
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

/**
 * While nobody holds a share (nothing published, or a settled empty membership) and fewer pods
 * deliver than the workload should run, the first membership waits for the rest, up to GATHER_MS
 * after the first of them started: how long to wait still, or undefined to publish now.
 */
export function gatherWait(published: FleetMembership | undefined, delivering: readonly KubeObject[], expectedPods: number, now: number): number | undefined {
  const nobodyHolds = !published || (published.members.length === 0 && !published.previousMembers?.length);
  if (!nobodyHolds || delivering.length === 0 || delivering.length >= expectedPods) return undefined;
  const firstStarted = Math.min(...delivering.map((pod) => relayRunningSince(pod) ?? now));
  const left = firstStarted + GATHER_MS - now;
  return left > 0 ? Math.min(left, GATHER_RECHECK_MS) : undefined;
}

/** The fleet ConfigMap a pool should have now: a StatefulSet's pods by their ordinals, a Deployment's by ranks. `expectedPods`: the replicas the workload is given. */
export function fleetObject(caches: { pods: ResourceCache; configMaps: ResourceCache }, pool: VirtualMtaPool, namespace: string, now: number, expectedPods: number): { object: DesiredObject; recheckAfterMs?: number } {
  const name = pool.metadata.name;
  const published = publishedMembership(caches.configMaps.get(`${namespace}/${fleetConfigMapName(name)}`));
  const pods = poolPods(caches.pods, namespace, name);
  const metadata = poolObjectMetadata(pool, namespace);
  if (pool.spec.spool.mode !== 'ephemeral') {
    const decision = nextMembership(published, statefulSetMembers(pods, name, expectedPods), now);
    return { object: fleetConfigMap(name, decision.membership, metadata), ...(decision.recheckAfterMs === undefined ? {} : { recheckAfterMs: decision.recheckAfterMs }) };
  }
  const delivering = pods.filter(isDelivering);
  const wait = gatherWait(published, delivering, expectedPods, now);
  if (wait !== undefined) return { object: fleetConfigMap(name, published ?? { members: [] }, metadata), recheckAfterMs: wait };
  const ranks = deploymentRanks(delivering.map((pod) => pod.metadata.name), published);
  const decision = nextMembership(published, Object.values(ranks), now, RAISE_DELAY_MS, ranks);
  return { object: fleetConfigMap(name, decision.membership, metadata), ...(decision.recheckAfterMs === undefined ? {} : { recheckAfterMs: decision.recheckAfterMs }) };
}
