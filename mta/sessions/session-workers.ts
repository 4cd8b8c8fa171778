// The primary's session processes: it forks them, hands each admitted connection to the one
// serving the fewest sessions (the socket travels over the IPC channel), stores the messages they
// finish in its spool and queues them for delivery, answers their suppression checks, tells each
// of the others every failed AUTH one records, keeps them told whether the spool has room, and
// reads their metrics for /metrics. A process that dies is forked again; the sessions it served
// are released (their clients saw the connection close before any 250 of an unsaved message).
//
// Why processes for sessions and not for delivery (docs/delivery-engine.md, "Several processes"):
// the limits that must be exact for a pod — connections per destination, rates, backoff, warm-up —
// and the spool stay in one process, so nothing about them is divided or leased, while what a
// session costs in CPU (TLS, the SMTP dialogue, DATA, DKIM signing) spreads over the cores.
import { fork, type ChildProcess } from 'node:child_process';
import type net from 'node:net';
import { fileURLToPath } from 'node:url';
import { AggregatorRegistry, type Registry } from 'prom-client';
import type { RuntimeConfig } from '../config/schema.ts';
import type { SessionDispatch, SessionPeer } from '../inbound/admitted-session.ts';
import type { AuthFailureLimiter } from '../inbound/auth-failures.ts';
import type { Logger } from '../observe/log.ts';
import type { Envelope, QueueId } from '../spool/types.ts';
import { asBuffer, type FromWorker, type ToWorker, type WorkerMetrics } from './session-protocol.ts';

const WORKER_ENTRY = fileURLToPath(new URL('./session-worker.ts', import.meta.url));
/** How long a session process may take to start, take a config or answer a metrics read. */
const ANSWER_TIMEOUT_MS = 20_000;
const METRICS_TIMEOUT_MS = 2_000;
const RESTART_DELAY_MS = 1_000;
const ROOM_CHECK_MS = 250;

export interface SessionWorkerOptions {
  processes: number;
  logger: Logger;
  /** Stores a finished message in the spool and queues it; resolves with its queue id once it is durable. */
  store(envelope: Omit<Envelope, 'size'>, chunks: Buffer[], queueId: QueueId): Promise<QueueId>;
  /** The suppression list's answer for a recipient at RCPT TO. */
  refusal(address: string): { code: 550; message: string } | undefined;
  spoolHasRoom(): boolean;
  /** The primary's own failed-AUTH counts (for sessions it serves itself while no process runs). */
  authFailures: AuthFailureLimiter;
}

class SessionProcess {
  readonly child: ChildProcess;
  readonly index: number;
  /** Release callbacks of the sessions it serves, by connection number. */
  readonly sessions = new Map<number, () => void>();
  ready = false;
  readonly started: Promise<void>;
  readonly #answers = new Map<number, { resolve: (message: FromWorker) => void; reject: (error: Error) => void }>();

  constructor(index: number, onMessage: (worker: SessionProcess, message: FromWorker) => void) {
    this.index = index;
    // The primary's Node flags (RELAY_NODE_OPTIONS), without a test runner's.
    const execArgv = process.execArgv.filter((flag) => !flag.startsWith('--test'));
    this.child = fork(WORKER_ENTRY, [], { serialization: 'advanced', execArgv, env: { ...process.env, VMTA_SESSION_PROCESS: String(index) } });
    this.started = new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`session process ${index} did not start within ${ANSWER_TIMEOUT_MS} ms`)), ANSWER_TIMEOUT_MS);
      this.child.once('exit', (code, signal) => {
        clearTimeout(timer);
        reject(new Error(`session process ${index} exited (${signal ?? code}) before it started`));
      });
      this.child.on('message', (message: FromWorker) => {
        if (message.kind === 'hello') {
          clearTimeout(timer);
          return resolve();
        }
        if ((message.kind === 'configured' || message.kind === 'metrics') && this.#answers.has(message.request)) {
          const answer = this.#answers.get(message.request)!;
          this.#answers.delete(message.request);
          return answer.resolve(message);
        }
        onMessage(this, message);
      });
    });
    this.started.catch(() => undefined);
    this.child.once('exit', () => {
      for (const answer of this.#answers.values()) answer.reject(new Error(`session process ${index} exited`));
      this.#answers.clear();
    });
  }

  send(message: ToWorker, handle?: net.Socket, callback?: (error: Error | null) => void): void {
    if (!this.child.connected) return callback?.(new Error(`session process ${this.index} is not connected`));
    this.child.send(message, handle, callback);
  }

  ask(message: ToWorker & { request: number }, timeoutMs: number): Promise<FromWorker> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#answers.delete(message.request);
        reject(new Error(`session process ${this.index} did not answer "${message.kind}" within ${timeoutMs} ms`));
      }, timeoutMs);
      this.#answers.set(message.request, { resolve: (answer) => (clearTimeout(timer), resolve(answer)), reject: (error) => (clearTimeout(timer), reject(error)) });
      this.send(message, undefined, (error) => error && reject(error));
    });
  }
}

export class SessionWorkers implements SessionDispatch {
  readonly #options: SessionWorkerOptions;
  readonly #workers: SessionProcess[] = [];
  #config: RuntimeConfig | undefined;
  #nextConnection = 0;
  #turn = 0;
  #nextRequest = 0;
  #closing = false;
  #hasRoom = true;
  readonly #roomTimer: NodeJS.Timeout;

  private constructor(options: SessionWorkerOptions) {
    this.#options = options;
    for (let index = 0; index < options.processes; index++) this.#workers.push(this.#fork(index));
    this.#roomTimer = setInterval(() => this.#checkRoom(), ROOM_CHECK_MS).unref();
  }

  /** Forks the processes; resolves once every one has started. */
  static async start(options: SessionWorkerOptions): Promise<SessionWorkers> {
    const workers = new SessionWorkers(options);
    try {
      await Promise.all(workers.#workers.map((worker) => worker.started));
    } catch (error) {
      await workers.close();
      throw error;
    }
    return workers;
  }

  async configure(config: RuntimeConfig): Promise<void> {
    this.#config = config;
    const answers = await Promise.all(this.#workers.filter((worker) => worker.child.connected).map((worker) => this.#configureOne(worker)));
    const refused = answers.find((problem) => problem !== undefined);
    if (refused) throw new Error(refused);
  }

  dispatch(listener: string, socket: net.Socket, peer: SessionPeer, release: () => void): boolean {
    const worker = this.#leastLoaded();
    if (!worker) return false;
    const connection = ++this.#nextConnection;
    socket.removeListener('close', release); // the socket closes here once sent; the session's end is told by the process
    socket.pause();
    const early = socket.readableLength > 0 ? (socket.read() as Buffer | null) : null;
    worker.sessions.set(connection, release);
    worker.send({ kind: 'session', connection, listener, ...peer, ...(early ? { early } : {}) }, socket, (error) => {
      if (!error) return;
      this.#options.logger.warn({ listener, process: worker.index, err: error.message }, 'handing a connection to a session process failed; closing it');
      worker.sessions.delete(connection);
      socket.destroy();
      release();
    });
    return true;
  }

  /** Tells every process of a failed AUTH the primary recorded in a session it served itself. */
  shareAuthFailure(client: string, maxFailures: number, windowMs: number, at: number): void {
    this.#sendToAll({ kind: 'auth-failure', client, maxFailures, windowMs, at });
  }

  closeSessions(): void {
    this.#sendToAll({ kind: 'close-sessions' });
  }

  #sendToAll(message: ToWorker, except?: SessionProcess): void {
    for (const worker of this.#workers) if (worker !== except) worker.send(message);
  }

  /** Every process's metrics merged with the primary's registry (counters summed, histograms merged). */
  async metrics(own: Registry): Promise<string> {
    const reads = this.#workers.filter((worker) => worker.ready).map((worker) => worker.ask({ kind: 'metrics', request: ++this.#nextRequest }, METRICS_TIMEOUT_MS).then((answer) => (answer.kind === 'metrics' ? answer.metrics : [])));
    const settled = await Promise.allSettled(reads);
    const parts: WorkerMetrics[] = [(await own.getMetricsAsJSON()) as WorkerMetrics];
    for (const result of settled) if (result.status === 'fulfilled') parts.push(result.value);
    return AggregatorRegistry.aggregate(parts).metrics();
  }

  async close(): Promise<void> {
    this.#closing = true;
    clearInterval(this.#roomTimer);
    await Promise.all(
      this.#workers.map(async (worker) => {
        if (worker.child.exitCode !== null || worker.child.signalCode !== null) return;
        const exited = new Promise((resolve) => worker.child.once('exit', resolve));
        worker.send({ kind: 'stop' });
        const timer = setTimeout(() => worker.child.kill('SIGKILL'), 5_000);
        await exited;
        clearTimeout(timer);
      }),
    );
  }

  #fork(index: number): SessionProcess {
    const worker = new SessionProcess(index, (from, message) => this.#onMessage(from, message));
    worker.child.once('exit', (code, signal) => this.#onExit(worker, code, signal));
    return worker;
  }

  /** Sends the latest config once the process has started (a restarted process and a reload may both be waiting: each sends the newest, and the process applies them in order). */
  async #configureOne(worker: SessionProcess): Promise<string | undefined> {
    try {
      await worker.started;
      const answer = await worker.ask({ kind: 'configure', request: ++this.#nextRequest, config: this.#config! }, ANSWER_TIMEOUT_MS);
      if (answer.kind === 'configured' && answer.error) return `session process ${worker.index}: ${answer.error}`;
      worker.send({ kind: 'room', hasRoom: this.#hasRoom });
      worker.ready = true;
      return undefined;
    } catch (error) {
      return (error as Error).message;
    }
  }

  /** The ready process serving the fewest sessions; ties go round in turn, so short sessions spread too. */
  #leastLoaded(): SessionProcess | undefined {
    let best: SessionProcess | undefined;
    const count = this.#workers.length;
    this.#turn = (this.#turn + 1) % Math.max(count, 1);
    for (let offset = 0; offset < count; offset++) {
      const worker = this.#workers[(this.#turn + offset) % count]!;
      if (!worker.ready || !worker.child.connected) continue;
      if (!best || worker.sessions.size < best.sessions.size) best = worker;
    }
    return best;
  }

  #onMessage(worker: SessionProcess, message: FromWorker): void {
    const { logger } = this.#options;
    switch (message.kind) {
      case 'released': {
        const release = worker.sessions.get(message.connection);
        worker.sessions.delete(message.connection);
        return release?.();
      }
      case 'store':
        this.#options.store(message.envelope, message.chunks.map(asBuffer), message.queueId).then(
          (queueId) => worker.send({ kind: 'stored', request: message.request, queueId }),
          (error: unknown) => worker.send({ kind: 'store-failed', request: message.request, message: (error as Error).message }),
        );
        return;
      case 'refusal?': {
        const refusal = this.#options.refusal(message.address);
        return worker.send({ kind: 'refusal', request: message.request, ...(refusal ? { refusal } : {}) });
      }
      case 'auth-failure':
        this.#options.authFailures.mirror(message.client, message.maxFailures, message.windowMs, message.at);
        this.#sendToAll(message, worker);
        return;
      default:
        logger.warn({ process: worker.index, kind: message.kind }, 'unexpected message from a session process');
    }
  }

  #onExit(worker: SessionProcess, code: number | null, signal: NodeJS.Signals | null): void {
    const sessions = [...worker.sessions.values()];
    worker.sessions.clear();
    for (const release of sessions) release();
    if (this.#closing) return;
    this.#options.logger.error({ process: worker.index, code, signal, sessions: sessions.length }, 'session process exited; starting it again');
    setTimeout(() => {
      if (this.#closing) return;
      const replacement = this.#fork(worker.index);
      this.#workers[this.#workers.indexOf(worker)] = replacement;
      if (this.#config) void this.#configureOne(replacement).then((problem) => problem && this.#options.logger.error({ process: worker.index, problem }, 'restarted session process refused the config'));
    }, RESTART_DELAY_MS).unref();
  }

  #checkRoom(): void {
    const hasRoom = this.#options.spoolHasRoom();
    if (hasRoom === this.#hasRoom) return;
    this.#hasRoom = hasRoom;
    this.#sendToAll({ kind: 'room', hasRoom });
  }
}

/**
 * Session processes for a setting and the CPUs given. "auto" leaves the primary (spool, delivery)
 * a CPU of its own and gives each other CPU a session process: none on one or two CPUs, where
 * `npm run bench` measured a second and third process adding IPC work (about 0.3 ms of CPU per
 * message) without a higher rate (docs/throughput.md).
 */
export function sessionProcessCount(setting: 'auto' | number, cpus: number): number {
  if (setting !== 'auto') return setting;
  return cpus >= 3 ? cpus - 1 : 0;
}
