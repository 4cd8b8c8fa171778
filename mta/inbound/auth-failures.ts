// Failed SMTP AUTH attempts per client address in a sliding window: once a client reaches
// `maxFailures` within `windowMs` it is refused (421 4.7.0) until its oldest failure ages out.
// One limiter for all listeners, kept across config reloads, so neither switching ports nor a
// reload resets an attacker's count. With session processes each holds one and tells the others
// of every failure it records through the primary (`onRecorded`, `mirror`), so the count is the pod's.
export type FailureObserver = (client: string, maxFailures: number, windowMs: number, at: number) => void;

export class AuthFailureLimiter {
  private readonly failures = new Map<string, number[]>();
  private readonly onRecorded: FailureObserver | undefined;

  constructor(onRecorded?: FailureObserver) {
    this.onRecorded = onRecorded;
  }

  isLimited(client: string, maxFailures: number, windowMs: number, now = Date.now()): boolean {
    return this.recent(client, windowMs, now).length >= maxFailures;
  }

  /** Records a failure; returns true when the client has now reached the limit. */
  recordFailure(client: string, maxFailures: number, windowMs: number, now = Date.now()): boolean {
    this.onRecorded?.(client, maxFailures, windowMs, now);
    return this.mirror(client, maxFailures, windowMs, now);
  }

  /** Records a failure another process saw (not told onward); returns true when the client has now reached the limit. */
  mirror(client: string, maxFailures: number, windowMs: number, now: number): boolean {
    const recent = this.recent(client, windowMs, now);
    recent.push(now);
    this.failures.set(client, recent);
    if (this.failures.size > 100_000) this.prune(windowMs, now);
    return recent.length >= maxFailures;
  }

  /** How long until a limited client may try AUTH again (its oldest counted failure ages out); 0 when not limited. */
  lockedForMs(client: string, maxFailures: number, windowMs: number, now = Date.now()): number {
    const recent = this.recent(client, windowMs, now);
    if (recent.length < maxFailures) return 0;
    return recent[recent.length - maxFailures]! + windowMs - now;
  }

  private recent(client: string, windowMs: number, now: number): number[] {
    const kept = (this.failures.get(client) ?? []).filter((time) => now - time < windowMs);
    if (kept.length === 0) this.failures.delete(client);
    else this.failures.set(client, kept);
    return kept;
  }

  private prune(windowMs: number, now: number): void {
    for (const client of [...this.failures.keys()]) this.recent(client, windowMs, now);
  }
}
