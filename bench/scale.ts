// Scale benchmark (prints figures; not a test): a real relay process holding a very large queue.
//
//   npm run bench:scale [-- --blocked 1000000 --spread 100000 --domains 10000 --body 512]
//
// 1. Empty: the relay starts on an empty spool; its RSS after a settle is the baseline.
// 2. Fill (fast path, its own process): `blocked` single-recipient messages for one destination
//    and `spread` more over `domains` other domains are written straight through the spool API
//    (FileSpool.store, group commit, 256 writers) — no SMTP, so the fill is not what is measured.
//    Every domain routes (smtpHost) to one loopback port where nothing listens yet: every
//    connection is refused and every destination queue is deferred. The blocked destination
//    keeps the default limits (20 connections); the spread domains get 2 connections each, as
//    10,000 domains behind one sink process would otherwise open up to 100,000 sessions to it.
//    Every domain retries every 15 s, so a session lost to a slow sink does not stall the drain.
// 3. Queued: the relay starts on that spool, is stopped and started again. Printed: time from
//    spawn to listening (/readyz: the listeners open once the spool is indexed), time until the
//    admin API counts every message (at once after a clean stop: the queue snapshot), RSS with
//    the whole queue deferred (after a settle).
// 4. Drain: a discard sink starts on that port (the destination comes back) and a retry-now of
//    every queue is posted; the rate is messages / (retry -> the admin API counts none).
// 5. After drain: RSS after a settle, against the empty figure.
//
// Last line (machine-readable):
//   queued=N domains=K rss_empty_mb=N rss_queued_mb=N heap_queued_mb=N restart_listening_s=S restart_counted_s=S
//   drain_per_s=N drain_cpu_ms_per_msg=N rss_after_drain_mb=N after_drain_ratio=R
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { RELAY_NODE_OPTIONS } from '../mta/process-options.ts';
import { fillBlockedQueue } from '../test/fixtures/blocked-queue.ts';
import { baseRelayConfig, freePort, metricValue, startRelayProcess, temporaryDirectory, writeRelayConfig, type RelayProcess } from '../test/fixtures/relay-process.ts';
import { buildBody, child, cpuSeconds, rssMb, runDiscardSink } from './bench-smtp.ts';

const SELF = fileURLToPath(import.meta.url);
const BLOCKED_DOMAIN = 'blocked.scale.test';
const ADMIN_TOKEN = 'scale-bench-token';

const { values: args } = parseArgs({
  options: {
    role: { type: 'string', default: 'run' },
    spool: { type: 'string' },
    port: { type: 'string', default: '0' },
    blocked: { type: 'string', default: '1000000' },
    spread: { type: 'string', default: '100000' },
    domains: { type: 'string', default: '10000' },
    body: { type: 'string', default: '512' },
    // Long enough for the relay's idle memory release (mta/idle-memory-release.ts) to see a quiet 10 s interval after the drain.
    settle: { type: 'string', default: '25' },
  },
});

function count(name: keyof typeof args, minimum = 0): number {
  const value = Number(args[name]);
  if (!Number.isInteger(value) || value < minimum) throw new Error(`--${name}: expected an integer >= ${minimum} (got ${JSON.stringify(args[name])})`);
  return value;
}

const blocked = count('blocked');
const spread = count('spread');
const domains = count('domains', 1);
const bodyBytes = count('body', 200);
const settleMs = count('settle') * 1000;

interface QueueRow {
  domain: string;
  messages: number;
  ready: number;
  inFlight: number;
}

/**
 * fetch, tried again (up to 3 times) when the connection is reset: a kept-alive connection the
 * admin server closes just as it is reused (its keep-alive timeout runs out while a retry-now of a
 * million messages holds the event loop) resets the next request, which says nothing of the relay.
 */
async function adminFetch(url: string, init?: RequestInit): Promise<Response> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await fetch(url, init);
    } catch (error) {
      if (attempt >= 3 || (error as { cause?: { code?: string } }).cause?.code !== 'ECONNRESET') throw error;
    }
  }
}

async function queueRows(relay: RelayProcess): Promise<QueueRow[]> {
  const response = await adminFetch(`${relay.adminUrl}/api/v1/queues`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
  if (response.status !== 200) throw new Error(`queue list refused: ${response.status} ${await response.text()}`);
  return ((await response.json()) as { queues: QueueRow[] }).queues;
}

async function queuedTotal(relay: RelayProcess): Promise<number> {
  return (await queueRows(relay)).reduce((sum, row) => sum + row.messages, 0);
}

/** Poll the admin API until `done` holds for the queue total; resolves with the seconds waited. */
async function waitForTotal(relay: RelayProcess, done: (total: number) => boolean, what: string, timeoutMs: number): Promise<number> {
  const start = performance.now();
  for (;;) {
    const total = await queuedTotal(relay);
    if (done(total)) return (performance.now() - start) / 1000;
    if (performance.now() - start > timeoutMs) throw new Error(`${what}: not reached within ${timeoutMs / 1000} s (total ${total})`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

async function settledMemory(relay: RelayProcess): Promise<{ rss: number; heap: number; text: string }> {
  await new Promise((resolve) => setTimeout(resolve, settleMs));
  const mib = async (metric: string): Promise<number> => ((await metricValue(relay.adminUrl, metric)) ?? Number.NaN) / 2 ** 20;
  const [rss, heap, heapTotal, external] = [await rssMb(relay.child.pid!), await mib('nodejs_heap_size_used_bytes'), await mib('nodejs_heap_size_total_bytes'), await mib('nodejs_external_memory_bytes')];
  return { rss, heap, text: `RSS ${rss.toFixed(0)} MiB, heap ${heap.toFixed(0)} MiB (of ${heapTotal.toFixed(0)}), external ${external.toFixed(0)} MiB` };
}

/** The queue total, or undefined while the admin API does not answer one (not up yet, 503 while recovering). */
async function countedTotal(adminUrl: string): Promise<number | undefined> {
  try {
    const response = await fetch(`${adminUrl}/api/v1/queues`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
    if (response.status !== 200) return undefined;
    return ((await response.json()) as { queues: QueueRow[] }).queues.reduce((sum, row) => sum + row.messages, 0);
  } catch {
    return undefined;
  }
}

/**
 * Start the relay; seconds from spawn to listening (ready) and, watched from the spawn on (the
 * queue may be counted before the relay is ready), until every one of `expected` messages is counted.
 */
async function startTimed(configDir: string, adminPort: number, expected: number): Promise<{ relay: RelayProcess; listeningS: number; countedS: number }> {
  const start = performance.now();
  let counted: Promise<number> | undefined;
  let listening: Promise<number> | undefined;
  const relay = await startRelayProcess({
    configDir,
    adminPort,
    env: { LOG_LEVEL: 'warn', NODE_OPTIONS: RELAY_NODE_OPTIONS },
    readyTimeoutMs: 600_000,
    onSpawn: (started) => {
      // startRelayProcess resolves once every message is queued too; ready (listening) comes before.
      listening = (async () => {
        while ((await adminFetch(`${started.adminUrl}/readyz`).then((response) => response.status, () => 0)) !== 200) {
          if (started.child.exitCode !== null) throw new Error(`the relay exited before it was ready (code ${started.child.exitCode})`);
          await new Promise((resolve) => setTimeout(resolve, 100));
        }
        return (performance.now() - start) / 1000;
      })();
      listening.catch(() => undefined); // awaited below
      counted = (async () => {
        while ((await countedTotal(started.adminUrl)) !== expected) {
          if (started.child.exitCode !== null || performance.now() - start > 600_000) throw new Error(`every message counted: not within 600 s (relay exit code ${started.child.exitCode})`);
          await new Promise((resolve) => setTimeout(resolve, 100));
        }
        return (performance.now() - start) / 1000;
      })();
      counted.catch(() => undefined); // awaited below
    },
  });
  try {
    return { relay, listeningS: await listening!, countedS: await counted! };
  } catch (error) {
    await relay.kill('SIGTERM');
    throw error;
  }
}

async function runBenchmark(): Promise<void> {
  const directory = await temporaryDirectory('vmta-bench-scale-');
  let relay: RelayProcess | undefined;
  let sink: { stop: () => void } | undefined;
  let stage = 'fill and restarts';
  try {
    const destinationPort = await freePort();
    const adminPort = await freePort();
    await writeFile(path.join(directory.path, 'admin-token'), `${ADMIN_TOKEN}\n`);
    await writeRelayConfig(directory.path, baseRelayConfig({
      pool: {
        name: 'pool-a',
        // The exact match is applied over "*" (domain-settings.ts), so it restates the connection limit.
        // A retry every 15 s: a session lost to a slow sink (greeting timeout) costs 15 s of the drain, not the default 10 min.
        domainDefaults: [{ match: '*', smtpHost: `127.0.0.1:${destinationPort}`, maxSmtpOut: 2, retryAfter: ['15s'] }, { match: BLOCKED_DOMAIN, maxSmtpOut: 20 }],
        virtualMtas: [{ name: 'vmta-1', hostname: 'out1.relay.test' }],
      },
      admin: { address: '127.0.0.1', port: adminPort, tokenFile: 'admin-token' },
    }));
    const total = blocked + spread;
    console.log(`scale: ${blocked} messages for ${BLOCKED_DOMAIN} + ${spread} over ${domains} domains, ${bodyBytes}-byte bodies; destination 127.0.0.1:${destinationPort} refusing`);

    relay = (await startTimed(directory.path, adminPort, 0)).relay;
    const empty = await settledMemory(relay);
    await relay.kill('SIGTERM');
    console.log(`  empty queue:   ${empty.text}`);

    const fillStart = performance.now();
    await child(SELF, 'fill', ['--spool', path.join(directory.path, 'spool'), '--blocked', String(blocked), '--spread', String(spread), '--domains', String(domains), '--body', String(bodyBytes)]);
    console.log(`  filled through the spool API in ${((performance.now() - fillStart) / 1000).toFixed(1)} s`);

    const first = await startTimed(directory.path, adminPort, total);
    console.log(`  first start:   listening after ${first.listeningS.toFixed(1)} s, all ${total} counted after ${first.countedS.toFixed(1)} s`);
    await first.relay.kill('SIGTERM');
    const restart = await startTimed(directory.path, adminPort, total);
    relay = restart.relay;
    await waitForTotal(relay, () => true, 'queue listed', 10_000);
    const queued = await settledMemory(relay);
    console.log(`  restart:       listening after ${restart.listeningS.toFixed(1)} s, all counted after ${restart.countedS.toFixed(1)} s; ${queued.text}`);

    stage = 'drain: starting the sink';
    sink = await child<{ port: number }>(SELF, 'sink', ['--port', String(destinationPort)]);
    const cpuBefore = await cpuSeconds(relay.child.pid!);
    stage = 'drain: posting the retry-now';
    const retried = await adminFetch(`${relay.adminUrl}/api/v1/queues/retry`, { method: 'POST', headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' }, body: '{}' });
    if (retried.status !== 200) throw new Error(`retry refused: ${retried.status} ${await retried.text()}`);
    stage = 'drain: waiting for the queue to empty';
    const drainS = await waitForTotal(relay, (left) => left === 0, 'queue drained', 3_600_000);
    const delivered = await deliveredCount(relay);
    if (delivered !== total) throw new Error(`the relay counts ${delivered} delivered, ${total} were queued`);
    const drainPerS = total / drainS;
    const drainCpuMs = ((await cpuSeconds(relay.child.pid!)) - cpuBefore) * 1000 / total;
    console.log(`  drain:         ${total} delivered in ${drainS.toFixed(1)} s (${drainPerS.toFixed(0)} msg/s), relay CPU ${drainCpuMs.toFixed(2)} ms per message`);
    const drained = await settledMemory(relay);
    console.log(`  after drain:   ${drained.text} (${(drained.rss / empty.rss).toFixed(2)}x empty RSS)`);
    console.log(
      `queued=${total} domains=${domains + 1} rss_empty_mb=${empty.rss.toFixed(0)} rss_queued_mb=${queued.rss.toFixed(0)} heap_queued_mb=${queued.heap.toFixed(0)} ` +
        `restart_listening_s=${restart.listeningS.toFixed(1)} restart_counted_s=${restart.countedS.toFixed(1)} drain_per_s=${drainPerS.toFixed(0)} drain_cpu_ms_per_msg=${drainCpuMs.toFixed(2)} ` +
        `rss_after_drain_mb=${drained.rss.toFixed(0)} after_drain_ratio=${(drained.rss / empty.rss).toFixed(2)}`,
    );
  } catch (error) {
    console.error(`  failed at: ${stage}`);
    // A relay that died mid-run (out of memory, a crash) shows up as a refused fetch: say why it ended.
    if (relay && (relay.child.exitCode !== null || relay.child.signalCode !== null)) {
      console.error(`  the relay ended (code ${relay.child.exitCode}, signal ${relay.child.signalCode}); stderr: ${relay.stderr().slice(-4000)}\nits last log lines:\n${relay.logs.slice(-10).map((record) => JSON.stringify(record)).join('\n')}`);
    }
    throw error;
  } finally {
    await relay?.kill('SIGTERM');
    sink?.stop();
    await directory.remove();
  }
}

/** Recipients the relay counts as delivered (vmta_delivery_attempts_total, result="delivered", every series). */
async function deliveredCount(relay: RelayProcess): Promise<number> {
  const text = await (await adminFetch(`${relay.adminUrl}/metrics`)).text();
  return text.split('\n').filter((line) => line.startsWith('vmta_delivery_attempts_total{') && line.includes('result="delivered"')).reduce((sum, line) => sum + Number(line.slice(line.lastIndexOf(' ') + 1)), 0);
}

switch (args.role) {
  case 'fill': {
    const body = buildBody(bodyBytes, 'scale benchmark');
    const first = await fillBlockedQueue({ directory: args.spool!, count: blocked, domain: BLOCKED_DOMAIN, body });
    const second = await fillBlockedQueue({ directory: args.spool!, count: spread, domain: BLOCKED_DOMAIN, domainOf: (index) => `d${index % domains}.scale.test`, body });
    process.stdout.write(`${JSON.stringify({ elapsedMs: first.elapsedMs + second.elapsedMs })}\n`);
    break;
  }
  case 'sink':
    await runDiscardSink(count('port', 1));
    break;
  default:
    await runBenchmark();
}
