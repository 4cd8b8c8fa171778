// The relay decision, closed by default: pure functions from (policy, listener, session facts,
// address) to "accept" or the exact SMTP reply. Relaying is granted only to
//   1. authenticated users (MAIL FROM limited to the user's allowed sender domains),
//   2. clients whose real address is in the policy's allowedCidrs,
//   3. for anyone else, recipients listed in relayDomains / relayAddresses — and then never
//      for a local part with `%` or `!` (old source routing that fooled relays into forwarding).
// Client addresses and ranges are compared by the one address parser (config/address-range.ts),
// in which IPv4 and IPv4-mapped IPv6 are the same addresses; relay addresses are matched as
// config/relay-patterns.ts compiles them.
import { compileRanges, peerInRanges, type AddressRange } from '../config/address-range.ts';
import { compileRelayAddress, relayAddressMatches, type RelayAddressMatcher } from '../config/relay-patterns.ts';
import type { ListenerConfig, RelayPolicyConfig } from '../config/schema.ts';
import { matchesDomainPattern } from '../routing/domain-pattern.ts';
import type { RejectionReason } from '../observe/metrics.ts';
import type { RelayGrant } from '../spool/types.ts';
import type { Mailbox } from './address.ts';

export type PolicyDecision = { ok: true } | { ok: false; code: number; message: string; reason: RejectionReason };

/** A relay policy prepared once per config: ranges parsed, patterns compiled. */
export interface CompiledRelayPolicy {
  config: RelayPolicyConfig;
  allowedNetworks: AddressRange[];
  relayDomains: string[];
  relayAddresses: RelayAddressMatcher[];
}

/** Compiles a policy the config schema accepted (which has checked every range and pattern). */
export function compileRelayPolicy(config: RelayPolicyConfig): CompiledRelayPolicy {
  return {
    config,
    allowedNetworks: compileRanges(config.allowedCidrs),
    relayDomains: config.relayDomains.map((domain) => domain.toLowerCase()),
    relayAddresses: config.relayAddresses.map((entry) => {
      const compiled = compileRelayAddress(entry);
      if (!compiled.ok) throw new Error(`relayAddresses: ${compiled.error}`);
      return compiled.matcher;
    }),
  };
}

/** The sender domains an authenticated user may use: their own list, else the policy's default. */
export function userSenderDomains(policy: RelayPolicyConfig, user: string): readonly string[] {
  return policy.users?.allowedSenderDomains[user] ?? policy.users?.defaultAllowedSenderDomains ?? [];
}

export interface SenderFacts {
  listener: ListenerConfig;
  user: string | undefined;
  /** Allowed sender domains of the authenticated user. */
  userSenderDomains: readonly string[];
  secure: boolean;
  mailFrom: Mailbox | null;
  smtpUtf8: boolean;
}

export function decideSender(facts: SenderFacts): PolicyDecision {
  if (facts.listener.tls.required && !facts.secure) {
    return { ok: false, code: 530, message: '5.7.0 Must issue a STARTTLS command first', reason: 'tls_required' };
  }
  if (facts.listener.auth.required && facts.user === undefined) {
    return { ok: false, code: 530, message: '5.7.0 Authentication required', reason: 'auth_required' };
  }
  if (facts.mailFrom && !facts.mailFrom.asciiLocalPart && !facts.smtpUtf8) {
    return { ok: false, code: 553, message: '5.6.7 Non-ASCII addresses require SMTPUTF8', reason: 'syntax' };
  }
  // The null sender (bounces) names no domain to check.
  if (facts.user !== undefined && facts.mailFrom && !domainMatchesAny(facts.mailFrom.domain, facts.userSenderDomains)) {
    return { ok: false, code: 553, message: `5.7.1 Sender address not allowed for user ${facts.user}`, reason: 'sender_not_allowed' };
  }
  return { ok: true };
}

export interface RecipientFacts {
  policy: CompiledRelayPolicy;
  user: string | undefined;
  clientAddress: string;
  recipient: Mailbox;
  smtpUtf8: boolean;
}

export function decideRecipient(facts: RecipientFacts): PolicyDecision {
  if (!facts.recipient.asciiLocalPart && !facts.smtpUtf8) {
    return { ok: false, code: 553, message: '5.6.7 Non-ASCII addresses require SMTPUTF8', reason: 'syntax' };
  }
  if (sessionRelayGrant(facts.policy, facts.user, facts.clientAddress) !== undefined) return { ok: true };
  if (!facts.recipient.hasRoutingCharacters && isRelayRecipient(facts.policy, facts.recipient)) return { ok: true };
  return { ok: false, code: 550, message: '5.7.1 Relaying denied', reason: 'relay_denied' };
}

/** What lets a session relay to any recipient: AUTH, or a client in the policy's allowed networks; undefined when only relay recipients are accepted. */
export function sessionRelayGrant(policy: CompiledRelayPolicy, user: string | undefined, clientAddress: string): Exclude<RelayGrant, 'relay-recipient'> | undefined {
  if (user !== undefined) return 'auth';
  if (peerInRanges(clientAddress, policy.allowedNetworks)) return 'network';
  return undefined;
}

function isRelayRecipient(policy: CompiledRelayPolicy, recipient: Mailbox): boolean {
  if (domainMatchesAny(recipient.domain, policy.relayDomains)) return true;
  return policy.relayAddresses.some((matcher) => relayAddressMatches(matcher, recipient.address));
}

/** "example.com" matches itself; "*.example.com" matches sub-domains only; "*" matches every domain. */
export function domainMatchesAny(domain: string, patterns: readonly string[]): boolean {
  return patterns.some((pattern) => matchesDomainPattern(domain, pattern));
}
