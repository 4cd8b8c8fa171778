// Checks of single config values that a pattern cannot express, shared by the relay's runtime
// config schema and the operator's resource schemas so both refuse exactly the same values with
// the same words: canonical addresses and ranges (address-range.ts), host:port and resolver
// endpoints with a port in 1-65535, relay-address entries and the reply patterns of backoff
// (regular expressions compiled here exactly as the relay compiles them, so a config that loads
// never throws on them later). Each check returns the problem, or undefined when the value is good.
import type { z } from 'zod';
import { isOverlyBroad, parseAddressRange, parseIpAddress } from './address-range.ts';
import { compileRelayAddress } from './relay-patterns.ts';

export type ValueCheck = (value: string) => string | undefined;

/** A zod superRefine callback that reports the check's problem on the value. */
export function refineWith(check: ValueCheck) {
  return (value: string, ctx: z.RefinementCtx) => {
    const problem = check(value);
    if (problem !== undefined) ctx.addIssue({ code: 'custom', input: value, message: problem });
  };
}

/** 1-65535 in decimal without leading zeros, as a regular expression that RE2 (CRD patterns) and JavaScript both read. */
export const PORT_PATTERN_SOURCE = '(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})';
const PORT = new RegExp(`^${PORT_PATTERN_SOURCE}$`);

export const checkIpAddress: ValueCheck = (value) => {
  const parsed = parseIpAddress(value);
  return parsed.ok ? undefined : parsed.error;
};

export const checkAddressRange: ValueCheck = (value) => {
  const parsed = parseAddressRange(value);
  if (parsed.ok) return undefined;
  // Say what a non-canonical open range means, so fixing the notation does not look like the whole fix.
  const meant = parsed.canonical === undefined ? undefined : parseAddressRange(parsed.canonical);
  return meant?.ok && isOverlyBroad(meant.value) ? `${parsed.error} (a range wider than a /8 IPv4 or /16 IPv6)` : parsed.error;
};

/** "host:port": a DNS name, a canonical IPv4 address or a bracketed canonical IPv6 address, and a port. */
export const checkHostPort: ValueCheck = (value) => {
  const separator = value.lastIndexOf(':');
  if (separator < 0) return `"${value}" is not host:port (e.g. smarthost.example.net:587)`;
  const host = value.slice(0, separator);
  const port = value.slice(separator + 1);
  if (!PORT.test(port)) return `"${value}": the port must be 1 to 65535 (got "${port}")`;
  if (host.startsWith('[')) {
    if (!host.endsWith(']') || !host.includes(':')) return `"${value}": brackets hold an IPv6 address, as in [2001:db8::25]:25`;
    return checkIpAddress(host.slice(1, -1));
  }
  if (/^[0-9.]+$/.test(host)) return checkIpAddress(host);
  if (!/^(?=.{1,253}$)[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?(\.[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?)*$/.test(host)) return `"${value}": "${host}" is not a DNS host name or an address`;
  return undefined;
};

/** A DNS server: "10.0.0.10", "10.0.0.10:5353", "2001:db8::53" or "[2001:db8::53]:5353". */
export const checkResolver: ValueCheck = (value) => {
  if (value.startsWith('[')) {
    const match = /^\[([^\]]*)\]:(.*)$/.exec(value);
    if (!match) return `"${value}" is not an address or [IPv6]:port`;
    if (!PORT.test(match[2] ?? '')) return `"${value}": the port must be 1 to 65535 (got "${match[2]}")`;
    const address = match[1] ?? '';
    return address.includes(':') ? checkIpAddress(address) : `"${value}": brackets hold an IPv6 address`;
  }
  const colons = value.split(':').length - 1;
  if (colons === 1) {
    const [address = '', port = ''] = value.split(':');
    if (!PORT.test(port)) return `"${value}": the port must be 1 to 65535 (got "${port}")`;
    return checkIpAddress(address);
  }
  return checkIpAddress(value);
};

export const RELAY_ADDRESS_HINT = 'an address such as bounces@example.com or a /regular expression/';

export const checkRelayAddress: ValueCheck = (value) => {
  const compiled = compileRelayAddress(value);
  return compiled.ok ? undefined : `"${value}": ${compiled.error}`;
};

/** Flags the delivery engine compiles reply patterns with. */
export const REPLY_PATTERN_FLAGS = 'i';

export const checkReplyPattern: ValueCheck = (value) => {
  try {
    new RegExp(value, REPLY_PATTERN_FLAGS);
    return undefined;
  } catch (error) {
    return `"${value}" is not a valid regular expression: ${(error as Error).message}`;
  }
};
