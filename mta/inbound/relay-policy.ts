// The relay decision, closed by default: pure functions from (policy, listener, session facts,
// address) to "accept" or the exact SMTP reply. Relaying is granted only to
//   1. authenticated users (MAIL FROM limited to the user's allowed sender domains),
//   2. clients whose real address is in the policy's allowedCidrs,
//   3. for anyone else, recipients listed in relayDomains / relayAddresses — and then never
//      for a local part with `%` or `!` (old source routing that fooled relays into forwarding).
// Client addresses are compared with ipaddr.js, IPv4-mapped IPv6 folded to IPv4.
import ipaddr from 'ipaddr.js';
import type { ListenerConfig, RelayPolicyConfig } from '../config/schema.ts';
import type { RejectionReason } from '../observe/metrics.ts';
import type { Mailbox } from './address.ts';

export type PolicyDecision = { ok: true } | { ok: false; code: number; message: string; reason: RejectionReason };

/** A relay policy prepared once per config: CIDRs parsed, regexes compiled. */
export interface CompiledRelayPolicy {
  config: RelayPolicyConfig;
  allowedNetworks: Array<[ipaddr.IPv4 | ipaddr.IPv6, number]>;
  relayDomains: string[];
  exactRelayAddresses: Set<string>;
  relayAddressPatterns: RegExp[];
}

export function compileRelayPolicy(config: RelayPolicyConfig): CompiledRelayPolicy {
  const exactRelayAddresses = new Set<string>();
  const relayAddressPatterns: RegExp[] = [];
  for (const entry of config.relayAddresses) {
    const regex = /^\/(.*)\/([imsu]*)$/.exec(entry);
    // Anchored to the whole address, so "/bounces@example\.com/" cannot match "bounces@example.com.evil".
    if (regex) relayAddressPatterns.push(new RegExp(`^(?:${regex[1] ?? ''})$`, regex[2]));
    else exactRelayAddresses.add(entry.toLowerCase());
  }
  return {
    config,
    allowedNetworks: config.allowedCidrs.map(parseCidr),
    relayDomains: config.relayDomains.map((domain) => domain.toLowerCase()),
    exactRelayAddresses,
    relayAddressPatterns,
  };
}

export function parseCidr(text: string): [ipaddr.IPv4 | ipaddr.IPv6, number] {
  if (text.includes('/')) return foldMapped(ipaddr.parseCIDR(text));
  const address = ipaddr.parse(text);
  return foldMapped([address, address.kind() === 'ipv4' ? 32 : 128]);
}

function foldMapped([address, bits]: [ipaddr.IPv4 | ipaddr.IPv6, number]): [ipaddr.IPv4 | ipaddr.IPv6, number] {
  if (address.kind() === 'ipv6' && (address as ipaddr.IPv6).isIPv4MappedAddress() && bits >= 96) {
    return [(address as ipaddr.IPv6).toIPv4Address(), bits - 96];
  }
  return [address, bits];
}

/** True when the address (IPv4, IPv6 or IPv4-mapped IPv6) is inside one of the networks. */
export function addressInNetworks(address: string, networks: ReadonlyArray<[ipaddr.IPv4 | ipaddr.IPv6, number]>): boolean {
  if (!ipaddr.isValid(address)) return false;
  const parsed = ipaddr.process(address);
  return networks.some(([network, bits]) => network.kind() === parsed.kind() && parsed.match(network, bits));
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
  if (facts.user !== undefined) return { ok: true };
  if (addressInNetworks(facts.clientAddress, facts.policy.allowedNetworks)) return { ok: true };
  if (!facts.recipient.hasRoutingCharacters && isRelayRecipient(facts.policy, facts.recipient)) return { ok: true };
  return { ok: false, code: 550, message: '5.7.1 Relaying denied', reason: 'relay_denied' };
}

function isRelayRecipient(policy: CompiledRelayPolicy, recipient: Mailbox): boolean {
  if (domainMatchesAny(recipient.domain, policy.relayDomains)) return true;
  const address = recipient.address.toLowerCase();
  if (policy.exactRelayAddresses.has(address)) return true;
  return policy.relayAddressPatterns.some((pattern) => pattern.test(recipient.address));
}

/** "example.com" matches itself; "*.example.com" matches sub-domains only; "*" matches every domain. */
export function domainMatchesAny(domain: string, patterns: readonly string[]): boolean {
  const lower = domain.toLowerCase();
  return patterns.some((pattern) => {
    if (pattern === '*') return true;
    if (pattern.startsWith('*.')) return lower.endsWith(pattern.slice(1));
    return lower === pattern;
  });
}
