// End-to-end relay benchmark (prints figures; not a test).
//
//   npm run bench [-- --messages 2000 --sizes 2048,51200 --concurrency 5,20,100 --rounds 3 --queued 100000 --dkim off --session-processes auto]
//   (or BENCH_MESSAGES, BENCH_SIZES, BENCH_CONCURRENCY, BENCH_ROUNDS, BENCH_QUEUED, BENCH_DKIM, BENCH_SESSION_PROCESSES; --queued 0 skips
//   part 2; --dkim rsa|ed25519|dual has the relay DKIM-sign every message: Postfix is run without signing;
//   --session-processes sets the relay's sessionProcesses; BENCH_RELAY_NODE_OPTIONS adds Node flags to the
//   relay's, e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof" for a CPU profile of the relay under the load)
//
// 1. Throughput, per message size and concurrency: a load generator (its own process) submits N
//    messages over C connections, one message per connection as `smtp-source` does, to the relay
//    process (greeting without delay, real spool with fsyncs), which delivers them through an
//    `smtpHost` route to a discard sink (its own process). The same load goes straight to the sink
//    (the wire limit) and, where Postfix is installed (scripts/install-postfix.sh), through Postfix
//    as a store-and-forward relay to the same sink, in paired rounds (relay, Postfix, relay, ...)
//    whose medians are reported, the Postfix ratio as the median of each round's pair. Rates are
//    end to end: first submission to last arrival at the sink. Each message carries its submit
//    time, so the sink measures delivery latency. CPU is the process tree's (the relay's workers,
//    Postfix's master and daemons); cores used = CPU seconds / wall seconds of the run.
// 2. Blocked destination: `queued` messages written straight into a spool for a destination
//    that refuses connections; the relay starts on it, then restarts. Prints its peak RSS and
//    how long until every message is scheduled (waiting for retry, none ready or in flight).
//
// Last line (machine-readable): the first size at 20 connections (2 KiB by default), then the
// Postfix ratio and cores used at every size and concurrency:
//   e2e_per_s=N wire_per_s=N wire_ratio=R postfix_per_s=N postfix_ratio=R cpu_ms_per_msg=N cores_used=N cores_given=N rss_peak_mb=N dkim=M
//   postfix_ratio_<size>_c<C>=R cores_used_<size>_c<C>=N ...
import { once } from 'node:events';
import net from 'node:net';
import { loadavg } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import type { RuntimeConfigInput } from '../mta/config/schema.ts';
import { fillBlockedQueue } from '../test/fixtures/blocked-queue.ts';
import { adminGet, freePort, loopbackRelayConfig, PARKING_SMTP_HOST, startRelayProcess, temporaryDirectory, writeRelayConfig, writeTestAdminToken, type RelayProcess } from '../test/fixtures/relay-process.ts';
import { buildBody, child, generateLoad, median, peakRssMb, percentile, runTimingSink, treeCpuSeconds, waitForArrivals, type LoadResult, type TagStats } from './bench-smtp.ts';
import { writeBenchDkimKeys, type BenchDkimMode } from './dkim.ts';
import { postfixUnavailable, startPostfixRelay } from './postfix-relay.ts';
import { RELAY_NODE_OPTIONS } from '../mta/process-options.ts';
import { cpuAllowance } from '../mta/cpu-allowance.ts';

const SELF = fileURLToPath(import.meta.url);
const env = process.env;

const { values: args } = parseArgs({
  options: {
    role: { type: 'string', default: 'run' },
    port: { type: 'string' },
    tag: { type: 'string' },
    spool: { type: 'string' },
    messages: { type: 'string', default: env.BENCH_MESSAGES ?? '2000' },
    sizes: { type: 'string', default: env.BENCH_SIZES ?? '2048,51200' },
    size: { type: 'string', default: '2048' },
    concurrency: { type: 'string', default: env.BENCH_CONCURRENCY ?? '5,20,100' },
    rounds: { type: 'string', default: env.BENCH_ROUNDS ?? '3' },
    queued: { type: 'string', default: env.BENCH_QUEUED ?? '100000' },
    dkim: { type: 'string', default: env.BENCH_DKIM ?? 'off' },
    'session-processes': { type: 'string', default: env.BENCH_SESSION_PROCESSES ?? 'auto' },
  },
});

function nonNegativeInteger(name: string, text: string | undefined): number {
  const value = Number(text);
  if (!Number.isInteger(value) || value < 0) throw new Error(`--${name}: expected a non-negative integer (got ${JSON.stringify(text)})`);
  return value;
}

const messages = nonNegativeInteger('messages', args.messages);
const concurrencies = args.concurrency!.split(',').map((value) => nonNegativeInteger('concurrency', value));
const rounds = Math.max(1, nonNegativeInteger('rounds', args.rounds));
const queued = nonNegativeInteger('queued', args.queued);
const sizes = args.sizes!.split(',').map((size) => nonNegativeInteger('sizes', size));
const DKIM_MODES: readonly BenchDkimMode[] = ['off', 'rsa', 'ed25519', 'dual'];
if (!DKIM_MODES.includes(args.dkim as BenchDkimMode)) throw new Error(`--dkim: expected one of ${DKIM_MODES.join(', ')} (got ${JSON.stringify(args.dkim)})`);
const dkimMode = args.dkim as BenchDkimMode;
const sessionProcesses = args['session-processes'] === 'auto' ? 'auto' : nonNegativeInteger('--session-processes', args['session-processes']);

/** Generous bound on waiting for the last delivery of one run. */
const DELIVERY_TIMEOUT_MS = 300_000;
const BLOCKED_DOMAIN = 'blocked.test';

interface Throughput {
  perS: number;
  load: LoadResult;
  arrivals: TagStats;
}

/** One relayed run with the CPU its process tree used and the cores that makes (CPU time / wall time). */
interface MeasuredRun extends Throughput {
  cpuMsPerMsg: number;
  coresUsed: number;
}

/** One size at one concurrency: the wire limit, then `rounds` pairs of relay and Postfix runs, alternating. */
interface PointResult {
  size: number;
  concurrency: number;
  wire: Throughput;
  relay: MeasuredRun[];
  postfix: MeasuredRun[];
  relayRssPeakMb: number;
}

function load(port: number, count: number, size: number, connections: number, tag: string): Promise<LoadResult> {
  return child<LoadResult>(SELF, 'load', ['--port', String(port), '--messages', String(count), '--size', String(size), '--concurrency', String(connections), '--tag', tag]).then(({ result }) => result);
}

/** Submit `count` messages tagged `tag` to `port` and wait until the sink has them all. */
async function throughput(sinkStatsPort: number, port: number, count: number, size: number, connections: number, tag: string): Promise<Throughput> {
  const result = await load(port, count, size, connections, tag);
  const arrivals = await waitForArrivals(sinkStatsPort, tag, result.sent, DELIVERY_TIMEOUT_MS);
  if (result.failed > 0) console.log(`  ${tag}: ${result.failed} of ${count} submissions failed, first: ${result.firstFailure}`);
  if (arrivals.count < result.sent) console.log(`  ${tag}: only ${arrivals.count} of ${result.sent} accepted messages reached the sink in time`);
  return { perS: (arrivals.count / Math.max(1, arrivals.lastAt - result.startedAt)) * 1000, load: result, arrivals };
}

/** `throughput` with the CPU seconds of the process tree under `rootPid` read before and after. */
async function measured(rootPid: number, sinkStatsPort: number, port: number, size: number, connections: number, tag: string): Promise<MeasuredRun> {
  const cpuBefore = await treeCpuSeconds(rootPid);
  const run = await throughput(sinkStatsPort, port, messages, size, connections, tag);
  const cpuS = (await treeCpuSeconds(rootPid)) - cpuBefore;
  const wallS = Math.max(1, run.arrivals.lastAt - run.load.startedAt) / 1000;
  return { ...run, cpuMsPerMsg: (cpuS * 1000) / Math.max(1, run.arrivals.count), coresUsed: cpuS / wallS };
}

async function waitForPort(port: number, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const socket = net.connect({ port, host: '127.0.0.1' });
    try {
      await once(socket, 'connect');
      socket.destroy();
      return;
    } catch (error) {
      if (Date.now() > deadline) throw error;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
}

function relayConfig(port: number, adminPort: number, smtpHost: string): RuntimeConfigInput {
  const config = loopbackRelayConfig(port, adminPort, { sessionProcesses: sessionProcesses });
  config.listeners[0]!.limits = { maxConnections: 10_000, maxConnectionsPerClient: 10_000, greetingDelay: '0s' };
  config.pool.domainDefaults = [{ match: '*', smtpHost }];
  return config;
}

async function throughputRuns(): Promise<PointResult[]> {
  const sink = await child<{ port: number; statsPort: number }>(SELF, 'sink');
  const directory = await temporaryDirectory('vmta-bench-relay-');
  const port = await freePort();
  const adminPort = await freePort();
  const config = relayConfig(port, adminPort, `127.0.0.1:${sink.result.port}`);
  if (dkimMode !== 'off') config.pool.dkim = await writeBenchDkimKeys(directory.path, dkimMode);
  await writeRelayConfig(directory.path, config);
  const relay = await startRelayProcess({ configDir: directory.path, adminPort, env: { LOG_LEVEL: 'warn', NODE_OPTIONS: `${RELAY_NODE_OPTIONS} ${env.BENCH_RELAY_NODE_OPTIONS ?? ''}`.trim() } });
  const postfixProblem = await postfixUnavailable();
  const postfixDirectory = postfixProblem ? undefined : await temporaryDirectory('vmta-bench-postfix-');
  const postfix = postfixDirectory ? await startPostfixRelay(postfixDirectory.path, await freePort(), sink.result.port) : undefined;
  if (postfixProblem) console.log(`postfix: not run (${postfixProblem}); install it with scripts/install-postfix.sh`);
  const results: PointResult[] = [];
  try {
    if (postfix) await waitForPort(postfix.port);
    const warmup = Math.min(200, messages);
    for (const [name, target] of [['wire', sink.result.port], ['relay', port], ...(postfix ? [['postfix', postfix.port] as const] : [])] as const) {
      await throughput(sink.result.statsPort, target, warmup, sizes[0]!, concurrencies[0]!, `warmup-${name}`);
    }
    for (const size of sizes) {
      for (const connections of concurrencies) {
        const point = `${size}-c${connections}`;
        const wire = await throughput(sink.result.statsPort, sink.result.port, messages, size, connections, `wire-${point}`);
        const result: PointResult = { size, concurrency: connections, wire, relay: [], postfix: [], relayRssPeakMb: 0 };
        // Paired rounds, relay then Postfix, so a slow spell of the shared machine hits both sides of a ratio.
        for (let round = 0; round < rounds; round++) {
          result.relay.push(await measured(relay.child.pid!, sink.result.statsPort, port, size, connections, `relay-${point}-r${round}`));
          if (postfix) result.postfix.push(await measured(postfix.masterPid, sink.result.statsPort, postfix.port, size, connections, `postfix-${point}-r${round}`));
        }
        result.relayRssPeakMb = await peakRssMb(relay.child.pid!);
        results.push(result);
        report(result);
      }
    }
  } finally {
    await postfix?.stop();
    await postfixDirectory?.remove();
    sink.stop();
    await relay.kill('SIGTERM');
    await directory.remove();
  }
  return results;
}

function ms(value: number): string {
  return value.toFixed(1);
}

/** Medians over a point's rounds; the Postfix ratio is the median of each round's relay/Postfix pair. */
function summary(result: PointResult) {
  const of = (runs: MeasuredRun[], pick: (run: MeasuredRun) => number) => (runs.length > 0 ? median(runs.map(pick)) : Number.NaN);
  const ratios = result.postfix.map((run, round) => result.relay[round]!.perS / run.perS);
  return {
    relayPerS: of(result.relay, (run) => run.perS),
    relayCpuMsPerMsg: of(result.relay, (run) => run.cpuMsPerMsg),
    relayCores: of(result.relay, (run) => run.coresUsed),
    postfixPerS: of(result.postfix, (run) => run.perS),
    postfixCpuMsPerMsg: of(result.postfix, (run) => run.cpuMsPerMsg),
    postfixCores: of(result.postfix, (run) => run.coresUsed),
    postfixRatio: ratios.length > 0 ? median(ratios) : Number.NaN,
    ratios,
  };
}

function figure(value: number, digits: number): string {
  return Number.isNaN(value) ? 'NA' : value.toFixed(digits);
}

function report(result: PointResult): void {
  const { size, concurrency: connections, wire, relay, postfix } = result;
  const figures = summary(result);
  const line = (name: string, run: Throughput) =>
    `  ${name.padEnd(8)} ${run.perS.toFixed(0).padStart(6)} msg/s  accept p50 ${ms(percentile(run.load.acceptLatenciesMs, 50))} ms p99 ${ms(percentile(run.load.acceptLatenciesMs, 99))} ms` +
    `  delivery p50 ${ms(percentile(run.arrivals.latenciesMs, 50))} ms p99 ${ms(percentile(run.arrivals.latenciesMs, 99))} ms`;
  console.log(`size ${size} bytes, ${connections} connections: ${messages} messages per run, one message per connection, ${rounds} paired rounds`);
  console.log(line('wire', wire));
  relay.forEach((run, round) => console.log(line(`relay#${round}`, run)));
  postfix.forEach((run, round) => console.log(line(`postfix#${round}`, run)));
  console.log(
    `  relay median ${figure(figures.relayPerS, 0)} msg/s (${(figures.relayPerS / wire.perS).toFixed(3)} of the wire), CPU ${figure(figures.relayCpuMsPerMsg, 2)} ms/msg, ${figure(figures.relayCores, 2)} cores, peak RSS ${result.relayRssPeakMb.toFixed(0)} MiB` +
      (postfix.length > 0 ? `; postfix median ${figure(figures.postfixPerS, 0)} msg/s, CPU ${figure(figures.postfixCpuMsPerMsg, 2)} ms/msg, ${figure(figures.postfixCores, 2)} cores (master + daemons); relay/postfix per round ${figures.ratios.map((ratio) => ratio.toFixed(2)).join(' ')}` : ''),
  );
  console.log(
    `  point_${size}_c${connections}: e2e_per_s=${figure(figures.relayPerS, 0)} wire_per_s=${wire.perS.toFixed(0)} postfix_per_s=${figure(figures.postfixPerS, 0)} postfix_ratio=${figure(figures.postfixRatio, 2)} ` +
      `cpu_ms_per_msg=${figure(figures.relayCpuMsPerMsg, 2)} cores_used=${figure(figures.relayCores, 2)} postfix_cores_used=${figure(figures.postfixCores, 2)} rss_peak_mb=${result.relayRssPeakMb.toFixed(0)}`,
  );
}

interface QueueRow {
  domain: string;
  messages: number;
  ready: number;
  scheduled: number;
  inFlight: number;
}

/** Start the relay on the spool and time (from spawn) until `count` messages are all scheduled. */
async function startAndTimeScheduling(configDir: string, adminPort: number, count: number): Promise<{ relay: RelayProcess; scheduledAfterS: number }> {
  const start = performance.now();
  const relay = await startRelayProcess({ configDir, adminPort, env: { LOG_LEVEL: 'warn', NODE_OPTIONS: RELAY_NODE_OPTIONS }, readyTimeoutMs: 300_000 });
  const deadline = Date.now() + 600_000;
  for (;;) {
    const rows = (await adminGet<{ queues: QueueRow[] }>(relay.adminUrl, '/api/v1/queues')).queues;
    const blocked = rows.find((row) => row.domain === BLOCKED_DOMAIN);
    if (blocked && blocked.scheduled === count && blocked.ready === 0 && blocked.inFlight === 0) break;
    if (Date.now() > deadline) throw new Error(`messages not all scheduled within 600 s: ${JSON.stringify(blocked)}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return { relay, scheduledAfterS: (performance.now() - start) / 1000 };
}

async function blockedDestination(count: number): Promise<void> {
  const directory = await temporaryDirectory('vmta-bench-blocked-');
  try {
    const filled = await child<{ elapsedMs: number }>(SELF, 'fill', ['--spool', path.join(directory.path, 'spool'), '--messages', String(count)]);
    const adminPort = await freePort();
    const config = relayConfig(await freePort(), adminPort, PARKING_SMTP_HOST);
    config.admin = { ...config.admin, tokenFile: await writeTestAdminToken(directory.path) };
    await writeRelayConfig(directory.path, config);
    const first = await startAndTimeScheduling(directory.path, adminPort, count);
    const firstRss = await peakRssMb(first.relay.child.pid!);
    await first.relay.kill('SIGTERM');
    const second = await startAndTimeScheduling(directory.path, adminPort, count);
    const secondRss = await peakRssMb(second.relay.child.pid!);
    await second.relay.kill('SIGTERM');
    console.log(`blocked destination: ${count} queued messages written in ${(filled.result.elapsedMs / 1000).toFixed(1)} s; relay refused by ${PARKING_SMTP_HOST}`);
    console.log(`  first start: all scheduled after ${first.scheduledAfterS.toFixed(1)} s, peak RSS ${firstRss.toFixed(0)} MiB`);
    console.log(`  restart:     all scheduled after ${second.scheduledAfterS.toFixed(1)} s, peak RSS ${secondRss.toFixed(0)} MiB`);
    console.log(`  blocked_messages=${count} blocked_rss_peak_mb=${Math.max(firstRss, secondRss).toFixed(0)} restart_scheduled_s=${second.scheduledAfterS.toFixed(1)}`);
  } finally {
    await directory.remove();
  }
}

async function runBenchmark(): Promise<void> {
  const results = messages > 0 ? await throughputRuns() : [];
  if (queued > 0) await blockedDestination(queued);
  const headline = results.find((result) => result.concurrency === 20) ?? results[0];
  if (!headline) return;
  const figures = summary(headline);
  const perPoint = results.map((result) => {
    const point = summary(result);
    return `postfix_ratio_${result.size}_c${result.concurrency}=${figure(point.postfixRatio, 2)} cores_used_${result.size}_c${result.concurrency}=${figure(point.relayCores, 2)}`;
  });
  const load = loadavg().map((value) => value.toFixed(1)).join('/');
  const given = await cpuAllowance();
  console.log(`(last line: the ${headline.size}-byte run at ${headline.concurrency} connections first, then every size and concurrency; relay DKIM signing ${dkimMode}; load average ${load}; ${given.cpus} CPUs given, by ${given.source})`);
  console.log(
    `e2e_per_s=${figure(figures.relayPerS, 0)} wire_per_s=${headline.wire.perS.toFixed(0)} wire_ratio=${(figures.relayPerS / headline.wire.perS).toFixed(3)} ` +
      `postfix_per_s=${figure(figures.postfixPerS, 0)} postfix_ratio=${figure(figures.postfixRatio, 2)} ` +
      `cpu_ms_per_msg=${figure(figures.relayCpuMsPerMsg, 2)} cores_used=${figure(figures.relayCores, 2)} cores_given=${given.cpus} rss_peak_mb=${headline.relayRssPeakMb.toFixed(0)} dkim=${dkimMode} ` +
      perPoint.join(' '),
  );
}

switch (args.role) {
  case 'sink':
    await runTimingSink();
    break;
  case 'load':
    process.stdout.write(`${JSON.stringify(await generateLoad({ port: Number(args.port), count: messages, bytes: nonNegativeInteger('size', args.size), concurrency: concurrencies[0]!, tag: args.tag ?? 'load' }))}\n`);
    break;
  case 'fill':
    process.stdout.write(`${JSON.stringify(await fillBlockedQueue({ directory: args.spool!, count: messages, domain: BLOCKED_DOMAIN, body: buildBody(1024) }))}\n`);
    break;
  default:
    await runBenchmark();
}
