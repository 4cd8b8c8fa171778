// The connection and rate limits a destination queue sends under, and the slots and pacing
// state they share: per domain (and its backoff), per MX-rollup site, per provider group
// (`pool.providerGroups`: every domain whose MX hosts match the group's patterns; in group
// backoff, group-backoff.ts, the backoff limits hold for the group together), each per
// VirtualMTA. With `fleet` set, each limit is the pool's and this pod takes its share of it
// (fleet-share.ts). The scheduler asks here whether a queue may open a connection and whether a
// session may go on; the connection runner takes and returns the site and group slots.
import type { ProviderGroupConfig } from '../config/schema.ts';
import type { DeliveryContext } from './delivery-context.ts';
import type { DestinationQueue } from './destination-queue.ts';
import { matchSpecificity } from './domain-settings.ts';
import { DestinationBackoff } from './group-backoff.ts';
import { connectionShare, nextShareChange, rateShare, type FleetPosition } from './fleet-share.ts';
import type { MxTarget } from './outbound-connection.ts';
import type { Rate } from '../config/duration.ts';
import { parseRate } from '../config/duration.ts';

/** The first group (in config order) with a pattern matching one of the MX host names. */
export function providerGroupFor(groups: readonly ProviderGroupConfig[], mxHosts: readonly string[]): ProviderGroupConfig | undefined {
  const names = mxHosts.map((host) => host.toLowerCase().replace(/\.$/, ''));
  return groups.find((group) => group.mxHosts.some((pattern) => names.some((host) => matchSpecificity(pattern, host) >= 0)));
}

export class DestinationLimits {
  readonly #context: DeliveryContext;
  /** Open connections per "site\0virtualMta\0site" and "group\0virtualMta\0group". */
  readonly #slots = new Map<string, number>();
  /** Earliest start of the next message per provider group key (its maxMessageRate). */
  readonly #groupNextSendAt = new Map<string, number>();
  /** This pod's place in the fleet; undefined: every limit is this relay's own. */
  fleet: FleetPosition | undefined;
  /** Backoff of each queue and of its provider group. */
  readonly backoff: DestinationBackoff;

  constructor(context: DeliveryContext) {
    this.#context = context;
    this.backoff = new DestinationBackoff(context.clock, (queue) => this.providerGroup(queue));
  }

  /** This pod's part of a pool-wide connection limit now. */
  share(limit: number): number {
    return this.fleet ? connectionShare(limit, this.fleet, this.#context.clock.now()) : limit;
  }

  /** The provider group a queue's domain belongs to, once its MX hosts are known (warm-up caps key on it). */
  providerGroup(queue: DestinationQueue): ProviderGroupConfig | undefined {
    return queue.providerGroup === undefined ? undefined : this.#context.config.pool.providerGroups.find((group) => group.name === queue.providerGroup);
  }

  /** The domain's connection limit in force (backoff lowers it), as this pod's share. */
  domainLimit(queue: DestinationQueue): number {
    const backoff = this.backoff.active(queue);
    return this.share(backoff ? Math.min(backoff.maxSmtpOut, queue.settings.maxSmtpOut) : queue.settings.maxSmtpOut);
  }

  /** May `queue` open one more connection (domain, site and group limits)? */
  hasRoom(queue: DestinationQueue): boolean {
    const limit = this.domainLimit(queue);
    if (queue.connections >= limit) return false;
    if (queue.site && (this.#slots.get(siteKey(queue)) ?? 0) >= this.share(queue.settings.maxSmtpOut)) return false;
    const group = this.providerGroup(queue);
    const groupLimit = group && this.#groupLimit(queue, group);
    return groupLimit === undefined || (this.#slots.get(groupKey(queue.virtualMta, group!.name)) ?? 0) < this.share(groupLimit);
  }

  /** Has a limit dropped below the connections open (a rotating share ended, a re-share lowered it)? Then a session ends after its message. */
  overLimit(queue: DestinationQueue): boolean {
    if (queue.connections > this.domainLimit(queue)) return true;
    const group = this.providerGroup(queue);
    const groupLimit = group && this.#groupLimit(queue, group);
    return groupLimit !== undefined && (this.#slots.get(groupKey(queue.virtualMta, group!.name)) ?? 0) > this.share(groupLimit);
  }

  /**
   * Once the MX hosts are known: note the queue's site (MX rollup) and provider group and take a
   * slot of each. null when one is at its limit (the mail waits for a free slot); the keys
   * returned must be given back with leave().
   */
  join(queue: DestinationQueue, targets: readonly MxTarget[]): string[] | null {
    if (queue.settings.smtpHost) return [];
    const hosts = [...new Set(targets.map((target) => target.name))].sort();
    const keys: string[] = [];
    if (this.#context.config.delivery.mxRollup) {
      queue.site = hosts.join(',');
      keys.push(siteKey(queue));
      if ((this.#slots.get(siteKey(queue)) ?? 0) >= this.share(queue.settings.maxSmtpOut)) return null;
    }
    const group = this.providerGroup(queue);
    if (group) {
      // Counted even without a group limit: a group backoff may set one at any time.
      const key = groupKey(queue.virtualMta, group.name);
      const groupLimit = this.#groupLimit(queue, group);
      if (groupLimit !== undefined && (this.#slots.get(key) ?? 0) >= this.share(groupLimit)) return null;
      keys.push(key);
    }
    for (const key of keys) this.#slots.set(key, (this.#slots.get(key) ?? 0) + 1);
    return keys;
  }

  leave(keys: readonly string[]): void {
    for (const key of keys) this.#slots.set(key, (this.#slots.get(key) ?? 1) - 1);
  }

  /** Wait until the domain's rate (or its backoff rate) and the group's rate allow the next message. */
  async pace(queue: DestinationQueue): Promise<void> {
    const { clock } = this.#context;
    // A pool-wide rate with no part for this pod now (its turn ended mid-session): wait for the next turn.
    while (this.#declaredRateWithoutShare(queue)) await new Promise<void>((resolve) => clock.setTimer(this.fleet!.rotationGuardMs, resolve));
    const now = clock.now();
    const backoff = this.backoff.active(queue);
    const domainRate = this.#rateShare(backoff?.maxMessageRate ?? queue.settings.maxMessageRate, backoff ? Math.min(backoff.maxSmtpOut, queue.settings.maxSmtpOut) : queue.settings.maxSmtpOut, now);
    const group = this.providerGroup(queue);
    const groupRate = group && this.#rateShare(this.#groupRate(queue, group), this.#groupLimit(queue, group) ?? queue.settings.maxSmtpOut, now);
    const key = group ? groupKey(queue.virtualMta, group.name) : undefined;
    const startAt = Math.max(now, domainRate ? queue.nextSendAt : 0, key && groupRate ? (this.#groupNextSendAt.get(key) ?? 0) : 0);
    if (domainRate) queue.nextSendAt = startAt + domainRate.perMs / domainRate.count;
    if (key && groupRate) this.#groupNextSendAt.set(key, startAt + groupRate.perMs / groupRate.count);
    if (startAt > now) await new Promise<void>((resolve) => clock.setTimer(startAt - now, resolve));
  }

  /** When a share of this queue's limits may change next (a rotating turn, the raise of a re-share); the scheduler pumps then. */
  nextChange(queue: DestinationQueue): number | undefined {
    const fleet = this.fleet;
    if (!fleet || queue.ready.length === 0) return undefined;
    const now = this.#context.clock.now();
    const group = this.providerGroup(queue);
    let next: number | undefined;
    for (const limit of [queue.settings.maxSmtpOut, this.backoff.active(queue)?.maxSmtpOut, group && this.#groupLimit(queue, group)]) {
      const at = limit === undefined ? undefined : nextShareChange(limit, fleet, now);
      if (at !== undefined && (next === undefined || at < next)) next = at;
    }
    return next;
  }

  #declaredRateWithoutShare(queue: DestinationQueue): boolean {
    if (!this.fleet) return false;
    const backoff = this.backoff.active(queue);
    const rate = backoff?.maxMessageRate ?? queue.settings.maxMessageRate;
    return !!rate && this.share(backoff ? Math.min(backoff.maxSmtpOut, queue.settings.maxSmtpOut) : queue.settings.maxSmtpOut) === 0;
  }

  /** Pool-wide rates: this pod's part goes with its share of the limit the rate is paired with. */
  #rateShare(rate: Rate | undefined, pairedLimit: number, now: number): Rate | undefined {
    if (!rate || !this.fleet) return rate;
    return rateShare(rate, pairedLimit, this.fleet, now);
  }

  /** The group's connection limit in force: its own, lowered by a group backoff. */
  #groupLimit(queue: DestinationQueue, group: ProviderGroupConfig): number | undefined {
    const backoff = this.backoff.groupActive(queue);
    if (!backoff) return group.maxSmtpOut;
    return Math.min(group.maxSmtpOut ?? backoff.maxSmtpOut, backoff.maxSmtpOut);
  }

  /** The group's message rate in force: its own, or in group backoff the backoff rate when slower. */
  #groupRate(queue: DestinationQueue, group: ProviderGroupConfig): Rate | undefined {
    const own = group.maxMessageRate ? parseRate(group.maxMessageRate) : undefined;
    const backoff = this.backoff.groupActive(queue)?.maxMessageRate;
    if (!backoff) return own;
    return !own || backoff.perMs / backoff.count > own.perMs / own.count ? backoff : own;
  }
}

function siteKey(queue: DestinationQueue): string {
  return `site\u0000${queue.virtualMta}\u0000${queue.site}`;
}

function groupKey(virtualMta: string, group: string): string {
  return `group\u0000${virtualMta}\u0000${group}`;
}
