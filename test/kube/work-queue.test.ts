import assert from 'node:assert/strict';
import { test } from 'node:test';
import { WorkQueue } from '../../operator/kube/work-queue.ts';
import { OperatorMetrics } from '../../operator/observe/metrics.ts';
import { eventually } from './helpers.ts';

test('work queue de-duplicates a key added many times while it waits', async () => {
  const queue = new WorkQueue({ name: 't', concurrency: 1 });
  const processed: string[] = [];
  for (let i = 0; i < 5; i++) queue.add('a');
  queue.add('b');
  queue.start(async (key) => {
    processed.push(key);
  });
  await queue.idle();
  assert.deepEqual(processed, ['a', 'b']);
});

test('work queue never processes one key twice at once, and re-runs a key added while it ran', async () => {
  const queue = new WorkQueue({ name: 't', concurrency: 4 });
  let running = 0;
  let maxRunning = 0;
  let runs = 0;
  queue.start(async () => {
    running += 1;
    runs += 1;
    maxRunning = Math.max(maxRunning, running);
    if (runs === 1) queue.add('a');
    await new Promise((r) => setTimeout(r, 30));
    running -= 1;
  });
  queue.add('a');
  await eventually('second run', () => runs === 2);
  await queue.idle();
  assert.equal(maxRunning, 1);
  assert.equal(runs, 2);
});

test('work queue bounds concurrency across keys', async () => {
  const queue = new WorkQueue({ name: 't', concurrency: 3, rateLimitPerSecond: 1000, burst: 1000 });
  let running = 0;
  let maxRunning = 0;
  queue.start(async () => {
    running += 1;
    maxRunning = Math.max(maxRunning, running);
    await new Promise((r) => setTimeout(r, 20));
    running -= 1;
  });
  for (let i = 0; i < 20; i++) queue.add(`k${i}`);
  await queue.idle();
  assert.equal(maxRunning, 3);
});

test('work queue retries a failing key with growing per-key backoff and forgets it after success', async () => {
  const metrics = new OperatorMetrics();
  const queue = new WorkQueue({ name: 'retry', concurrency: 1, baseDelayMs: 20, metrics });
  const attempts: number[] = [];
  queue.start(async () => {
    attempts.push(Date.now());
    if (attempts.length < 4) throw new Error('not yet');
  });
  queue.add('flaky');
  await eventually('four attempts', () => attempts.length === 4);
  await queue.idle();
  const gaps = attempts.slice(1).map((t, i) => t - attempts[i]!);
  // Delays of 20, 40 and 80 ms: each at least the configured backoff.
  assert.ok(gaps[0]! >= 18 && gaps[1]! >= 38 && gaps[2]! >= 78, `gaps ${gaps.join(',')}`);
  assert.equal(queue.failureCount('flaky'), 0);
  const text = await metrics.registry.metrics();
  assert.match(text, /workqueue_retries_total\{name="retry"\} 3/);
  assert.match(text, /workqueue_adds_total\{name="retry"\} 4/);
  assert.match(text, /workqueue_work_duration_seconds_count\{name="retry"\} 4/);
  assert.match(text, /workqueue_queue_duration_seconds_count\{name="retry"\} 4/);
  assert.match(text, /workqueue_depth\{name="retry"\} 0/);
});

test('work queue token bucket limits the global rate after the burst', async () => {
  const queue = new WorkQueue({ name: 't', concurrency: 10, rateLimitPerSecond: 20, burst: 2 });
  const started: number[] = [];
  queue.start(async () => {
    started.push(Date.now());
  });
  const begin = Date.now();
  for (let i = 0; i < 6; i++) queue.add(`k${i}`);
  await queue.idle();
  // 2 from the burst, then 4 more at 20/s: at least ~200 ms in all.
  assert.equal(started.length, 6);
  assert.ok(started[5]! - begin >= 180, `took ${started[5]! - begin} ms`);
});

test('work queue honours a requested requeue delay', async () => {
  const queue = new WorkQueue({ name: 't', concurrency: 1 });
  const runs: number[] = [];
  queue.start(async () => {
    runs.push(Date.now());
    return runs.length === 1 ? { requeueAfterMs: 100 } : undefined;
  });
  queue.add('a');
  await eventually('second run', () => runs.length === 2);
  assert.ok(runs[1]! - runs[0]! >= 95);
  await queue.shutdown();
});
