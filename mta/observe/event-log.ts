// Log lines that traffic can multiply: one per inbound refusal and one per delivery attempt
// outcome. Each kind of line (a bounded key such as "refusal relay_denied" or "delivery
// deferred") is written at most `burst` times per window; beyond that the lines of that kind are
// counted, and when the window ends one summary line per kind says how many were left out
// ("log lines suppressed", with `event` and `suppressed`). A flood of refusals from one address
// thus costs a bounded number of lines, and the first lines of every kind always reach the log.
import type { Logger } from './log.ts';

export interface EventLogOptions {
  /** Lines of one kind written per window before the rest are only counted. */
  burst?: number;
  windowMs?: number;
  now?: () => number;
}

type Level = 'info' | 'warn';

interface Window {
  startedAt: number;
  written: number;
  suppressed: number;
  level: Level;
}

export const EVENT_LOG_BURST = 50;
export const EVENT_LOG_WINDOW_MS = 10_000;

export class EventLog {
  readonly #logger: Logger;
  readonly #burst: number;
  readonly #windowMs: number;
  readonly #now: () => number;
  readonly #windows = new Map<string, Window>();
  #summaryTimer: NodeJS.Timeout | undefined;

  constructor(logger: Logger, options: EventLogOptions = {}) {
    this.#logger = logger;
    this.#burst = options.burst ?? EVENT_LOG_BURST;
    this.#windowMs = options.windowMs ?? EVENT_LOG_WINDOW_MS;
    this.#now = options.now ?? Date.now;
  }

  /**
   * Writes `message` with `fields` through `logger` (a child carrying the session's or queue's
   * keys; the EventLog's own logger when left out), unless `event`'s lines are over the burst.
   */
  write(event: string, level: Level, fields: Record<string, unknown>, message: string, logger: Logger = this.#logger): void {
    const now = this.#now();
    let window = this.#windows.get(event);
    if (window && now - window.startedAt >= this.#windowMs) {
      this.#summarize(event, window);
      window = undefined;
    }
    if (!window) {
      window = { startedAt: now, written: 0, suppressed: 0, level };
      this.#windows.set(event, window);
    }
    if (window.written < this.#burst) {
      window.written++;
      logger[level]({ event, ...fields }, message);
      return;
    }
    window.suppressed++;
    this.#summaryTimer ??= setTimeout(() => this.flush(), this.#windowMs).unref();
  }

  /** Writes the summary of every window that left lines out, and starts those kinds afresh. */
  flush(): void {
    clearTimeout(this.#summaryTimer);
    this.#summaryTimer = undefined;
    for (const [event, window] of this.#windows) if (window.suppressed > 0) this.#summarize(event, window);
  }

  #summarize(event: string, window: Window): void {
    this.#windows.delete(event);
    if (window.suppressed === 0) return;
    this.#logger[window.level]({ event, suppressed: window.suppressed, windowSeconds: this.#windowMs / 1000 }, `log lines suppressed: ${window.suppressed} more "${event}" lines in ${this.#windowMs / 1000}s (at most ${this.#burst} of a kind are written per window)`);
  }
}
