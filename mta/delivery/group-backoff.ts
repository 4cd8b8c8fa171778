// Backoff of destination queues and of their provider groups (PowerMTA's mx-rollup queue
// backing off as one): which backoff policy a queue follows — its domain entry's (a `domains` or
// `domainDefaults` block naming the domain), else its provider group's, else a catch-all "*"
// block's — and the backoff state, kept per queue and per VirtualMTA x provider group. A
// throttling reply on one of a group's domains puts the whole group in backoff, so every domain
// on the provider's MX slows down. A delivery ends a queue's own backoff at once, the group's
// only after the policy's returnAfter (each throttling reply starts it again): a provider
// throttles a sending address over all its domains and still takes some mail while it does, so
// one accepted message at the reduced pace does not show the throttling is over.
import type { ProviderGroupConfig } from '../config/schema.ts';
import { BackoffState } from './backoff.ts';
import type { Clock } from './clock.ts';
import type { DestinationQueue } from './destination-queue.ts';
import { toBackoffPolicy, type BackoffPolicy } from './domain-settings.ts';

export class DestinationBackoff {
  readonly #clock: Clock;
  readonly #groupOf: (queue: DestinationQueue) => ProviderGroupConfig | undefined;
  /** Backoff per "virtualMta\0group". */
  readonly #groups = new Map<string, BackoffState>();
  /** Compiled group policies; a reload brings new group objects, so they compile afresh. */
  readonly #groupPolicies = new WeakMap<ProviderGroupConfig, BackoffPolicy>();

  constructor(clock: Clock, groupOf: (queue: DestinationQueue) => ProviderGroupConfig | undefined) {
    this.#clock = clock;
    this.#groupOf = groupOf;
  }

  /** The policy a queue follows: domain entry > provider group > catch-all default. */
  policy(queue: DestinationQueue): BackoffPolicy | undefined {
    const own = queue.settings.backoff;
    if (own && !queue.settings.backoffFromCatchAll) return own;
    const group = this.#groupOf(queue);
    if (!group?.backoff) return own;
    let compiled = this.#groupPolicies.get(group);
    if (!compiled) this.#groupPolicies.set(group, (compiled = toBackoffPolicy(group.backoff)));
    return compiled;
  }

  /** The policy in force when the queue or its provider group is in backoff. */
  active(queue: DestinationQueue): BackoffPolicy | undefined {
    const policy = this.policy(queue);
    if (!policy) return undefined;
    const now = this.#clock.now();
    return queue.backoff.isActive(policy, now) || this.#groupState(queue)?.isActive(policy, now) ? policy : undefined;
  }

  /** The policy in force for the provider group as a whole (its reduced limits hold for all its domains together). */
  groupActive(queue: DestinationQueue): BackoffPolicy | undefined {
    const policy = this.policy(queue);
    return policy && this.#groupState(queue)?.isActive(policy, this.#clock.now()) ? policy : undefined;
  }

  /** Since when the queue (or its group) is in backoff. */
  since(queue: DestinationQueue): number | undefined {
    if (!this.active(queue)) return undefined;
    const own = queue.backoff.since;
    const group = this.#groupState(queue)?.since;
    if (own === undefined) return group;
    return group === undefined ? own : Math.min(own, group);
  }

  /** A non-2xx reply: true when it (newly) puts the queue or its group in backoff. */
  onFailureReply(queue: DestinationQueue, reply: string, now: number): boolean {
    const policy = this.policy(queue);
    const enteredQueue = queue.backoff.onFailureReply(policy, reply, now);
    const enteredGroup = this.#groupState(queue, true)?.onFailureReply(policy, reply, now) ?? false;
    return enteredQueue || enteredGroup;
  }

  /** A delivery ends the queue's own backoff; true when the queue is back to normal (its group's backoff runs until returnAfter). */
  onDelivery(queue: DestinationQueue): boolean {
    return queue.backoff.onDelivery() && !this.groupActive(queue);
  }

  #groupState(queue: DestinationQueue, create = false): BackoffState | undefined {
    const group = this.#groupOf(queue);
    if (!group) return undefined;
    const key = `${queue.virtualMta}\u0000${group.name}`;
    let state = this.#groups.get(key);
    if (!state && create) this.#groups.set(key, (state = new BackoffState()));
    return state;
  }
}
