// How far the recovery after a start has come: the spool indexing its files (messages found
// grow), then the spool's first scan handing every message to delivery (messages queued grow),
// then done. Read by readiness, the admin API (503 while recovering) and the metrics
// vmta_spool_recovering, vmta_spool_recovery_found_messages and vmta_spool_recovery_queued_messages.
import type { RelayMetrics } from '../observe/metrics.ts';

export type RecoveryPhase = 'indexing' | 'queueing' | 'done';

export interface RecoveryStatus {
  recovering: boolean;
  phase: RecoveryPhase;
  /** Messages found in the spool so far (final once indexing is done). */
  found: number;
  /** Messages handed to delivery so far. */
  queued: number;
  /** Seconds since the recovery began. */
  elapsedSeconds: number;
}

export class RecoveryProgress {
  readonly #metrics: RelayMetrics | undefined;
  readonly #startedAt = performance.now();
  #phase: RecoveryPhase = 'indexing';
  #found = 0;
  #queued = 0;

  constructor(metrics?: RelayMetrics) {
    this.#metrics = metrics;
    metrics?.spoolRecovering.set(1);
    metrics?.spoolRecoveryFound.set(0);
    metrics?.spoolRecoveryQueued.set(0);
  }

  get phase(): RecoveryPhase {
    return this.#phase;
  }

  /** Indexing has found this many messages so far. */
  found(count: number): void {
    this.#found = count;
    this.#metrics?.spoolRecoveryFound.set(count);
  }

  /** Indexing is done; the messages are being handed to delivery. */
  indexed(): void {
    if (this.#phase === 'indexing') this.#phase = 'queueing';
  }

  /** One more message handed to delivery. */
  queuedOne(): void {
    this.#queued++;
    // A gauge update per message would cost more than the hand-over itself on a large spool.
    if (this.#queued % 1000 === 0) this.#metrics?.spoolRecoveryQueued.set(this.#queued);
  }

  /** Every message found is queued: the relay may take mail and answer queue calls. */
  finish(): void {
    this.#phase = 'done';
    this.#metrics?.spoolRecoveryQueued.set(this.#queued);
    this.#metrics?.spoolRecovering.set(0);
  }

  status(): RecoveryStatus {
    return { recovering: this.#phase !== 'done', phase: this.#phase, found: this.#found, queued: this.#queued, elapsedSeconds: Math.round((performance.now() - this.#startedAt) / 100) / 10 };
  }

  /** One line for readiness and the admin API's 503. */
  describe(): string {
    const { phase, found, queued, elapsedSeconds } = this.status();
    if (phase === 'indexing') return `the relay is recovering its spool: indexing, ${found} messages found so far (${elapsedSeconds}s)`;
    if (phase === 'queueing') return `the relay is recovering its spool: ${queued} of ${found} messages queued for delivery (${elapsedSeconds}s)`;
    return `spool recovered: ${queued} messages queued`;
  }
}
