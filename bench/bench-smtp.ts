// Shared parts of the benchmarks (bench/relay.ts, bench/accept.ts): the SMTP load generator
// (one message per connection, as `smtp-source` does, each message stamped with a run tag and
// its submit time when given a tag), the discard sinks (smtp-server, greeting at once: a pure one,
// and a timing one which records for every tag when each message arrived and how long after its
// submission), child processes that report one JSON line, and /proc readings (CPU time, peak RSS).
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { readdir, readFile } from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import type { SMTPServerDataStream } from 'smtp-server';
import { RelaySmtpServer } from '../mta/inbound/smtp-connection.ts';

/** The header the load generator puts first in every message: "X-Bench-Id: <tag> <submit time, epoch ms>". */
const STAMP_HEADER = 'X-Bench-Id: ';

/** Wall-clock milliseconds with sub-millisecond resolution, comparable across processes. */
export function epochMs(): number {
  return performance.timeOrigin + performance.now();
}

export interface LoadResult {
  sent: number;
  failed: number;
  /** Epoch ms when the first connection was opened. */
  startedAt: number;
  elapsedMs: number;
  /** Milliseconds from the end-of-data dot to the 250 reply, one per accepted message. */
  acceptLatenciesMs: number[];
  firstFailure?: string;
}

export interface TagStats {
  count: number;
  /** Epoch ms of the last arrival. */
  lastAt: number;
  /** Submit -> arrival at the sink, one per message. */
  latenciesMs: number[];
}

/** A message body of about `bytes` bytes: headers and 76-character lines, CRLF, no line starting with a dot. */
export function buildBody(bytes: number, subject = 'relay benchmark'): Buffer {
  const header = `From: bench@example.com\r\nTo: rcpt@example.org\r\nSubject: ${subject}\r\nMessage-ID: <bench@example.com>\r\n\r\n`;
  const line = `${'x'.repeat(76)}\r\n`;
  let body = '';
  while (header.length + body.length + line.length <= bytes) body += line;
  return Buffer.from(header + body);
}

/** One SMTP dialogue over a raw socket, reading complete (multi-line) replies. */
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

/** One message on its own connection; returns the end-of-data dot to 250 latency. Without a tag the message is sent unstamped. */
async function sendOne(port: number, tag: string | undefined, body: Buffer): Promise<number> {
  const submittedAt = epochMs();
  const socket = net.connect({ port, host: '127.0.0.1', noDelay: true });
  const dialogue = new Dialogue(socket);
  try {
    await dialogue.expect('220');
    await dialogue.expect('250', 'EHLO load.example.com\r\n');
    await dialogue.expect('250', 'MAIL FROM:<bench@example.com>\r\n');
    await dialogue.expect('250', 'RCPT TO:<rcpt@example.org>\r\n');
    await dialogue.expect('354', 'DATA\r\n');
    if (tag !== undefined) socket.write(`${STAMP_HEADER}${tag} ${submittedAt.toFixed(3)}\r\n`);
    socket.write(body);
    const start = performance.now();
    await dialogue.expect('250', '\r\n.\r\n');
    const latency = performance.now() - start;
    await dialogue.expect('221', 'QUIT\r\n');
    return latency;
  } finally {
    socket.destroy();
  }
}

/**
 * `count` messages over `concurrency` connections at a time, one message per connection. Each is
 * stamped with `tag` (for the timing sink) unless `tag` is left out; `subject` goes to buildBody.
 */
export async function generateLoad(options: { port: number; count: number; bytes: number; concurrency: number; tag?: string; subject?: string }): Promise<LoadResult> {
  const body = buildBody(options.bytes, options.subject);
  const result: LoadResult = { sent: 0, failed: 0, startedAt: epochMs(), elapsedMs: 0, acceptLatenciesMs: [] };
  let next = 0;
  const start = performance.now();
  const worker = async (): Promise<void> => {
    while (next < options.count) {
      next += 1;
      try {
        result.acceptLatenciesMs.push(await sendOne(options.port, options.tag, body));
        result.sent += 1;
      } catch (error) {
        result.failed += 1;
        result.firstFailure ??= (error as Error).message;
      }
    }
  };
  await Promise.all(Array.from({ length: options.concurrency }, worker));
  result.elapsedMs = performance.now() - start;
  return result;
}

/**
 * smtp-server with the relay's adaptation, greeting at once, no policy, listening on a loopback
 * port (`port`, or any free one); `onData` reads each message and answers through `callback`.
 */
async function listenSink(onData: (stream: SMTPServerDataStream, callback: (error: Error | null, message?: string) => void) => void, port = 0): Promise<net.Server> {
  const smtp = new RelaySmtpServer(
    {
      authOptional: true,
      disabledCommands: ['AUTH', 'STARTTLS'],
      size: 64 * 1024 * 1024,
      logger: false,
      onData(stream, _session, callback) {
        onData(stream, callback);
      },
    },
    {
      greetingDelayMs: 0,
      commandTimeoutMs: 60_000,
      minDataRate: 500,
      dataRateGraceMs: 30_000,
      handshakeTimeoutMs: 30_000,
      maxErrors: 10,
      authNeedsTls: false,
      authDisabled: true,
      isAuthRateLimited: () => false,
      reject: () => undefined,
      onAuthRateLimited: () => '4.7.0 Too many failed authentication attempts',
      onHandshakeFailed: () => undefined,
    },
  );
  const server = net.createServer((socket) => smtp.connect(socket));
  server.listen(port, '127.0.0.1');
  await once(server, 'listening');
  return server;
}

/** The comparison point: the sink with every message read and dropped, nothing recorded. Prints {"port"} once listening (on `port` if given). */
export async function runDiscardSink(port = 0): Promise<void> {
  const server = await listenSink((stream, callback) => {
    stream.on('data', () => undefined);
    stream.on('end', () => callback(null, 'Ok: discarded'));
  }, port);
  process.stdout.write(`${JSON.stringify({ port: (server.address() as net.AddressInfo).port })}\n`);
}

/**
 * The sink every run delivers to: smtp-server with the relay's adaptation, greeting at once, no
 * policy; each message is read to its end and dropped, its stamp recorded. An HTTP port answers
 * GET /stats?tag=T with that tag's TagStats. Prints {"port","statsPort"} once listening.
 */
export async function runTimingSink(): Promise<void> {
  const stats = new Map<string, TagStats>();
  const server = await listenSink((stream, callback) => {
    let head = '';
    stream.on('data', (chunk: Buffer) => {
      if (head.length < 4096) head += chunk.toString('latin1', 0, Math.min(chunk.length, 4096));
    });
    stream.on('end', () => {
      const arrivedAt = epochMs();
      const at = head.indexOf(STAMP_HEADER);
      if (at >= 0) {
        const [tag, submitted] = head.slice(at + STAMP_HEADER.length, head.indexOf('\r\n', at)).split(' ');
        const entry = stats.get(tag!) ?? { count: 0, lastAt: 0, latenciesMs: [] };
        entry.count += 1;
        entry.lastAt = Math.max(entry.lastAt, arrivedAt);
        entry.latenciesMs.push(arrivedAt - Number(submitted));
        stats.set(tag!, entry);
      }
      callback(null, 'Ok: discarded');
    });
  });
  const statsServer = http.createServer((request, response) => {
    const tag = new URL(request.url ?? '/', 'http://sink').searchParams.get('tag') ?? '';
    response.setHeader('content-type', 'application/json');
    response.end(JSON.stringify(stats.get(tag) ?? { count: 0, lastAt: 0, latenciesMs: [] }));
  });
  statsServer.listen(0, '127.0.0.1');
  await once(statsServer, 'listening');
  process.stdout.write(`${JSON.stringify({ port: (server.address() as net.AddressInfo).port, statsPort: (statsServer.address() as net.AddressInfo).port })}\n`);
}

export async function sinkStats(statsPort: number, tag: string): Promise<TagStats> {
  return (await (await fetch(`http://127.0.0.1:${statsPort}/stats?tag=${encodeURIComponent(tag)}`)).json()) as TagStats;
}

/** Poll the sink until `count` messages of `tag` arrived (or the timeout passes); returns the stats then. */
export async function waitForArrivals(statsPort: number, tag: string, count: number, timeoutMs: number): Promise<TagStats> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const stats = await sinkStats(statsPort, tag);
    if (stats.count >= count || Date.now() > deadline) return stats;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** Runs `script --role ROLE ...` as a child process and returns the first JSON line it prints. */
export async function child<T>(script: string, role: string, extra: string[] = []): Promise<{ result: T; pid: number; stop: () => void }> {
  const running = spawn(process.execPath, [script, '--role', role, ...extra], { stdio: ['ignore', 'pipe', 'inherit'] });
  const firstLine = await new Promise<string>((resolve, reject) => {
    let output = '';
    running.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      output += chunk;
      if (output.includes('\n')) resolve(output.slice(0, output.indexOf('\n')));
    });
    running.on('exit', (code) => reject(new Error(`bench ${role} process exited (${code}) before printing its result`)));
  });
  return { result: JSON.parse(firstLine) as T, pid: running.pid!, stop: () => running.kill() };
}

export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

export function median(values: readonly number[]): number {
  return percentile(values, 50);
}

const CLOCK_TICKS_PER_S = 100;

/** User + system CPU seconds of a process so far (add its waited-for children with `children`). */
export async function cpuSeconds(pid: number, children = false): Promise<number> {
  const fields = (await readFile(`/proc/${pid}/stat`, 'utf8')).split(') ')[1]!.split(' ');
  const own = Number(fields[11]) + Number(fields[12]);
  const reaped = children ? Number(fields[13]) + Number(fields[14]) : 0;
  return (own + reaped) / CLOCK_TICKS_PER_S;
}

/** CPU seconds of a process tree's live members plus the children its root has reaped (Postfix's master and daemons). */
export async function treeCpuSeconds(rootPid: number): Promise<number> {
  const parents = new Map<number, number>();
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = await readFile(`/proc/${entry}/stat`, 'utf8').catch(() => '');
    const ppid = Number(stat.split(') ')[1]?.split(' ')[1]);
    if (stat) parents.set(Number(entry), ppid);
  }
  const members = new Set([rootPid]);
  for (let grew = true; grew; ) {
    grew = false;
    for (const [pid, ppid] of parents) {
      if (!members.has(pid) && members.has(ppid)) {
        members.add(pid);
        grew = true;
      }
    }
  }
  let total = 0;
  for (const pid of members) total += await cpuSeconds(pid, pid === rootPid).catch(() => 0);
  return total;
}

/** Peak resident set (VmHWM) of a process in MiB. */
export async function peakRssMb(pid: number): Promise<number> {
  return statusMb(pid, 'VmHWM');
}

/** Resident set size of a process now, MiB. */
export async function rssMb(pid: number): Promise<number> {
  return statusMb(pid, 'VmRSS');
}

async function statusMb(pid: number, field: 'VmHWM' | 'VmRSS'): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const kib = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1];
  return kib ? Number(kib) / 1024 : Number.NaN;
}
