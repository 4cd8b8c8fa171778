// When a deferred recipient is tried again, and when it has waited long enough to bounce:
// `retryAfter` as a list of waits (the last one repeats) or exponential backoff with a cap,
// and the `bounceAfter` deadline counted from when the message was accepted.
import type { RetrySchedule } from './domain-settings.ts';

/** Wait before the next attempt, after `attemptsMade` (>= 1) failed attempts. */
export function retryDelay(schedule: RetrySchedule, attemptsMade: number): number {
  const index = Math.max(attemptsMade, 1) - 1;
  if (Array.isArray(schedule)) return schedule[Math.min(index, schedule.length - 1)] ?? 0;
  return Math.min(schedule.max, schedule.initial * schedule.factor ** index);
}

export type DeferralOutcome = { kind: 'retry'; nextAttemptAt: number } | { kind: 'expired' };

/**
 * After a temporary failure at `now`: expire once the message is `bounceAfter` old, otherwise
 * retry after the schedule's wait (or `overrideDelay`, e.g. backoff's longer retry), but never
 * later than the deadline so the last attempt happens on time.
 */
export function afterDeferral(options: {
  now: number;
  receivedAt: number;
  attemptsMade: number;
  schedule: RetrySchedule;
  bounceAfter: number;
  overrideDelay?: number;
}): DeferralOutcome {
  const deadline = options.receivedAt + options.bounceAfter;
  if (options.now >= deadline) return { kind: 'expired' };
  const delay = options.overrideDelay ?? retryDelay(options.schedule, options.attemptsMade);
  return { kind: 'retry', nextAttemptAt: Math.min(options.now + delay, deadline) };
}
