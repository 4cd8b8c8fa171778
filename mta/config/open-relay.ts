// The open-relay rules of a relay policy, one implementation for the runtime config and the
// operator's RelayPolicy: a client range wider than any one network owns (judged on what the
// range covers, address-range.ts), a relay domain or relay address that matches addresses at
// domains nobody configured (the probe of relay-patterns.ts). Each is refused unless the policy
// says `acknowledgeOpenRelay: true`. Trusting a PROXY header from such a range is refused always:
// anyone there could claim any client address, and no acknowledgement makes that safe.
import { isOverlyBroad, parseAddressRange } from './address-range.ts';
import { openRelayAddress, openRelayDomain } from './relay-patterns.ts';

export interface OpenRelayProblem {
  field: 'cidrs' | 'relayDomains' | 'relayAddresses';
  index: number;
  value: string;
  message: string;
}

const ACKNOWLEDGE = 'list your own networks and domains, or set acknowledgeOpenRelay: true if this is really meant';

/** Indexes of the ranges (valid ones; invalid ones are reported by their field check) that are too wide. */
export function overlyBroadIndexes(ranges: readonly string[]): number[] {
  return ranges.flatMap((text, index) => {
    const parsed = parseAddressRange(text);
    return parsed.ok && isOverlyBroad(parsed.value) ? [index] : [];
  });
}

export function openRelayProblems(policy: { cidrs: readonly string[]; relayDomains: readonly string[]; relayAddresses: readonly string[]; acknowledgeOpenRelay: boolean }): OpenRelayProblem[] {
  if (policy.acknowledgeOpenRelay) return [];
  const problems: OpenRelayProblem[] = overlyBroadIndexes(policy.cidrs).map((index) => ({
    field: 'cidrs',
    index,
    value: policy.cidrs[index] ?? '',
    message: `"${policy.cidrs[index]}" is wider than a /8 (IPv4) or /16 (IPv6): that lets a large part of the internet relay, an open relay; ${ACKNOWLEDGE}`,
  }));
  const domain = openRelayDomain(policy.relayDomains);
  if (domain) {
    problems.push({ field: 'relayDomains', index: policy.relayDomains.indexOf(domain.pattern), value: domain.pattern, message: `"${domain.pattern}" accepts mail for domains nobody configured (it matches ${domain.probe}): an open relay on port 25; ${ACKNOWLEDGE}` });
  }
  const address = openRelayAddress(policy.relayAddresses);
  if (address) {
    problems.push({ field: 'relayAddresses', index: policy.relayAddresses.indexOf(address.pattern), value: address.pattern, message: `"${address.pattern}" accepts mail for addresses at domains nobody configured (it matches ${address.probe}): an open relay on port 25; ${ACKNOWLEDGE}` });
  }
  return problems;
}

export const BROAD_PROXY_TRUST_MESSAGE = 'cannot trust a range wider than a /8 (IPv4) or /16 (IPv6) to send PROXY headers: anyone there could claim any client address';
