// poolRequeue over every combination of its inputs: the soonest wanted look wins, a converged pool
// with nothing pending is left to its watches, and each reason alone gives its own interval.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { poolRequeue, type PoolRecheck } from '../../operator/controller/pool-requeue.ts';

const intervals = { pollIntervalMs: 5000, dkimRecheckIntervalMs: 60_000, warmupRefreshIntervalMs: 30_000 };

test('the soonest of the wanted looks, over every combination of drain, fleet raise, rollout, DKIM and warm-up', () => {
  let cases = 0;
  for (const drainAfterMs of [undefined, 1000, 9000])
    for (const fleetAfterMs of [undefined, 2000, 120_000])
      for (const converged of [true, false])
        for (const dkimPending of [true, false])
          for (const warming of [true, false]) {
            const recheck: PoolRecheck = { drainAfterMs, fleetAfterMs, converged, dkimPending, warming };
            const wanted = [
              ...(drainAfterMs === undefined ? [] : [Math.min(drainAfterMs, intervals.pollIntervalMs)]),
              ...(fleetAfterMs === undefined ? [] : [converged ? fleetAfterMs : Math.min(fleetAfterMs, intervals.pollIntervalMs)]),
              ...(converged ? [] : [intervals.pollIntervalMs]),
              ...(dkimPending ? [intervals.dkimRecheckIntervalMs] : []),
              ...(warming ? [intervals.warmupRefreshIntervalMs] : []),
            ];
            const outcome = poolRequeue(recheck, intervals);
            if (wanted.length === 0) assert.equal(outcome, undefined, JSON.stringify(recheck));
            else assert.deepEqual(outcome, { requeueAfterMs: Math.min(...wanted) }, JSON.stringify(recheck));
            cases += 1;
          }
  assert.equal(cases, 72);
});

test('each reason alone on a converged pool', () => {
  const idle: PoolRecheck = { converged: true, dkimPending: false, warming: false };
  assert.equal(poolRequeue(idle, intervals), undefined);
  assert.deepEqual(poolRequeue({ ...idle, warming: true }, intervals), { requeueAfterMs: 30_000 });
  assert.deepEqual(poolRequeue({ ...idle, dkimPending: true }, intervals), { requeueAfterMs: 60_000 });
  assert.deepEqual(poolRequeue({ ...idle, fleetAfterMs: 120_000 }, intervals), { requeueAfterMs: 120_000 });
  assert.deepEqual(poolRequeue({ ...idle, drainAfterMs: 9000 }, intervals), { requeueAfterMs: 5000 });
  assert.deepEqual(poolRequeue({ ...idle, converged: false }, intervals), { requeueAfterMs: 5000 });
});
