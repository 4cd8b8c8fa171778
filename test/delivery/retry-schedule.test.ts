import assert from 'node:assert/strict';
import { test } from 'node:test';
import { afterDeferral, retryDelay } from '../../mta/delivery/retry-schedule.ts';

test('a retry list is followed in order and its last wait repeats', () => {
  const schedule = [60_000, 300_000, 900_000];
  assert.deepEqual([1, 2, 3, 4, 9].map((attempts) => retryDelay(schedule, attempts)), [60_000, 300_000, 900_000, 900_000, 900_000]);
});

test('exponential retry grows by the factor up to the cap', () => {
  const schedule = { initial: 60_000, factor: 2, max: 300_000 };
  assert.deepEqual([1, 2, 3, 4, 5].map((attempts) => retryDelay(schedule, attempts)), [60_000, 120_000, 240_000, 300_000, 300_000]);
});

test('a deferral before bounceAfter schedules a retry capped at the deadline', () => {
  const base = { receivedAt: 1_000, schedule: [600_000], bounceAfter: 1_000_000 };
  assert.deepEqual(afterDeferral({ ...base, now: 1_000, attemptsMade: 1 }), { kind: 'retry', nextAttemptAt: 601_000 });
  assert.deepEqual(afterDeferral({ ...base, now: 700_000, attemptsMade: 2 }), { kind: 'retry', nextAttemptAt: 1_001_000 });
  assert.deepEqual(afterDeferral({ ...base, now: 1_001_000, attemptsMade: 3 }), { kind: 'expired' });
});

test('an override delay (backoff) replaces the schedule', () => {
  assert.deepEqual(afterDeferral({ now: 0, receivedAt: 0, attemptsMade: 1, schedule: [60_000], bounceAfter: 10_000_000, overrideDelay: 1_800_000 }), { kind: 'retry', nextAttemptAt: 1_800_000 });
});

test('the scheduled heap hands out items in due-time order', async () => {
  const { ItemHeap } = await import('../../mta/delivery/destination-queue.ts');
  const heap = new ItemHeap();
  const dues = [50, 10, 40, 10, 30, 20, 60, 0, 25];
  const message = { id: 'x', envelope: {} as never };
  for (const dueAt of dues) heap.push({ ...message, recipients: [0], dueAt });
  const order: number[] = [];
  for (let item = heap.pop(); item; item = heap.pop()) order.push(item.dueAt);
  assert.deepEqual(order, [0, 10, 10, 20, 25, 30, 40, 50, 60]);
});
