// One pool's relay as a local child process (`vmta mta --config DIR`), its output passed on
// with the pool's name in front, readiness read from the relay's own /readyz, and a stop that
// gives it the same SIGTERM-then-wait a pod gets.
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { RELAY_SHUTDOWN_SECONDS } from '../render/layout.ts';

const VMTA_CLI = fileURLToPath(new URL('../../cli/vmta.ts', import.meta.url));

export interface RelayProcessOptions {
  poolName: string;
  configDir: string;
  adminPort: number;
  log: (line: string) => void;
  onExit: (code: number | null, signal: NodeJS.Signals | null) => void;
}

export class RelayProcess {
  readonly poolName: string;
  readonly adminPort: number;
  readonly #child: ChildProcess;
  readonly #exited: Promise<void>;
  #stopping = false;

  constructor(options: RelayProcessOptions) {
    this.poolName = options.poolName;
    this.adminPort = options.adminPort;
    this.#child = spawn(process.execPath, [VMTA_CLI, 'mta', '--config', options.configDir, '--shutdown-timeout', `${RELAY_SHUTDOWN_SECONDS}s`, '--config-poll-interval', '2s'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    for (const stream of [this.#child.stdout, this.#child.stderr]) {
      if (stream) createInterface({ input: stream }).on('line', (line) => options.log(`[${options.poolName}] ${line}`));
    }
    this.#exited = once(this.#child, 'exit').then(([code, signal]) => {
      if (!this.#stopping) options.onExit(code as number | null, signal as NodeJS.Signals | null);
    });
  }

  get pid(): number | undefined {
    return this.#child.pid;
  }

  get running(): boolean {
    return this.#child.exitCode === null && this.#child.signalCode === null;
  }

  /** Resolves when /readyz answers 200; rejects if the process exits or the time runs out. */
  async waitReady(timeoutMs = 60_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (!this.running) throw new Error(`the relay of pool "${this.poolName}" exited (code ${this.#child.exitCode ?? this.#child.signalCode})`);
      const ready = await fetch(`http://127.0.0.1:${this.adminPort}/readyz`, { signal: AbortSignal.timeout(2000) }).then(
        (response) => response.status === 200,
        () => false,
      );
      if (ready) return;
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
    throw new Error(`the relay of pool "${this.poolName}" was not ready within ${timeoutMs / 1000}s`);
  }

  /** SIGTERM, then SIGKILL if it has not finished after its shutdown timeout and a margin. */
  async stop(): Promise<void> {
    this.#stopping = true;
    if (!this.running) return;
    this.#child.kill('SIGTERM');
    const timer = setTimeout(() => this.#child.kill('SIGKILL'), (RELAY_SHUTDOWN_SECONDS + 5) * 1000);
    await this.#exited;
    clearTimeout(timer);
  }
}
