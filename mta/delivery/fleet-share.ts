// A pod's share of a limit that holds for the whole pool (issue #12): the connection limits
// (maxSmtpOut of a domain, an MX-rollup site or a provider group) and message rates are declared
// for the pool, and each relay pod takes its part of them from the fleet membership the operator
// publishes (the ordinals of the pods whose relays deliver). Pure arithmetic: no I/O, time passed in.
//
// - A limit of at least one connection per member is split in integers, the remainder to the
//   lowest ranks (ordinals sorted), so the shares sum to the limit exactly.
// - A limit smaller than the number of members (maxSmtpOut 1 on 3 pods) cannot be split: its
//   slots rotate over the members in time windows. In window w the slots belong to the ranks
//   (w * limit + k) mod members, k < limit; a pod that did not hold a slot in the window before
//   waits `guardMs` into the window, so the previous holder's last message (and clock skew
//   between pods) is over before it starts. Every member's mail gets its turn, none is handed over.
// - A rate goes with the connections: a pod's part of the rate is the rate times its share of
//   the limit, so the parts sum to the declared rate.
// - Pods whose names carry no ordinal (a Deployment's) get theirs from the membership's `ranks`.
// - A membership change lowers before it raises: until `raiseAfter` every pod takes the smaller of
//   its share under the previous and the new membership. Each table alone sums to the limit,
//   and pods still on the previous table hold no more than it gave them, so at no instant does the
//   sum exceed the limit; the operator sets raiseAfter past the time every pod has read the change.
import { z } from 'zod';
import type { Rate } from '../config/duration.ts';

const ordinal = z.number().int().min(0).max(100_000);

/** What the operator publishes (the fleet ConfigMap): the pods that hold shares. */
export const FleetMembership = z.strictObject({
  /** Ordinals of the pods that take shares now (pods whose relays deliver). */
  members: z.array(ordinal).max(1000),
  /** The members before the latest change; with raiseAfter, shares are the smaller of both until then. */
  previousMembers: z.array(ordinal).max(1000).optional(),
  /** ISO time from which the new shares apply in full. */
  raiseAfter: z.iso.datetime().optional(),
  /** Pod name -> ordinal, for pods whose names carry none (a Deployment's); a pod not listed holds no share. */
  ranks: z.record(z.string().min(1).max(253), ordinal).optional(),
});
export type FleetMembership = z.output<typeof FleetMembership>;

/** Where this pod stands in the fleet, as the delivery engine holds it. */
export interface FleetPosition {
  ordinal: number;
  membership: FleetMembership;
  rotationWindowMs: number;
  rotationGuardMs: number;
}

/** This pod's connections of a pool-wide limit at `now`. */
export function connectionShare(limit: number, fleet: FleetPosition, now: number): number {
  const current = shareUnder(limit, fleet.membership.members, fleet, now);
  const { previousMembers, raiseAfter } = fleet.membership;
  if (!previousMembers || !raiseAfter || now >= Date.parse(raiseAfter)) return current;
  return Math.min(current, shareUnder(limit, previousMembers, fleet, now));
}

/**
 * This pod's part of a pool-wide count (a warm-up cap): split in integers like connections, the
 * remainder to the lowest ranks, with no rotation (a count is used up, not held: rotating it would
 * let every pod use a whole slot). A count below the number of members goes to the lowest ranks.
 * During a pending raise the smaller of both tables, as for connections.
 */
export function countShare(total: number, fleet: FleetPosition, now: number): number {
  const current = splitUnder(total, fleet.membership.members, fleet.ordinal);
  const { previousMembers, raiseAfter } = fleet.membership;
  if (!previousMembers || !raiseAfter || now >= Date.parse(raiseAfter)) return current;
  return Math.min(current, splitUnder(total, previousMembers, fleet.ordinal));
}

function splitUnder(total: number, members: readonly number[], ordinal: number): number {
  const ranks = [...new Set(members)].sort((a, b) => a - b);
  const rank = ranks.indexOf(ordinal);
  if (rank < 0 || total <= 0) return 0;
  return Math.floor(total / ranks.length) + (rank < total % ranks.length ? 1 : 0);
}

/** This pod's part of a pool-wide rate: the rate times its share of the connection limit (undefined: no messages now). */
export function rateShare(rate: Rate, limit: number, fleet: FleetPosition, now: number): Rate | undefined {
  const share = connectionShare(limit, fleet, now);
  if (share === 0 || limit === 0) return undefined;
  return { count: (rate.count * share) / limit, perMs: rate.perMs };
}

/** When a rotating share may next change (the next window start or the end of its guard); undefined when it does not rotate. */
export function nextShareChange(limit: number, fleet: FleetPosition, now: number): number | undefined {
  const members = new Set([...fleet.membership.members, ...(fleet.membership.previousMembers ?? [])]).size;
  const { rotationWindowMs: window, rotationGuardMs: guard } = fleet;
  const raiseAt = fleet.membership.raiseAfter ? Date.parse(fleet.membership.raiseAfter) : undefined;
  const pending = raiseAt !== undefined && raiseAt > now ? raiseAt : undefined;
  if (limit >= members) return pending;
  const windowStart = Math.floor(now / window) * window;
  const rotation = now < windowStart + guard ? windowStart + guard : windowStart + window;
  return pending === undefined ? rotation : Math.min(rotation, pending);
}

function shareUnder(limit: number, members: readonly number[], fleet: FleetPosition, now: number): number {
  const ranks = [...new Set(members)].sort((a, b) => a - b);
  const rank = ranks.indexOf(fleet.ordinal);
  if (rank < 0 || limit <= 0) return 0;
  const count = ranks.length;
  if (limit >= count) return splitUnder(limit, ranks, fleet.ordinal);
  const window = Math.floor(now / fleet.rotationWindowMs);
  const holds = (w: number) => (((rank - w * limit) % count) + count) % count < limit;
  if (!holds(window)) return 0;
  const intoWindow = now - window * fleet.rotationWindowMs;
  return holds(window - 1) || intoWindow >= fleet.rotationGuardMs ? 1 : 0;
}

/** A pod the membership's ranks do not list: it is no member of any table and holds no share. */
export const UNRANKED = -1;

/** This pod's ordinal: from the membership's ranks when it has them, else from the end of the pod's name. */
export function memberOrdinal(membership: FleetMembership, podName: string | undefined): number {
  if (membership.ranks) return (podName === undefined ? undefined : membership.ranks[podName]) ?? UNRANKED;
  return podOrdinal(podName);
}

/** The ordinal at the end of a StatefulSet pod's name ("pool-relay-2" is 2). */
export function podOrdinal(podName: string | undefined): number {
  const match = podName ? /-(\d+)$/.exec(podName) : null;
  if (!match) throw new Error(`fleet limits need the pod's ordinal: POD_NAME=${JSON.stringify(podName ?? '')} does not end in "-<number>" (a StatefulSet pod name)`);
  return Number(match[1]);
}
