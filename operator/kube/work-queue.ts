// A keyed work queue as controllers need it: a key waiting is never queued twice, a key being
// processed is never processed twice at once (a re-add while it runs comes back after), failures
// back off per key exponentially, a global token bucket limits the overall rate, and at most
// `concurrency` keys are processed at a time. Metrics use the workqueue_* names of client-go.
import type { OperatorMetrics } from '../observe/metrics.ts';
import { withDefaults } from './defaults.ts';

export interface WorkQueueOptions {
  name: string;
  concurrency: number;
  /** Per-key backoff after a failure: baseDelayMs * 2^failures, capped at maxDelayMs. */
  baseDelayMs?: number;
  maxDelayMs?: number;
  /** Global token bucket: `rateLimitPerSecond` items per second with bursts of `burst`. */
  rateLimitPerSecond?: number;
  burst?: number;
  metrics?: OperatorMetrics;
}

/** What the processor asks for: done, retry with backoff (on error), or come back after a delay. */
export type WorkResult = { requeueAfterMs?: number } | void;

export class WorkQueue {
  private readonly options: Required<Omit<WorkQueueOptions, 'metrics'>> & { metrics?: OperatorMetrics };
  private readonly queue: string[] = [];
  private readonly queued = new Set<string>();
  private readonly enqueuedAt = new Map<string, number>();
  private readonly processing = new Set<string>();
  /** Keys added again while being processed: queued once processing ends. */
  private readonly dirtyWhileProcessing = new Set<string>();
  private readonly failures = new Map<string, number>();
  private readonly delayed = new Map<string, NodeJS.Timeout>();
  private tokens: number;
  private lastRefill = Date.now();
  private tokenTimer: NodeJS.Timeout | undefined;
  private processor: ((key: string) => Promise<WorkResult>) | undefined;
  private idleWaiters: (() => void)[] = [];
  private shuttingDown = false;

  constructor(options: WorkQueueOptions) {
    this.options = withDefaults({ baseDelayMs: 5, maxDelayMs: 1000_000, rateLimitPerSecond: 10, burst: 100 }, options);
    this.tokens = this.options.burst;
  }

  /** Starts processing with `processor`; a thrown error retries the key with backoff. */
  start(processor: (key: string) => Promise<WorkResult>): void {
    this.processor = processor;
    this.pump();
  }

  add(key: string): void {
    if (this.shuttingDown) return;
    if (this.processing.has(key)) {
      this.dirtyWhileProcessing.add(key);
      return;
    }
    if (this.queued.has(key)) return;
    this.queued.add(key);
    this.queue.push(key);
    this.enqueuedAt.set(key, Date.now());
    this.options.metrics?.workqueueAdds.inc({ name: this.options.name });
    this.updateDepth();
    this.pump();
  }

  addAfter(key: string, delayMs: number): void {
    if (this.shuttingDown) return;
    const existing = this.delayed.get(key);
    if (existing) clearTimeout(existing);
    const timer = setTimeout(() => {
      this.delayed.delete(key);
      this.add(key);
    }, delayMs);
    timer.unref();
    this.delayed.set(key, timer);
  }

  /** Retries a key after its per-key exponential backoff. */
  addRateLimited(key: string): void {
    const failures = this.failures.get(key) ?? 0;
    this.failures.set(key, failures + 1);
    this.options.metrics?.workqueueRetries.inc({ name: this.options.name });
    this.addAfter(key, Math.min(this.options.maxDelayMs, this.options.baseDelayMs * 2 ** failures));
  }

  /** Clears a key's failure history (after a success). */
  forget(key: string): void {
    this.failures.delete(key);
  }

  failureCount(key: string): number {
    return this.failures.get(key) ?? 0;
  }

  /** Resolves when nothing is queued, delayed or processing. */
  async idle(): Promise<void> {
    if (this.isIdle()) return;
    await new Promise<void>((resolve) => this.idleWaiters.push(resolve));
  }

  /** Stops taking work and waits for the keys being processed. */
  async shutdown(): Promise<void> {
    this.shuttingDown = true;
    for (const timer of this.delayed.values()) clearTimeout(timer);
    this.delayed.clear();
    this.queue.length = 0;
    this.queued.clear();
    clearTimeout(this.tokenTimer);
    this.updateDepth();
    while (this.processing.size > 0) await new Promise((r) => setTimeout(r, 10));
  }

  private isIdle(): boolean {
    return this.queue.length === 0 && this.processing.size === 0 && this.delayed.size === 0;
  }

  private takeToken(): boolean {
    const now = Date.now();
    this.tokens = Math.min(this.options.burst, this.tokens + ((now - this.lastRefill) / 1000) * this.options.rateLimitPerSecond);
    this.lastRefill = now;
    if (this.tokens >= 1) {
      this.tokens -= 1;
      return true;
    }
    if (!this.tokenTimer) {
      const wait = Math.ceil(((1 - this.tokens) / this.options.rateLimitPerSecond) * 1000);
      this.tokenTimer = setTimeout(() => {
        this.tokenTimer = undefined;
        this.pump();
      }, wait);
    }
    return false;
  }

  private pump(): void {
    const processor = this.processor;
    if (!processor || this.shuttingDown) return;
    while (this.queue.length > 0 && this.processing.size < this.options.concurrency && this.takeToken()) {
      const key = this.queue.shift()!;
      this.queued.delete(key);
      this.processing.add(key);
      const name = this.options.name;
      this.options.metrics?.workqueueQueueDuration.observe({ name }, (Date.now() - (this.enqueuedAt.get(key) ?? Date.now())) / 1000);
      this.enqueuedAt.delete(key);
      this.updateDepth();
      void this.run(processor, key);
    }
    if (this.isIdle()) for (const resolve of this.idleWaiters.splice(0)) resolve();
  }

  private async run(processor: (key: string) => Promise<WorkResult>, key: string): Promise<void> {
    const started = Date.now();
    let outcome: WorkResult | Error;
    try {
      outcome = await processor(key);
    } catch (error) {
      outcome = error instanceof Error ? error : new Error(String(error));
    }
    this.options.metrics?.workqueueWorkDuration.observe({ name: this.options.name }, (Date.now() - started) / 1000);
    this.processing.delete(key);
    if (outcome instanceof Error) this.addRateLimited(key);
    else {
      this.forget(key);
      if (outcome?.requeueAfterMs !== undefined) this.addAfter(key, outcome.requeueAfterMs);
    }
    if (this.dirtyWhileProcessing.delete(key)) this.add(key);
    this.pump();
  }

  private updateDepth(): void {
    this.options.metrics?.workqueueDepth.set({ name: this.options.name }, this.queue.length);
  }
}
