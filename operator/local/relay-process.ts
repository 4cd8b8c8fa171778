// One pool's relay as a local child process (`vmta mta --config DIR`), its output passed on
// with the pool's name in front, readiness read from the relay's own /readyz, and a stop that
// gives it the same SIGTERM-then-wait a pod gets.
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { RELAY_NODE_OPTIONS } from '../../mta/process-options.ts';

const VMTA_CLI = fileURLToPath(new URL('../../cli/vmta.ts', import.meta.url));
/** Shorter than in a pod: no load balancer is draining, and a cold change should restart quickly. */
const LOCAL_SHUTDOWN_SECONDS = 5;

export interface RelayProcessOptions {
  poolName: string;
  configDir: string;
  adminPort: number;
  log: (line: string) => void;
  /** An exit that stop() did not ask for, with the relay's last line on stderr. */
  onExit: (code: number | null, signal: NodeJS.Signals | null, reason: string | undefined) => void;
}

export class RelayProcess {
  readonly poolName: string;
  readonly adminPort: number;
  readonly #child: ChildProcess;
  readonly #exited: Promise<void>;
  #stopping = false;
  /** The relay's last line on stderr: its one-line reason when it could not start. */
  #lastErrorLine: string | undefined;

  constructor(options: RelayProcessOptions) {
    this.poolName = options.poolName;
    this.adminPort = options.adminPort;
    this.#child = spawn(process.execPath, [VMTA_CLI, 'mta', '--config', options.configDir, '--shutdown-timeout', `${LOCAL_SHUTDOWN_SECONDS}s`, '--config-poll-interval', '2s'], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, NODE_OPTIONS: RELAY_NODE_OPTIONS },
      // Its own process group: Ctrl-C in the terminal reaches `vmta local` alone, which stops
      // each relay with one SIGTERM (a relay given two signals exits without draining).
      detached: true,
    });
    // If `vmta local` exits without stop() (an uncaught error), the relay must not outlive it.
    const killOnExit = () => this.#child.kill('SIGKILL');
    process.once('exit', killOnExit);
    for (const stream of [this.#child.stdout, this.#child.stderr]) {
      if (stream) createInterface({ input: stream }).on('line', (line) => {
        if (stream === this.#child.stderr && line.trim() !== '') this.#lastErrorLine = line.trim();
        options.log(`[${options.poolName}] ${readableLogLine(line)}`);
      });
    }
    this.#exited = once(this.#child, 'close').then(([code, signal]) => {
      process.removeListener('exit', killOnExit);
      if (!this.#stopping) options.onExit(code as number | null, signal as NodeJS.Signals | null, this.#lastErrorLine);
    });
  }

  get pid(): number | undefined {
    return this.#child.pid;
  }

  get running(): boolean {
    return this.#child.exitCode === null && this.#child.signalCode === null;
  }

  /**
   * Resolves when this process (its pid: another relay may hold the port) answers /readyz 200
   * with the config of `configHash` in use; rejects with its reason if it exits, or on timeout.
   */
  async waitReady(configHash: string, timeoutMs = 60_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    const admin = `http://127.0.0.1:${this.adminPort}`;
    const answer = (path: string) => fetch(`${admin}${path}`, { signal: AbortSignal.timeout(2000) }).then(async (response) => ({ status: response.status, body: (await response.json()) as { pid?: number; hash?: string } }), () => undefined);
    while (Date.now() < deadline) {
      if (!this.running) {
        await this.#exited;
        throw new Error(`the relay of pool "${this.poolName}" exited (${this.#child.signalCode ?? `code ${this.#child.exitCode}`})${this.#lastErrorLine ? `: ${this.#lastErrorLine}` : ''}`);
      }
      const ready = await answer('/readyz');
      if (ready?.status === 200 && ready.body.pid === this.pid && (await answer('/config'))?.body.hash === configHash) return;
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
    throw new Error(`the relay of pool "${this.poolName}" was not ready within ${timeoutMs / 1000}s`);
  }

  /** SIGTERM, then SIGKILL if it has not finished after its shutdown timeout and a margin. */
  async stop(): Promise<void> {
    this.#stopping = true;
    if (!this.running) return;
    this.#child.kill('SIGTERM');
    const timer = setTimeout(() => this.#child.kill('SIGKILL'), (LOCAL_SHUTDOWN_SECONDS + 5) * 1000);
    await this.#exited;
    clearTimeout(timer);
  }
}

const LEVELS: Record<number, string> = { 10: 'trace', 20: 'debug', 30: 'info', 40: 'warn', 50: 'error', 60: 'fatal' };
/** Keys worth showing on a terminal (a pod logs the full JSON record). */
const SHOWN_KEYS = ['listener', 'queueId', 'virtualMta', 'domain', 'recipient', 'mailFrom', 'client', 'remoteAddress', 'user', 'mxHost', 'attempt', 'retryAt', 'reason', 'reply', 'suppressed'];

/** A pino JSON record as one short line: "info listening: ... listener=submission"; other text unchanged. */
export function readableLogLine(line: string): string {
  if (!line.startsWith('{')) return line;
  let record: Record<string, unknown>;
  try {
    record = JSON.parse(line) as Record<string, unknown>;
  } catch {
    return line;
  }
  if (typeof record.msg !== 'string') return line;
  const fields = SHOWN_KEYS.filter((key) => typeof record[key] === 'string' || typeof record[key] === 'number').map((key) => {
    const value = String(record[key]);
    return `${key}=${/[\s"]/.test(value) ? JSON.stringify(value) : value}`;
  });
  const error = record.err as { message?: unknown } | undefined;
  if (typeof error?.message === 'string') fields.push(`error="${error.message}"`);
  return [LEVELS[Number(record.level)] ?? 'log', record.msg, ...fields].join(' ');
}
