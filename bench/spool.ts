// Spool benchmark (prints figures; not a test): `node bench/spool.ts [messages] [queued]`
//  1. store throughput: `messages` (default 5000) messages of 10 KiB stored by 20 concurrent
//     writers, as 20 SMTP sessions would; stores/s, store latency p50/p99, fsyncs per message.
//  2. completion: the same messages finished as 20 concurrent deliveries would (record the
//     recipients' results, then remove); completions/s and fsyncs per message.
//  3. restart recovery: `queued` (default 100 000) messages in the spool, then a fresh open()
//     and a full scan() that keeps every envelope (as the scheduler does); time and memory.
// Real files and real fsyncs in a temp directory under os.tmpdir() (or SPOOL_BENCH_DIR).
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { RelayMetrics } from '../mta/observe/metrics.ts';
import { FileSpool } from '../mta/spool/spool.ts';
import type { Envelope, SpooledMessage } from '../mta/spool/types.ts';

const MESSAGES = Number(process.argv[2] ?? 5000);
const QUEUED = Number(process.argv[3] ?? 100_000);
const CONCURRENCY = 20;
const MESSAGE = Buffer.alloc(10 * 1024, 'Lorem ipsum dolor sit amet, consectetur adipiscing elit.\r\n');

function envelope(index: number): Omit<Envelope, 'size'> {
  return {
    mailFrom: 'newsletter@shop.example.org',
    recipients: Array.from({ length: 1 + (index % 3) }, (_, n) => ({ address: `user${index}.${n}@example${index % 50}.net`, domain: `example${index % 50}.net`, status: 'pending' as const, attempts: 0, nextAttemptAt: 0 })),
    virtualMta: `vmta-${index % 4}`,
    receivedAt: Date.now(),
    listener: 'submission',
    clientAddress: '192.0.2.10',
    user: 'shop',
    eightBitMime: false,
    smtpUtf8: false,
  };
}

async function fsyncs(metrics: RelayMetrics): Promise<number> {
  return (await metrics.spoolFsyncs.get()).values[0]?.value ?? 0;
}

function percentile(sorted: number[], fraction: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * fraction))] ?? NaN;
}

async function storeMany(spool: FileSpool, count: number, concurrency: number, latencies?: number[]): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < count) {
        const index = next++;
        const started = performance.now();
        await spool.store(envelope(index), MESSAGE);
        latencies?.push(performance.now() - started);
      }
    }),
  );
}

/** QUEUED messages in a spool, a third of them with a delivery attempt recorded, as in a queue blocked for a while. */
async function fillQueue(directory: string): Promise<void> {
  const filling = await FileSpool.open(directory);
  await storeMany(filling, QUEUED, 64);
  const deferred: Promise<void>[] = [];
  let marked = 0;
  for await (const { id } of filling.scan()) {
    if (marked++ % 3 === 0) deferred.push(filling.recordRecipientResults(id, new Map([[0, { status: 'pending' as const, nextAttemptAt: Date.now() + 600_000, lastResult: '451 4.7.1 try again later' }]])));
  }
  await Promise.all(deferred);
  await filling.close();
}

const root = await fs.mkdtemp(path.join(process.env.SPOOL_BENCH_DIR ?? os.tmpdir(), 'spool-bench-'));
let rssPeak = 0;
const sampler = setInterval(() => (rssPeak = Math.max(rssPeak, process.memoryUsage.rss())), 50);
try {
  const metrics = new RelayMetrics({ processMetrics: false });
  const spool = await FileSpool.open(path.join(root, 'throughput'), { metrics });
  await storeMany(spool, 200, CONCURRENCY); // warm up (directories, JIT)
  const fsyncsBefore = await fsyncs(metrics);
  const latencies: number[] = [];
  const started = performance.now();
  await storeMany(spool, MESSAGES, CONCURRENCY, latencies);
  const seconds = (performance.now() - started) / 1000;
  const fsyncsPerMessage = ((await fsyncs(metrics)) - fsyncsBefore) / MESSAGES;
  latencies.sort((a, b) => a - b);
  console.log(`store: ${MESSAGES} x 10 KiB at concurrency ${CONCURRENCY}: ${(MESSAGES / seconds).toFixed(0)} stores/s, p50 ${percentile(latencies, 0.5).toFixed(2)} ms, p99 ${percentile(latencies, 0.99).toFixed(2)} ms, ${fsyncsPerMessage.toFixed(2)} fsyncs/message`);

  const finished: SpooledMessage[] = [];
  for await (const message of spool.scan()) finished.push(message);
  const completionFsyncsBefore = await fsyncs(metrics);
  const completionStarted = performance.now();
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      for (let message = finished.pop(); message; message = finished.pop()) {
        const results = new Map(message.envelope.recipients.map((_, index) => [index, { status: 'delivered' as const, nextAttemptAt: 0, lastResult: '250 2.0.0 Ok: queued' }]));
        await spool.recordRecipientResults(message.id, results);
        await spool.remove(message.id);
      }
    }),
  );
  const completed = MESSAGES + 200;
  const completionSeconds = (performance.now() - completionStarted) / 1000;
  const completionFsyncs = ((await fsyncs(metrics)) - completionFsyncsBefore) / completed;
  await spool.close();
  console.log(`complete: ${completed} messages (record results + remove) at concurrency ${CONCURRENCY}: ${(completed / completionSeconds).toFixed(0)}/s, ${completionFsyncs.toFixed(2)} fsyncs/message`);

  const queueDir = path.join(root, 'recovery');
  const fillStarted = performance.now();
  await fillQueue(queueDir); // in a function of its own, so the filling spool is garbage before the restart
  console.log(`fill: ${QUEUED} messages stored in ${((performance.now() - fillStarted) / 1000).toFixed(1)} s`);

  const heapBefore = process.memoryUsage().heapUsed;
  const scanStarted = performance.now();
  const reopened = await FileSpool.open(queueDir);
  const openSeconds = (performance.now() - scanStarted) / 1000;
  const kept: SpooledMessage[] = [];
  for await (const message of reopened.scan()) kept.push(message);
  const scanSeconds = (performance.now() - scanStarted) / 1000;
  const heapMb = (process.memoryUsage().heapUsed - heapBefore) / 1024 / 1024;
  await reopened.close();
  console.log(`recovery: open ${openSeconds.toFixed(2)} s, open + scan of ${kept.length} envelopes ${scanSeconds.toFixed(2)} s (${(kept.length / scanSeconds).toFixed(0)}/s), envelopes held: ${heapMb.toFixed(0)} MB heap`);
  console.log(`memory: rss peak ${(rssPeak / 1024 / 1024).toFixed(0)} MB`);
  console.log(
    `stores_per_s=${(MESSAGES / seconds).toFixed(0)} store_p99_ms=${percentile(latencies, 0.99).toFixed(2)} fsyncs_per_msg=${fsyncsPerMessage.toFixed(2)} scan_100k_s=${scanSeconds.toFixed(2)} rss_peak_mb=${(rssPeak / 1024 / 1024).toFixed(0)}`,
  );
} finally {
  clearInterval(sampler);
  await fs.rm(root, { recursive: true, force: true });
}
