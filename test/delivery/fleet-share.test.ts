import assert from 'node:assert/strict';
import { test } from 'node:test';
import { connectionShare, countShare, FleetMembership, memberOrdinal, nextShareChange, podOrdinal, rateShare, UNRANKED, type FleetPosition } from '../../mta/delivery/fleet-share.ts';

const WINDOW = 60_000;
const GUARD = 5_000;
const T0 = Date.parse('2026-12-03T12:00:00Z');

/** Readiness patterns over `pods` ordinals: all, all but the last, every second one, only the highest. */
function readinessPatterns(pods: number): number[][] {
  const all = [...Array(pods).keys()];
  const patterns = [all, all.slice(0, -1), all.filter((ordinal) => ordinal % 2 === 0), [pods - 1]];
  return patterns.filter((members) => members.length > 0);
}

function position(ordinal: number, membership: FleetMembership): FleetPosition {
  return { ordinal, membership, rotationWindowMs: WINDOW, rotationGuardMs: GUARD };
}

/** Instants around window starts and guard ends, where a rotation could overlap. */
function sampleTimes(windows: number): number[] {
  const times: number[] = [];
  for (let w = 0; w < windows; w += 1) {
    const start = T0 + w * WINDOW;
    for (const offset of [-1, 0, 1, GUARD - 1, GUARD, WINDOW / 2]) times.push(start + offset);
  }
  return times;
}

test('for limits 1..50 on 1..10 pods and any readiness, the shares never sum above the limit and every ready pod gets its turn', () => {
  for (let limit = 1; limit <= 50; limit += 1) {
    for (let pods = 1; pods <= 10; pods += 1) {
      for (const members of readinessPatterns(pods)) {
        const servedAtSomeTime = new Set<number>();
        for (const now of sampleTimes(pods + 1)) {
          let sum = 0;
          for (let ordinal = 0; ordinal < pods; ordinal += 1) {
            const share = connectionShare(limit, position(ordinal, { members }), now);
            assert.ok(Number.isInteger(share) && share >= 0, `share of pod ${ordinal} is a count: ${share}`);
            if (!members.includes(ordinal)) assert.equal(share, 0, `pod ${ordinal} is not ready and holds nothing`);
            if (share > 0) servedAtSomeTime.add(ordinal);
            sum += share;
          }
          assert.ok(sum <= limit, `limit ${limit}, members ${members}: sum ${sum} at ${now - T0}ms`);
          // Outside the guard time the whole limit is in use (no slot idles without need).
          if ((now - T0) % WINDOW >= GUARD) assert.equal(sum, limit, `limit ${limit} fully shared`);
        }
        assert.deepEqual([...servedAtSomeTime].sort((a, b) => a - b), members, `limit ${limit}: every ready pod holds a share at some time`);
      }
    }
  }
});

test('a limit at least the number of pods is split in integers with the remainder on the lowest ordinals', () => {
  assert.deepEqual([0, 1, 2].map((ordinal) => connectionShare(20, position(ordinal, { members: [0, 1, 2] }), T0)), [7, 7, 6]);
  assert.deepEqual([0, 2].map((ordinal) => connectionShare(5, position(ordinal, { members: [2, 0] }), T0)), [3, 2]);
});

test('with clocks apart by less than half the guard, rotating slots never overlap', () => {
  const skew = GUARD / 2 - 1;
  for (const [limit, pods] of [[1, 2], [1, 3], [2, 3], [3, 7]] as const) {
    const members = [...Array(pods).keys()];
    for (let now = T0 - WINDOW; now < T0 + pods * WINDOW; now += 250) {
      for (const offsets of [members.map((ordinal) => (ordinal % 2 === 0 ? skew : -skew)), members.map((ordinal) => (ordinal % 2 === 0 ? -skew : skew))]) {
        const sum = members.reduce((total, ordinal) => total + connectionShare(limit, position(ordinal, { members }), now + offsets[ordinal]!), 0);
        assert.ok(sum <= limit, `limit ${limit} on ${pods} pods at ${now - T0}ms with skew: ${sum}`);
      }
    }
  }
});

test('during a re-share, pods on the old table and pods on the new one never hold more than the limit together', () => {
  const raiseAfter = new Date(T0 + 2 * WINDOW).toISOString();
  for (let limit = 1; limit <= 30; limit += 1) {
    for (const [before, after] of [[[0, 1], [0, 1, 2]], [[0, 1, 2], [0, 1]], [[0, 1, 2, 3], [1, 3]], [[0], [0, 1, 2, 3, 4]]] as const) {
      const pods = Math.max(...before, ...after) + 1;
      for (const now of sampleTimes(3)) {
        // Any subset of pods may still be on the old table (the ConfigMap reaches pods at different times).
        for (let readMask = 0; readMask < 1 << pods; readMask += 1) {
          let sum = 0;
          for (let ordinal = 0; ordinal < pods; ordinal += 1) {
            const hasRead = (readMask >> ordinal) & 1;
            const membership: FleetMembership = hasRead ? { members: [...after], previousMembers: [...before], raiseAfter } : { members: [...before] };
            sum += connectionShare(limit, position(ordinal, membership), now);
          }
          if (now < Date.parse(raiseAfter)) assert.ok(sum <= limit, `limit ${limit}, ${before} -> ${after}, read ${readMask.toString(2)}: ${sum}`);
        }
      }
    }
  }
});

test('a pool-wide count (a warm-up cap) of 0..300 on 1..6 pods sums to the count exactly when settled and never above it during a re-share, the parts at most one apart', () => {
  let checked = 0;
  for (let pods = 1; pods <= 6; pods += 1)
    for (const members of readinessPatterns(pods))
      for (const total of [0, 1, 2, 3, 5, 7, 50, 199, 200, 300]) {
        const parts = members.map((ordinal) => countShare(total, position(ordinal, { members }), T0));
        assert.equal(parts.reduce((a, b) => a + b, 0), total, `${total} over ${members}`);
        assert.ok(Math.max(...parts) - Math.min(...parts) <= 1, `${parts} even`);
        for (const previousMembers of readinessPatterns(pods)) {
          const pending = { members, previousMembers, raiseAfter: new Date(T0 + 60_000).toISOString() };
          const everyone = [...new Set([...members, ...previousMembers])];
          // Each pod may still hold the previous table or already the pending one: the worst of both per pod.
          const worst = everyone.map((ordinal) => Math.max(countShare(total, position(ordinal, { members: previousMembers }), T0), countShare(total, position(ordinal, pending), T0)));
          assert.ok(worst.reduce((a, b) => a + b, 0) <= total, `${total}: ${previousMembers} -> ${members}`);
          assert.equal(everyone.map((ordinal) => countShare(total, position(ordinal, pending), T0 + 60_000)).reduce((a, b) => a + b, 0), total, 'after the raise the members hold the whole count');
          checked += 1;
        }
      }
  assert.ok(checked > 500, `${checked} re-shares checked`);
  assert.equal(countShare(200, position(UNRANKED, { members: [0, 1] }), T0), 0, 'a pod outside the membership takes none');
});

test('rates are divided in proportion to the connection shares and sum to the declared rate', () => {
  const rate = { count: 10, perMs: 1000 };
  for (const [limit, members] of [[3, [0, 1]], [1, [0, 1, 2]], [20, [0, 1, 2]]] as const) {
    const now = T0 + WINDOW + GUARD;
    const parts = members.map((ordinal) => rateShare(rate, limit, position(ordinal, { members: [...members] }), now)?.count ?? 0);
    assert.ok(Math.abs(parts.reduce((a, b) => a + b, 0) - 10) < 1e-9, `limit ${limit}: ${parts}`);
  }
  assert.equal(rateShare(rate, 1, position(5, { members: [0, 1] }), T0), undefined, 'a pod without a share sends nothing');
});

test('a rotating share says when it next changes; an even split does not change', () => {
  const fleet = position(0, { members: [0, 1] });
  assert.equal(nextShareChange(1, fleet, T0 + 10), T0 + GUARD);
  assert.equal(nextShareChange(1, fleet, T0 + GUARD + 10), T0 + WINDOW);
  assert.equal(nextShareChange(4, fleet, T0 + 10), undefined);
});

test('the membership file and the pod name are checked with a clear error', () => {
  assert.throws(() => FleetMembership.parse({ members: [-1] }));
  assert.throws(() => FleetMembership.parse({ members: [0], raiseAfter: 'soon' }));
  assert.equal(podOrdinal('pool-a-relay-12'), 12);
  for (const name of [undefined, 'relay', 'relay-x']) assert.throws(() => podOrdinal(name), /POD_NAME=.*does not end in "-<number>"/);
  // A Deployment's pods: the ordinal comes from the ranks alone (a random suffix may be all digits), and a pod not ranked holds nothing.
  const ranked = FleetMembership.parse({ members: [0, 1], ranks: { 'pool-5b2d-12345': 1, 'pool-5b2d-abcde': 0 } });
  assert.equal(memberOrdinal(ranked, 'pool-5b2d-12345'), 1);
  const position = (podName: string): FleetPosition => ({ ordinal: memberOrdinal(ranked, podName), membership: ranked, rotationWindowMs: 60_000, rotationGuardMs: 5_000 });
  assert.deepEqual(['pool-5b2d-abcde', 'pool-5b2d-12345', 'pool-5b2d-99999', 'pool-new'].map((name) => connectionShare(3, position(name), 0)), [2, 1, 0, 0]);
  assert.equal(memberOrdinal(ranked, undefined), UNRANKED);
  assert.equal(memberOrdinal({ members: [3] }, 'pool-3'), 3);
  assert.throws(() => FleetMembership.parse({ members: [0], ranks: { 'pool-a': -2 } }));
});
