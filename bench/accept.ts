// Accept benchmark: N messages of S bytes over C concurrent connections, one message per
// connection, into a real relay process (spool on disk, fsyncs and all), and the same load into
// a sink that discards what it receives, built on the same smtp-server adaptation the relay
// uses (greeting without delay), in the same run. The load generator and the sink each run in
// their own process so no two parties share an event loop.
//
//   npm run bench:accept [-- --messages 2000 --size 10240 --concurrency 20]
//
// Last line (machine-readable):
//   accept_per_s=N discard_per_s=N ratio=R p50_ms=N p99_ms=N fsyncs_per_msg=N rss_peak_mb=N
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFile } from 'node:fs/promises';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { RelaySmtpServer } from '../mta/inbound/smtp-connection.ts';
import { freePort, loopbackRelayConfig, metricValue, startRelayProcess, temporaryDirectory, writeRelayConfig } from '../test/fixtures/relay-process.ts';

const SELF = fileURLToPath(import.meta.url);

interface LoadResult {
  sent: number;
  failed: number;
  elapsedMs: number;
  /** Milliseconds from the end-of-data dot to the 250 reply, one per accepted message. */
  latenciesMs: number[];
  firstFailure?: string;
}

const { values: args } = parseArgs({
  options: {
    role: { type: 'string', default: 'run' },
    port: { type: 'string' },
    messages: { type: 'string', default: '2000' },
    size: { type: 'string', default: '10240' },
    concurrency: { type: 'string', default: '20' },
  },
});
const messages = positiveInteger('messages', args.messages);
const size = positiveInteger('size', args.size);
const concurrency = positiveInteger('concurrency', args.concurrency);

function positiveInteger(name: string, text: string | undefined): number {
  const value = Number(text);
  if (!Number.isInteger(value) || value < 1) throw new Error(`--${name}: expected a positive integer (got ${JSON.stringify(text)})`);
  return value;
}

/** The comparison point: smtp-server, greeting at once, no policy, every message read and dropped. */
async function runDiscardSink(): Promise<void> {
  const smtp = new RelaySmtpServer(
    {
      authOptional: true,
      disabledCommands: ['AUTH', 'STARTTLS'],
      size: 64 * 1024 * 1024,
      logger: false,
      onData(stream, _session, callback) {
        stream.on('data', () => undefined);
        stream.on('end', () => callback(null, 'Ok: discarded'));
      },
    },
    {
      greetingDelayMs: 0,
      commandTimeoutMs: 60_000,
      maxErrors: 10,
      authNeedsTls: false,
      authDisabled: true,
      isAuthRateLimited: () => false,
      reject: () => undefined,
      onAuthRateLimited: () => undefined,
    },
  );
  const server = net.createServer((socket) => smtp.connect(socket));
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  process.stdout.write(`${JSON.stringify({ port: (server.address() as net.AddressInfo).port })}\n`);
}

/** Runs this file in `role` as a child process and returns the first JSON line it prints. */
async function child<T>(role: string, extra: string[] = []): Promise<{ result: T; stop: () => void }> {
  const running = spawn(process.execPath, [SELF, '--role', role, ...extra], { stdio: ['ignore', 'pipe', 'inherit'] });
  const firstLine = await new Promise<string>((resolve, reject) => {
    let output = '';
    running.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      output += chunk;
      if (output.includes('\n')) resolve(output.slice(0, output.indexOf('\n')));
    });
    running.on('exit', (code) => reject(new Error(`bench ${role} process exited (${code}) before printing its result`)));
  });
  return { result: JSON.parse(firstLine) as T, stop: () => running.kill() };
}

function load(port: number, count: number): Promise<LoadResult> {
  return child<LoadResult>('load', ['--port', String(port), '--messages', String(count), '--size', String(size), '--concurrency', String(concurrency)]).then(({ result }) => result);
}

async function runBenchmark(): Promise<void> {
  const directory = await temporaryDirectory('vmta-bench-');
  const sink = await child<{ port: number }>('sink');
  const port = await freePort();
  const adminPort = await freePort();
  const config = loopbackRelayConfig(port, adminPort);
  config.listeners[0]!.limits = { maxConnections: 10_000, maxConnectionsPerClient: 10_000, greetingDelay: '0s' };
  await writeRelayConfig(directory.path, config);
  const relay = await startRelayProcess({ configDir: directory.path, adminPort, env: { LOG_LEVEL: 'warn' } });
  try {
    const warmup = Math.min(200, messages);
    await load(sink.result.port, warmup);
    await load(port, warmup);

    const discard = await load(sink.result.port, messages);
    const fsyncsBefore = (await metricValue(relay.adminUrl, 'vmta_spool_fsyncs_total')) ?? 0;
    const cpuBefore = await cpuSeconds(relay.child.pid!);
    const accept = await load(port, messages);
    const cpuAfter = await cpuSeconds(relay.child.pid!);
    const fsyncsAfter = (await metricValue(relay.adminUrl, 'vmta_spool_fsyncs_total')) ?? 0;
    const rssPeakMb = await peakRssMb(relay.child.pid!);

    for (const [name, result] of [['discard sink', discard], ['relay', accept]] as const) {
      if (result.failed > 0) console.log(`${name}: ${result.failed} of ${messages} messages failed, first: ${result.firstFailure}`);
    }
    const acceptPerS = rate(accept);
    const discardPerS = rate(discard);
    const fsyncsPerMessage = (fsyncsAfter - fsyncsBefore) / Math.max(1, accept.sent);
    console.log(`messages: ${messages} x ${size} bytes, ${concurrency} concurrent connections, one message per connection`);
    console.log(`discard sink: ${discardPerS.toFixed(0)} msg/s, accept latency p50 ${percentile(discard.latenciesMs, 50).toFixed(2)} ms, p99 ${percentile(discard.latenciesMs, 99).toFixed(2)} ms`);
    console.log(`relay:        ${acceptPerS.toFixed(0)} msg/s, accept latency p50 ${percentile(accept.latenciesMs, 50).toFixed(2)} ms, p99 ${percentile(accept.latenciesMs, 99).toFixed(2)} ms`);
    console.log(`relay CPU: ${(((cpuAfter - cpuBefore) * 1000) / Math.max(1, accept.sent)).toFixed(2)} ms per message, ${(((cpuAfter - cpuBefore) / accept.elapsedMs) * 100_000).toFixed(0)}% of one core during the run`);
    console.log(`ratio relay/discard: ${(acceptPerS / discardPerS).toFixed(2)}; fsyncs per message: ${fsyncsPerMessage.toFixed(2)}; relay peak RSS: ${rssPeakMb.toFixed(0)} MiB`);
    console.log(
      `accept_per_s=${acceptPerS.toFixed(0)} discard_per_s=${discardPerS.toFixed(0)} ratio=${(acceptPerS / discardPerS).toFixed(2)} ` +
        `p50_ms=${percentile(accept.latenciesMs, 50).toFixed(2)} p99_ms=${percentile(accept.latenciesMs, 99).toFixed(2)} ` +
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

function percentile(values: number[], p: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

/** User + system CPU time of a process so far, from /proc (clock ticks of 10 ms on Linux). */
async function cpuSeconds(pid: number): Promise<number> {
  const fields = (await readFile(`/proc/${pid}/stat`, 'utf8')).split(') ')[1]!.split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/** Peak resident set (VmHWM) of a process, from /proc. */
async function peakRssMb(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const kib = /^VmHWM:\s+(\d+) kB/m.exec(status)?.[1];
  return kib ? Number(kib) / 1024 : Number.NaN;
}

/** A 10 KiB-style message: headers and 76-character body lines, CRLF line ends, no line starting with a dot. */
function buildMessage(bytes: number): Buffer {
  const header = 'From: bench@example.com\r\nTo: rcpt@example.org\r\nSubject: accept benchmark\r\nMessage-ID: <bench@example.com>\r\n\r\n';
  const line = `${'x'.repeat(76)}\r\n`;
  let body = '';
  while (header.length + body.length + line.length <= bytes) body += line;
  return Buffer.from(header + body);
}

/** One SMTP dialogue over a raw socket, reading complete replies (multi-line aware). */
class Dialogue {
  readonly #socket: net.Socket;
  #buffer = '';
  #waiting: ((reply: string) => void) | undefined;
  #failure: Error | undefined;

  constructor(socket: net.Socket) {
    this.#socket = socket;
    socket.setEncoding('latin1');
    socket.on('data', (chunk: string) => {
      this.#buffer += chunk;
      this.#deliver();
    });
    socket.on('error', (error) => {
      this.#failure = error;
      this.#waiting?.('');
    });
    socket.on('close', () => {
      this.#failure ??= new Error('connection closed');
      this.#waiting?.('');
    });
  }

  #deliver(): void {
    if (!this.#waiting) return;
    // A reply ends with a line whose fourth character is a space ("250 ok").
    const lines = this.#buffer.split('\r\n');
    for (let index = 0; index < lines.length - 1; index += 1) {
      if (lines[index]![3] === ' ' || lines[index]!.length === 3) {
        const reply = lines.slice(0, index + 1).join('\r\n');
        this.#buffer = lines.slice(index + 1).join('\r\n');
        const waiting = this.#waiting;
        this.#waiting = undefined;
        waiting(reply);
        return;
      }
    }
  }

  async expect(code: string, send?: string | Buffer): Promise<void> {
    const reply = new Promise<string>((resolve) => {
      this.#waiting = resolve;
    });
    if (send !== undefined) this.#socket.write(send);
    this.#deliver();
    const text = await reply;
    if (this.#failure && text === '') throw this.#failure;
    if (!text.startsWith(code)) throw new Error(`expected ${code}, got: ${text}`);
  }
}

async function sendOne(port: number, message: Buffer): Promise<number> {
  const socket = net.connect({ port, host: '127.0.0.1', noDelay: true });
  const dialogue = new Dialogue(socket);
  try {
    await dialogue.expect('220');
    await dialogue.expect('250', 'EHLO load.example.com\r\n');
    await dialogue.expect('250', 'MAIL FROM:<bench@example.com>\r\n');
    await dialogue.expect('250', 'RCPT TO:<rcpt@example.org>\r\n');
    await dialogue.expect('354', 'DATA\r\n');
    socket.write(message);
    const start = performance.now();
    await dialogue.expect('250', '\r\n.\r\n');
    const latency = performance.now() - start;
    await dialogue.expect('221', 'QUIT\r\n');
    return latency;
  } finally {
    socket.destroy();
  }
}

async function generateLoad(port: number, count: number, bytes: number, parallel: number): Promise<LoadResult> {
  const message = buildMessage(bytes);
  const result: LoadResult = { sent: 0, failed: 0, elapsedMs: 0, latenciesMs: [] };
  let next = 0;
  const start = performance.now();
  const worker = async (): Promise<void> => {
    while (next < count) {
      next += 1;
      try {
        result.latenciesMs.push(await sendOne(port, message));
        result.sent += 1;
      } catch (error) {
        result.failed += 1;
        result.firstFailure ??= (error as Error).message;
      }
    }
  };
  await Promise.all(Array.from({ length: parallel }, worker));
  result.elapsedMs = performance.now() - start;
  return result;
}

// Dispatch last: the classes above must be initialised before any role runs.
switch (args.role) {
  case 'sink':
    await runDiscardSink();
    break;
  case 'load':
    process.stdout.write(`${JSON.stringify(await generateLoad(Number(args.port), messages, size, concurrency))}\n`);
    break;
  default:
    await runBenchmark();
}
