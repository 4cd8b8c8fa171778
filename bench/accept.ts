// Accept benchmark: N messages of S bytes over C concurrent connections, one message per
// connection, into a real relay process (spool on disk, fsyncs and all), and the same load into
// a sink that discards what it receives, built on the same smtp-server adaptation the relay
// uses (greeting without delay), in the same run. The load generator and the sink each run in
// their own process so no two parties share an event loop. The two loads alternate over several
// rounds (sink, relay, sink, relay, ...) and the figures are medians of the rounds (the ratio is
// the median of each round's relay/sink pair), so a slow spell of the machine hits both sides.
//
//   npm run bench:accept [-- --messages 2000 --size 10240 --concurrency 20 --rounds 5]
//
// Last line (machine-readable):
//   accept_per_s=N discard_per_s=N ratio=R p50_ms=N p99_ms=N fsyncs_per_msg=N rss_peak_mb=N
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { freePort, loopbackRelayConfig, metricValue, startRelayProcess, temporaryDirectory, writeRelayConfig } from '../test/fixtures/relay-process.ts';
import { child, cpuSeconds, generateLoad, median, peakRssMb, percentile, runDiscardSink, type LoadResult } from './bench-smtp.ts';
import { RELAY_NODE_OPTIONS } from '../mta/process-options.ts';

const SELF = fileURLToPath(import.meta.url);

const { values: args } = parseArgs({
  options: {
    role: { type: 'string', default: 'run' },
    port: { type: 'string' },
    messages: { type: 'string', default: '2000' },
    size: { type: 'string', default: '10240' },
    concurrency: { type: 'string', default: '20' },
    rounds: { type: 'string', default: '5' },
  },
});
const messages = positiveInteger('messages', args.messages);
const size = positiveInteger('size', args.size);
const concurrency = positiveInteger('concurrency', args.concurrency);
const rounds = positiveInteger('rounds', args.rounds);

function positiveInteger(name: string, text: string | undefined): number {
  const value = Number(text);
  if (!Number.isInteger(value) || value < 1) throw new Error(`--${name}: expected a positive integer (got ${JSON.stringify(text)})`);
  return value;
}

function load(port: number, count: number): Promise<LoadResult> {
  return child<LoadResult>(SELF, 'load', ['--port', String(port), '--messages', String(count), '--size', String(size), '--concurrency', String(concurrency)]).then(({ result }) => result);
}

async function runBenchmark(): Promise<void> {
  const directory = await temporaryDirectory('vmta-bench-');
  const sink = await child<{ port: number }>(SELF, 'sink');
  const port = await freePort();
  const adminPort = await freePort();
  const config = loopbackRelayConfig(port, adminPort);
  config.listeners[0]!.limits = { maxConnections: 10_000, maxConnectionsPerClient: 10_000, greetingDelay: '0s' };
  await writeRelayConfig(directory.path, config);
  const relay = await startRelayProcess({ configDir: directory.path, adminPort, env: { LOG_LEVEL: 'warn', NODE_OPTIONS: RELAY_NODE_OPTIONS } });
  try {
    const warmup = Math.min(200, messages);
    await load(sink.result.port, warmup);
    await load(port, warmup);

    // Paired rounds, sink then relay, so a slow spell of the machine hits both sides of a ratio.
    const discardRounds: LoadResult[] = [];
    const acceptRounds: LoadResult[] = [];
    const fsyncsBefore = (await metricValue(relay.adminUrl, 'vmta_spool_fsyncs_total')) ?? 0;
    let relayCpuSeconds = 0;
    for (let round = 0; round < rounds; round++) {
      discardRounds.push(await load(sink.result.port, messages));
      const cpuBefore = await cpuSeconds(relay.child.pid!);
      acceptRounds.push(await load(port, messages));
      relayCpuSeconds += (await cpuSeconds(relay.child.pid!)) - cpuBefore;
    }
    const fsyncsAfter = (await metricValue(relay.adminUrl, 'vmta_spool_fsyncs_total')) ?? 0;
    const rssPeakMb = await peakRssMb(relay.child.pid!);

    for (const [name, results] of [['discard sink', discardRounds], ['relay', acceptRounds]] as const) {
      for (const result of results) if (result.failed > 0) console.log(`${name}: ${result.failed} of ${messages} messages failed, first: ${result.firstFailure}`);
    }
    const discardRates = discardRounds.map(rate);
    const acceptRates = acceptRounds.map(rate);
    const ratios = acceptRates.map((acceptRate, round) => acceptRate / discardRates[round]!);
    const discardLatencies = discardRounds.flatMap((result) => result.acceptLatenciesMs);
    const acceptLatencies = acceptRounds.flatMap((result) => result.acceptLatenciesMs);
    const accepted = acceptRounds.reduce((total, result) => total + result.sent, 0);
    const acceptElapsedMs = acceptRounds.reduce((total, result) => total + result.elapsedMs, 0);
    const acceptPerS = median(acceptRates);
    const discardPerS = median(discardRates);
    const ratio = median(ratios);
    const fsyncsPerMessage = (fsyncsAfter - fsyncsBefore) / Math.max(1, accepted);
    console.log(`messages: ${rounds} rounds of ${messages} x ${size} bytes, ${concurrency} concurrent connections, one message per connection`);
    console.log(`discard sink msg/s per round: ${discardRates.map((value) => value.toFixed(0)).join(' ')}`);
    console.log(`relay msg/s per round:        ${acceptRates.map((value) => value.toFixed(0)).join(' ')}`);
    console.log(`ratio per round:              ${ratios.map((value) => value.toFixed(2)).join(' ')}`);
    console.log(`discard sink: median ${discardPerS.toFixed(0)} msg/s, accept latency p50 ${percentile(discardLatencies, 50).toFixed(2)} ms, p99 ${percentile(discardLatencies, 99).toFixed(2)} ms`);
    console.log(`relay:        median ${acceptPerS.toFixed(0)} msg/s, accept latency p50 ${percentile(acceptLatencies, 50).toFixed(2)} ms, p99 ${percentile(acceptLatencies, 99).toFixed(2)} ms`);
    console.log(`relay CPU: ${((relayCpuSeconds * 1000) / Math.max(1, accepted)).toFixed(2)} ms per message, ${((relayCpuSeconds / acceptElapsedMs) * 100_000).toFixed(0)}% of one core during the relay rounds`);
    console.log(`median ratio relay/discard: ${ratio.toFixed(2)}; fsyncs per message: ${fsyncsPerMessage.toFixed(2)}; relay peak RSS: ${rssPeakMb.toFixed(0)} MiB`);
    console.log(
      `accept_per_s=${acceptPerS.toFixed(0)} discard_per_s=${discardPerS.toFixed(0)} ratio=${ratio.toFixed(2)} ` +
        `p50_ms=${percentile(acceptLatencies, 50).toFixed(2)} p99_ms=${percentile(acceptLatencies, 99).toFixed(2)} ` +
        `fsyncs_per_msg=${fsyncsPerMessage.toFixed(2)} rss_peak_mb=${rssPeakMb.toFixed(0)}`,
    );
  } finally {
    sink.stop();
    await relay.kill('SIGTERM');
    await directory.remove();
  }
}

function rate(result: LoadResult): number {
  return (result.sent / result.elapsedMs) * 1000;
}

switch (args.role) {
  case 'sink':
    await runDiscardSink();
    break;
  case 'load':
    process.stdout.write(`${JSON.stringify(await generateLoad({ port: Number(args.port), count: messages, bytes: size, concurrency, subject: 'accept benchmark' }))}\n`);
    break;
  default:
    await runBenchmark();
}
