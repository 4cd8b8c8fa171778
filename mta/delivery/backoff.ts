// Backoff mode of one VirtualMTA x destination: a reply matching the domain's backoff patterns
// (throttling such as "421 4.7.0 Try again later") switches the queue to the reduced
// connection count, rate and longer retry of the backoff policy; it returns to normal
// `returnAfter` after entering, or at once after a successful delivery.
import type { BackoffPolicy } from './domain-settings.ts';

export class BackoffState {
  private enteredAt: number | undefined;

  /** True while backoff is in force at `now` (expiring it when returnAfter has passed). */
  isActive(policy: BackoffPolicy | undefined, now: number): boolean {
    if (this.enteredAt === undefined) return false;
    if (!policy || now - this.enteredAt >= policy.returnAfter) {
      this.enteredAt = undefined;
      return false;
    }
    return true;
  }

  /** When this queue entered backoff, if it is in backoff. */
  get since(): number | undefined {
    return this.enteredAt;
  }

  /** Look at a non-2xx reply; returns true when it puts the queue (newly) into backoff. */
  onFailureReply(policy: BackoffPolicy | undefined, reply: string, now: number): boolean {
    if (!policy || !policy.replyPatterns.some((pattern) => pattern.test(reply))) return false;
    const wasActive = this.isActive(policy, now);
    // A repeated throttling reply extends the backoff period.
    this.enteredAt = now;
    return !wasActive;
  }

  /** A delivery proves the peer accepts mail again; returns true when this left backoff. */
  onDelivery(): boolean {
    const wasActive = this.enteredAt !== undefined;
    this.enteredAt = undefined;
    return wasActive;
  }
}
