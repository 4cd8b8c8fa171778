// The controller's re-share decision (operator/controller/fleet-membership.ts) as a class: every
// published membership (settled or with a pending raise) × every ready set of 0..4 pods × limits
// 1..7, checked with the relay's own share arithmetic (mta/delivery/fleet-share.ts). While the
// kubelet brings the new file into the pods, some pods hold the published table and some the
// decided one: at no instant up to the raise may their shares sum above the limit, and after the
// raise the ready pods hold the whole limit between them.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { deploymentRanks, GATHER_MS, gatherWait, isDelivering, statefulSetMembers, nextMembership, podOrdinals, publishedMembership, RAISE_DELAY_MS } from '../../operator/controller/fleet-membership.ts';
import type { KubeObject } from '../../operator/kube/types.ts';
import { connectionShare, memberOrdinal, type FleetMembership } from '../../mta/delivery/fleet-share.ts';

const WINDOW = 60_000;
const GUARD = 5_000;
const NOW = Date.parse('2026-12-03T22:00:00.000Z');

function subsets(pods: number): number[][] {
  return Array.from({ length: 2 ** pods }, (_, mask) => Array.from({ length: pods }, (_, ordinal) => ordinal).filter((ordinal) => mask & (1 << ordinal)));
}

const share = (limit: number, ordinal: number, membership: FleetMembership, at: number) => connectionShare(limit, { ordinal, membership, rotationWindowMs: WINDOW, rotationGuardMs: GUARD }, at);

/** Published memberships: settled ones, and changes from each settled one whose raise is still pending (+30 s) or has passed (-1 s). */
function publishedStates(pods: number): FleetMembership[] {
  const settled = subsets(pods).map((members) => ({ members }));
  const changes = subsets(pods).flatMap((previousMembers) =>
    subsets(pods)
      .filter((members) => previousMembers.length > 0 && members.join() !== previousMembers.join())
      .flatMap((members) => [30_000, -1_000].map((raiseIn) => ({ members, previousMembers, raiseAfter: new Date(NOW + raiseIn).toISOString() }))),
  );
  return [...settled, ...changes];
}

test('a re-share never lets the pods on the published and on the decided membership together exceed the limit, and gives the ready pods the whole limit once raised', () => {
  const pods = 4;
  let instants = 0;
  for (const published of publishedStates(pods)) {
    for (const ready of subsets(pods)) {
      const { membership: decided, recheckAfterMs } = nextMembership(published, ready, NOW);
      const raiseAt = decided.raiseAfter ? Math.max(Date.parse(decided.raiseAfter), NOW + 1) : NOW + 1;
      for (let limit = 1; limit <= 7; limit += 1) {
        // Until the raise each pod holds the published table or already the decided one (the kubelet updates pods one by one): take the larger per pod.
        for (const at of [NOW, NOW + GUARD + 1, NOW + WINDOW - 1, NOW + WINDOW + GUARD + 1, raiseAt - 1].filter((t) => t < raiseAt)) {
          const worst = Array.from({ length: pods }, (_, ordinal) => Math.max(share(limit, ordinal, published, at), share(limit, ordinal, decided, at))).reduce((a, b) => a + b, 0);
          assert.ok(worst <= limit, `limit ${limit}, published ${JSON.stringify(published)}, ready [${ready}] -> ${JSON.stringify(decided)} at +${at - NOW}ms: ${worst} connections`);
          instants += 1;
        }
        // After the raise the decided members share the whole limit (a limit below the member count rotates: at most the limit).
        const total = decided.members.reduce((sum, ordinal) => sum + share(limit, ordinal, decided, raiseAt + GUARD + 1), 0);
        if (limit >= decided.members.length) assert.equal(total, decided.members.length === 0 ? 0 : limit, `limit ${limit} over [${decided.members}] after the raise`);
        else assert.equal(total, limit, `rotating limit ${limit} over [${decided.members}] past the guard`);
      }
      // The published file is one the relay accepts, and a change held back by a pending raise is looked at when the raise passes.
      assert.deepEqual(publishedMembership({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'p-fleet' }, data: { 'membership.json': JSON.stringify(decided) } }), decided);
      const heldBack = published.raiseAfter !== undefined && Date.parse(published.raiseAfter) > NOW && ready.join() !== published.members.join();
      if (heldBack) assert.deepEqual([decided, recheckAfterMs], [published, 30_000]);
      else if (ready.join() !== published.members.join()) assert.deepEqual(decided.members, ready, 'otherwise the ready pods are the members');
    }
  }
  assert.ok(instants > 10_000, `${instants} instants checked`);
});

test('a change waits while a raise is pending, then goes out lowering first; a settled, unchanged membership is left as it is', () => {
  const settled = { members: [0, 1] };
  assert.equal(nextMembership(settled, [1, 0], NOW).membership, settled, 'same members in any order: nothing to write');
  const lowered = nextMembership(settled, [0], NOW);
  assert.deepEqual(lowered, { membership: { members: [0], previousMembers: [0, 1], raiseAfter: new Date(NOW + RAISE_DELAY_MS).toISOString() }, recheckAfterMs: RAISE_DELAY_MS });
  assert.deepEqual(nextMembership(lowered.membership, [0, 1], NOW + 10_000), { membership: lowered.membership, recheckAfterMs: RAISE_DELAY_MS - 10_000 });
  const later = nextMembership(lowered.membership, [0, 1], NOW + RAISE_DELAY_MS);
  assert.deepEqual(later.membership, { members: [0, 1], previousMembers: [0], raiseAfter: new Date(NOW + 2 * RAISE_DELAY_MS).toISOString() });
  assert.deepEqual(nextMembership(undefined, [2, 0], NOW), { membership: { members: [0, 2] } }, 'nothing published: the ready pods at once');
  assert.deepEqual(nextMembership({ members: [] }, [1], NOW), { membership: { members: [1] } }, 'nobody held a share: no lowering needed');
});

test('ordinals come from the StatefulSet pod names of the pool only; a ConfigMap that does not parse counts as none', () => {
  const pod = (name: string): KubeObject => ({ apiVersion: 'v1', kind: 'Pod', metadata: { name } });
  assert.deepEqual(podOrdinals(['outbound-10', 'outbound-2', 'outbound-x', 'outbound-fleet-0', 'other-1', 'outbound-'].map(pod), 'outbound'), [2, 10]);
  const configMap = (data: Record<string, string> | undefined): KubeObject => ({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'outbound-fleet' }, data });
  for (const text of ['not json', '{"members":[-1]}', '{"members":[0],"extra":1}', '[]']) assert.equal(publishedMembership(configMap({ 'membership.json': text })), undefined, text);
  assert.equal(publishedMembership(configMap(undefined)), undefined);
  assert.equal(publishedMembership(undefined), undefined);
});

test('a Deployment\'s pods, ranked by name: over a long run of readiness changes no pod takes an ordinal a published member holds, and the old and new files together never exceed the limit', () => {
  const names = ['pool-7c9f-abcde', 'pool-7c9f-fghij', 'pool-7c9f-klmno', 'pool-5b2d-pqrst', 'pool-5b2d-uvwxy'];
  let seed = 12;
  const random = () => ((seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31) / 2 ** 31);
  let published: FleetMembership | undefined;
  let now = NOW;
  let changes = 0;
  for (let step = 0; step < 400; step += 1) {
    const ready = names.filter(() => random() < 0.6);
    const ranks = deploymentRanks(ready, published);
    assert.equal(new Set(Object.values(ranks)).size, ready.length, 'one ordinal per ready pod');
    for (const name of ready) {
      const before = published?.ranks?.[name];
      if (before !== undefined) assert.equal(ranks[name], before, `${name} keeps its rank`);
      else assert.ok(!(published?.members ?? []).includes(ranks[name]!), `${name} takes no ordinal a published member holds`);
    }
    const { membership: decided } = nextMembership(published, Object.values(ranks), now, RAISE_DELAY_MS, ranks);
    if (published && decided !== published) {
      changes += 1;
      const raiseAt = decided.raiseAfter ? Date.parse(decided.raiseAfter) : now + 1;
      for (let limit = 1; limit <= 5; limit += 1) {
        for (const at of [now, now + GUARD + 1, raiseAt - 1]) {
          const worst = names.map((name) => Math.max(share(limit, memberOrdinal(published!, name), published!, at), share(limit, memberOrdinal(decided, name), decided, at))).reduce((a, b) => a + b, 0);
          assert.ok(worst <= limit, `step ${step}, limit ${limit}: ${JSON.stringify(published)} -> ${JSON.stringify(decided)}: ${worst}`);
        }
      }
    }
    published = decided;
    now += random() < 0.5 ? RAISE_DELAY_MS + 1 : 10_000; // the raise passes, or the next change comes while it is pending
  }
  assert.ok(changes > 50, `${changes} re-shares checked`);
});

/** A pool pod in a given state: phase, the relay container's started flag and state, Ready, terminating. */
function podIn(state: { phase?: string; started?: boolean; container?: 'running' | 'waiting' | 'terminated' | 'absent'; ready?: boolean; terminating?: boolean; startedAt?: number; name?: string }): KubeObject {
  const containerState = state.container === 'running' ? { running: { startedAt: new Date(state.startedAt ?? NOW).toISOString() } } : state.container === 'waiting' ? { waiting: { reason: 'CrashLoopBackOff' } } : { terminated: { exitCode: 1 } };
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: state.name ?? 'outbound-0', ...(state.terminating ? { deletionTimestamp: new Date(NOW).toISOString() } : {}) },
    status: {
      ...(state.phase ? { phase: state.phase } : {}),
      conditions: [{ type: 'Ready', status: state.ready ? 'True' : 'False' }],
      ...(state.container === 'absent' ? {} : { containerStatuses: [{ name: 'relay', ready: !!state.ready, ...(state.started === undefined ? {} : { started: state.started }), state: containerState }] }),
    },
  };
}

test('a pod holds a share exactly when its relay delivers: running and started, not terminating, ready or not', () => {
  let checked = 0;
  for (const phase of [undefined, 'Pending', 'Running', 'Succeeded', 'Failed'])
    for (const started of [undefined, false, true])
      for (const container of ['running', 'waiting', 'terminated', 'absent'] as const)
        for (const ready of [false, true])
          for (const terminating of [false, true]) {
            const expected = phase === 'Running' && started === true && container === 'running' && !terminating;
            assert.equal(isDelivering(podIn({ phase, started, container, ready, terminating })), expected, JSON.stringify({ phase, started, container, ready, terminating }));
            checked += 1;
          }
  assert.equal(checked, 240);
  const otherContainer = podIn({ phase: 'Running', started: true, container: 'running' });
  (otherContainer.status as { containerStatuses: { name: string }[] }).containerStatuses[0]!.name = 'sidecar';
  assert.equal(isDelivering(otherContainer), false, 'only the relay container counts');
});

test('the first membership of a rollout waits for the workload\'s pods to deliver, at most GATHER_MS after the first started; a pool where someone holds a share never waits', () => {
  const delivering = (count: number, firstStartedAgo: number) => Array.from({ length: count }, (_, index) => podIn({ phase: 'Running', started: true, container: 'running', name: `outbound-${index}`, startedAt: NOW - firstStartedAgo + index * 1000 }));
  for (const published of [undefined, { members: [] }, { members: [], previousMembers: [0], raiseAfter: new Date(NOW + 1000).toISOString() }, { members: [0] }] as (FleetMembership | undefined)[])
    for (let expected = 1; expected <= 4; expected += 1)
      for (let count = 0; count <= expected; count += 1)
        for (const ago of [0, GATHER_MS / 2, GATHER_MS - 1, GATHER_MS, GATHER_MS * 3]) {
          const wait = gatherWait(published, delivering(count, ago), expected, NOW);
          const nobodyHolds = !published || (published.members.length === 0 && !published.previousMembers?.length);
          const shouldWait = nobodyHolds && count > 0 && count < expected && ago < GATHER_MS;
          assert.equal(wait !== undefined, shouldWait, JSON.stringify({ published, expected, count, ago, wait }));
          if (wait !== undefined) assert.ok(wait > 0 && wait <= GATHER_MS - ago, `waits ${wait} ms, no longer than the gather time left`);
        }
});

test('a StatefulSet\'s ordinals below its replicas keep their share while their pod is absent, terminating (replaced under its ordinal) or starts for the first time; a relay that ran and stopped loses it, and so does a terminating pod above the replicas', () => {
  type State = 'absent' | 'delivering' | 'starting' | 'crashed' | 'terminating';
  const make = (ordinal: number, state: State): KubeObject | undefined => {
    const name = `outbound-${ordinal}`;
    if (state === 'absent') return undefined;
    if (state === 'delivering') return podIn({ name, phase: 'Running', started: true, container: 'running' });
    if (state === 'terminating') return podIn({ name, phase: 'Running', started: true, container: 'running', terminating: true });
    const pod = podIn({ name, phase: state === 'starting' ? 'Pending' : 'Running', started: false, container: 'waiting' });
    if (state === 'crashed') (pod.status as { containerStatuses: { restartCount?: number }[] }).containerStatuses[0]!.restartCount = 3;
    return pod;
  };
  const states: State[] = ['absent', 'delivering', 'starting', 'crashed', 'terminating'];
  let checked = 0;
  for (let replicas = 0; replicas <= 3; replicas += 1)
    for (let mask = 0; mask < states.length ** 4; mask += 1) {
      const chosen = [0, 1, 2, 3].map((ordinal) => states[Math.floor(mask / states.length ** ordinal) % states.length]!);
      const pods = chosen.map((state, ordinal) => make(ordinal, state)).filter((pod): pod is KubeObject => pod !== undefined);
      const expected = chosen.flatMap((state, ordinal) => (state === 'delivering' || (ordinal < replicas && (state === 'absent' || state === 'starting' || state === 'terminating')) ? [ordinal] : []));
      assert.deepEqual(statefulSetMembers(pods, 'outbound', replicas), expected, `${replicas} replicas: ${chosen.join(', ')}`);
      checked += 1;
    }
  assert.equal(checked, 4 * 625);
});
