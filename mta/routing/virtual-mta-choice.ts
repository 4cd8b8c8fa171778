// Choosing the VirtualMTA of an accepted message, in this order:
//   1. the X-Virtual-MTA header, only when the relay policy honours it AND it names a VirtualMTA
//      of this pool (an unknown name falls through to the next steps: refusing a whole message
//      after DATA for a routing hint would punish the sender for a config mismatch);
//   2. the policy's routing rules, first match wins; every field a rule sets must match: the
//      sender domain, the authenticated user (exact), the recipient domain (every recipient of
//      the message must match, since one message goes to one VirtualMTA);
//   3. the policy's defaultVirtualMta;
//   4. the pool's selection: round-robin, or smooth weighted round-robin (as nginx does: over
//      any window of sum(weights) picks each VirtualMTA gets exactly its weight, interleaved).
// Everything here is pure except PoolSelector, which holds the rotation state.
import type { RelayPolicyConfig, RuntimeConfig } from '../config/schema.ts';
import { domainOf, matchesDomainPattern } from './domain-pattern.ts';

export type PoolConfig = RuntimeConfig['pool'];
type RoutingConfig = RelayPolicyConfig['routing'];
type RoutingRuleConfig = RoutingConfig['rules'][number];

export interface RoutingRequest {
  routing: RoutingConfig;
  pool: PoolConfig;
  /** Value of the message's first X-Virtual-MTA header, if it had one. */
  virtualMtaHeader?: string;
  /** '' for the null sender. */
  mailFrom: string;
  user?: string;
  recipientDomains: readonly string[];
}

export interface RoutingDecision {
  virtualMta: string;
  reason: 'header' | 'rule' | 'default' | 'pool';
  /** Index in routing.rules of the rule that matched (reason "rule"). */
  ruleIndex?: number;
  /** Why an X-Virtual-MTA header present on the message did not decide. */
  ignoredHeader?: 'not-honoured' | 'unknown-virtual-mta';
}

/** Rotation state of the pool's selection; it restarts when the pool's VirtualMTAs or weights change. */
export class PoolSelector {
  #signature = '';
  #nextIndex = 0;
  #currentWeights: number[] = [];

  pick(pool: PoolConfig): string {
    const signature = `${pool.selection}|${pool.virtualMtas.map((vmta) => `${vmta.name}:${vmta.weight}`).join(',')}`;
    if (signature !== this.#signature) {
      this.#signature = signature;
      this.#nextIndex = 0;
      this.#currentWeights = pool.virtualMtas.map(() => 0);
    }
    const index = pool.selection === 'weighted' ? this.#pickWeighted(pool) : this.#nextIndex++ % pool.virtualMtas.length;
    const chosen = pool.virtualMtas[index];
    if (!chosen) throw new Error(`pool "${pool.name}" has no VirtualMTA to choose from`);
    return chosen.name;
  }

  #pickWeighted(pool: PoolConfig): number {
    let total = 0;
    let best = 0;
    pool.virtualMtas.forEach((vmta, index) => {
      const current = (this.#currentWeights[index] ?? 0) + vmta.weight;
      this.#currentWeights[index] = current;
      total += vmta.weight;
      if (current > (this.#currentWeights[best] ?? 0)) best = index;
    });
    this.#currentWeights[best] = (this.#currentWeights[best] ?? 0) - total;
    return best;
  }
}

export function chooseVirtualMta(request: RoutingRequest, selector: PoolSelector): RoutingDecision {
  const { routing, pool } = request;
  const names = new Set(pool.virtualMtas.map((vmta) => vmta.name));
  let ignoredHeader: 'not-honoured' | 'unknown-virtual-mta' | undefined;
  if (request.virtualMtaHeader !== undefined) {
    const named = request.virtualMtaHeader.trim().toLowerCase();
    if (!routing.honorVirtualMtaHeader) ignoredHeader = 'not-honoured';
    else if (names.has(named)) return { virtualMta: named, reason: 'header' };
    else ignoredHeader = 'unknown-virtual-mta';
  }
  const withIgnoredHeader = (decision: RoutingDecision): RoutingDecision => (ignoredHeader ? { ...decision, ignoredHeader } : decision);
  const ruleIndex = routing.rules.findIndex((rule) => ruleMatches(rule, request));
  const rule = routing.rules[ruleIndex];
  if (rule) return withIgnoredHeader({ virtualMta: rule.virtualMta, reason: 'rule', ruleIndex });
  if (routing.defaultVirtualMta) return withIgnoredHeader({ virtualMta: routing.defaultVirtualMta, reason: 'default' });
  return withIgnoredHeader({ virtualMta: selector.pick(pool), reason: 'pool' });
}

function ruleMatches(rule: RoutingRuleConfig, request: RoutingRequest): boolean {
  if (rule.senderDomain !== undefined && !matchesDomainPattern(domainOf(request.mailFrom), rule.senderDomain)) return false;
  if (rule.user !== undefined && rule.user !== request.user) return false;
  if (rule.recipientDomain !== undefined) {
    const pattern = rule.recipientDomain;
    if (request.recipientDomains.length === 0 || !request.recipientDomains.every((domain) => matchesDomainPattern(domain, pattern))) return false;
  }
  return true;
}
