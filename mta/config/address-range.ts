// The one parser of IP addresses and address ranges (CIDRs) for every place that reads them:
// the relay's config schema, the operator's resource schemas, relay-policy matching and
// PROXY-protocol trust. Every address is placed in one 128-bit space where IPv4 a.b.c.d is
// ::ffff:a.b.c.d, so "10.0.0.0/8", a range written as IPv4-mapped IPv6 and a dual-stack
// socket's "::ffff:10.1.2.3" all mean the same addresses, and the open-relay width limit judges
// what a range covers, whatever its notation.
//
// Config values must be canonical, the form Kubernetes' CEL `ip.isCanonical` and
// `string(cidr(x).masked())` produce: IPv4 in dotted decimal without leading zeros, IPv6 in
// RFC 5952 form (lower case, longest zero run compressed, no dotted tail), a prefix length in
// decimal without leading zeros, no host bits, no zone, no whitespace, and IPv4-mapped IPv6
// written as the IPv4 it is. Anything else is refused with the canonical form in the message,
// never silently normalised: parsers disagree on these forms (inet_aton reads "010" as octal 8,
// ipaddr.js too, Go's netip refuses it; "10.0.0.1/8" is a host to one tool and 10.0.0.0/8 to
// another), so the only value whose meaning every reader agrees on is the canonical one, and
// the value stored in the resource is then exactly the value the relay matches.
import net from 'node:net';
import ipaddr from 'ipaddr.js';

export type IpFamily = 4 | 6;

/** A range in the unified 128-bit space. */
export interface AddressRange {
  /** First address of the range (host bits zero). */
  network: bigint;
  /** Prefix length in the 128-bit space (an IPv4 /8 is 104 here). */
  prefixLength128: number;
  /** Family and prefix length as the canonical text writes them. */
  family: IpFamily;
  prefixLength: number;
  /** Canonical text: "10.0.0.0/8", "2001:db8::/32", or a single address "192.0.2.1". */
  canonical: string;
}

export type Parsed<T> = { ok: true; value: T } | { ok: false; error: string; canonical?: string };

const MAPPED_PREFIX = 0xffffn << 32n;
const ALL_ONES = (1n << 128n) - 1n;
const IPV4_OCTET = /^(0|[1-9][0-9]{0,2})$/;

function maskOf(prefixLength128: number): bigint {
  return prefixLength128 === 0 ? 0n : (ALL_ONES << BigInt(128 - prefixLength128)) & ALL_ONES;
}

function isMapped(value: bigint): boolean {
  return value >> 32n === 0xffffn;
}

function ipv4Text(value: bigint): string {
  return [24n, 16n, 8n, 0n].map((shift) => String((value >> shift) & 0xffn)).join('.');
}

function ipv6Text(value: bigint): string {
  const parts: number[] = [];
  for (let index = 7; index >= 0; index--) parts.push(Number((value >> BigInt(index * 16)) & 0xffffn));
  return new ipaddr.IPv6(parts).toRFC5952String();
}

/** Canonical text of an address in the 128-bit space (mapped addresses as IPv4). */
export function addressText(value: bigint): string {
  return isMapped(value) ? ipv4Text(value) : ipv6Text(value);
}

interface AddressReading {
  value: bigint;
  /** The family the text is written in. */
  writtenFamily: IpFamily;
  /** Leading zeros in an IPv4 octet: read as decimal here, as octal elsewhere. */
  ambiguous: boolean;
}

/** Reads an address in any notation a socket or a person might write, or null. */
function readAddress(text: string): AddressReading | null {
  if (text.includes(':')) {
    // Zone ids ("fe80::1%eth0") name an interface, not an address anyone can match.
    if (!/^[0-9A-Fa-f:.]+$/.test(text) || !net.isIPv6(text)) return null;
    const dotted = /:([0-9]*\.[0-9.]*)$/.exec(text);
    const tail = dotted ? readIpv4(dotted[1] ?? '') : null;
    if (dotted && !tail) return null;
    // The dotted tail becomes two groups; ipaddr.js would read "::10.0.0.1" as mapped, which it is not.
    const hex = tail ? `${text.slice(0, dotted!.index + 1)}${(tail.value >> 16n).toString(16)}:${(tail.value & 0xffffn).toString(16)}` : text;
    const [head = '', rest] = hex.split('::');
    const headGroups = head === '' ? [] : head.split(':');
    const restGroups = rest === undefined || rest === '' ? [] : rest.split(':');
    const groups = rest === undefined ? headGroups : [...headGroups, ...Array<string>(8 - headGroups.length - restGroups.length).fill('0'), ...restGroups];
    const value = groups.reduce((sum, group) => (sum << 16n) | BigInt(`0x${group}`), 0n);
    return { value, writtenFamily: 6, ambiguous: tail?.ambiguous ?? false };
  }
  const ipv4 = readIpv4(text);
  return ipv4 && { value: MAPPED_PREFIX | ipv4.value, writtenFamily: 4, ambiguous: ipv4.ambiguous };
}

function readIpv4(text: string): { value: bigint; ambiguous: boolean } | null {
  const octets = text.split('.');
  if (octets.length !== 4 || !octets.every((octet) => /^[0-9]{1,3}$/.test(octet) && Number(octet) <= 255)) return null;
  return { value: octets.reduce((sum, octet) => (sum << 8n) | BigInt(Number(octet)), 0n), ambiguous: !octets.every((octet) => IPV4_OCTET.test(octet)) };
}

/**
 * An address as a peer presents it (a socket, a PROXY header): any valid notation, IPv4-mapped
 * IPv6 folded. Ambiguous forms (leading zeros in an octet) and zone ids are refused (null).
 */
export function peerAddressValue(text: string): bigint | null {
  const reading = readAddress(text);
  return reading && !reading.ambiguous ? reading.value : null;
}

/** A single address as a config value: canonical only. */
export function parseIpAddress(text: string): Parsed<{ value: bigint; family: IpFamily; canonical: string }> {
  const reading = readAddress(text);
  if (!reading) return { ok: false, error: `"${text}" is not an IPv4 or IPv6 address` };
  const canonical = addressText(reading.value);
  const family: IpFamily = isMapped(reading.value) ? 4 : 6;
  if (canonical !== text) return { ok: false, error: notCanonical(text, canonical, reading), canonical };
  return { ok: true, value: { value: reading.value, family, canonical } };
}

function notCanonical(text: string, canonical: string, reading: AddressReading): string {
  const why = reading.ambiguous
    ? 'leading zeros in an IPv4 octet are read as octal by some parsers and as decimal by others'
    : reading.writtenFamily === 6 && isMapped(reading.value)
      ? 'an IPv4-mapped IPv6 address is the IPv4 address it carries'
      : 'addresses are written in canonical form (IPv6 as RFC 5952: lower case, longest zero run as "::", no dotted tail)';
  return `"${text}" is not in canonical form: ${why}; write "${canonical}"`;
}

/** An address or CIDR as a config value: canonical only, host bits zero. A bare address is a one-address range. */
export function parseAddressRange(text: string): Parsed<AddressRange> {
  const slash = text.indexOf('/');
  const addressPart = slash < 0 ? text : text.slice(0, slash);
  const reading = readAddress(addressPart);
  if (!reading) return { ok: false, error: `"${text}" is not an address or CIDR (e.g. 10.0.0.0/8, 2001:db8::/32, 192.0.2.1)` };
  const writtenBits = reading.writtenFamily === 4 ? 32 : 128;
  let writtenPrefix = writtenBits;
  if (slash >= 0) {
    const bits = text.slice(slash + 1);
    if (!/^[0-9]{1,8}$/.test(bits) || Number(bits) > writtenBits) {
      return { ok: false, error: `"${text}" is not a valid CIDR: the prefix length must be 0 to ${writtenBits} for IPv${reading.writtenFamily}` };
    }
    writtenPrefix = Number(bits);
  }
  const prefixLength128 = reading.writtenFamily === 4 ? 96 + writtenPrefix : writtenPrefix;
  const network = reading.value & maskOf(prefixLength128);
  // A range that is wholly IPv4-mapped is an IPv4 range; one reaching below /96 stays IPv6.
  const asIpv4 = isMapped(network) && prefixLength128 >= 96;
  const prefixLength = asIpv4 ? prefixLength128 - 96 : prefixLength128;
  const single = prefixLength128 === 128;
  const canonical = single && slash < 0 ? addressText(network) : `${asIpv4 ? ipv4Text(network) : ipv6Text(network)}/${prefixLength}`;
  const range: AddressRange = { network, prefixLength128, family: asIpv4 ? 4 : 6, prefixLength, canonical };
  if (canonical !== text) {
    const why = reading.ambiguous
      ? 'leading zeros in an IPv4 octet are read as octal by some parsers and as decimal by others'
      : network !== reading.value
        ? `host bits are set: it means ${canonical}, which a reader could take for a single host`
        : slash >= 0 && text.slice(slash + 1) !== String(writtenPrefix)
          ? 'the prefix length has leading zeros'
          : reading.writtenFamily === 6 && asIpv4
            ? 'an IPv4-mapped IPv6 range is the IPv4 range it carries'
            : 'IPv6 is written in RFC 5952 form (lower case, longest zero run as "::", no dotted tail)';
    return { ok: false, error: `"${text}" is not in canonical form: ${why}; write "${canonical}"`, canonical };
  }
  return { ok: true, value: range };
}

/** True when the range holds the address (both in the 128-bit space). */
export function rangeContains(range: AddressRange, value: bigint): boolean {
  return (value & maskOf(range.prefixLength128)) === range.network;
}

/** True when a peer address (any valid notation) is inside one of the ranges. */
export function peerInRanges(peer: string, ranges: readonly AddressRange[]): boolean {
  const value = peerAddressValue(peer);
  return value !== null && ranges.some((range) => rangeContains(range, value));
}

/** The widest ranges one operator's own networks plausibly take: an IPv4 /8, an IPv6 /16. */
export const OPEN_RELAY_WIDTH = { ipv4: 8, ipv6: 16 } as const;

/**
 * True for a range wider than any one network owns, judged on what it covers: an IPv4 range
 * shorter than /8, an IPv6 range shorter than /16, or an IPv6 range so wide that it holds the
 * whole IPv4-mapped block ::ffff:0:0/96 (every IPv4 client of a dual-stack socket).
 */
export function isOverlyBroad(range: AddressRange): boolean {
  if (range.family === 4) return range.prefixLength < OPEN_RELAY_WIDTH.ipv4;
  const holdsAllOfIpv4 = range.prefixLength128 <= 96 && (MAPPED_PREFIX & maskOf(range.prefixLength128)) === range.network;
  return range.prefixLength < OPEN_RELAY_WIDTH.ipv6 || holdsAllOfIpv4;
}

/**
 * Canonical texts of the IPv6 ranges from /81 to /95 that hold the whole IPv4-mapped block (the
 * wider ones are ::/0 to ::/80); the CRDs' CEL rule lists them, as CEL cannot mask by hand.
 */
export function rangesHoldingIpv4(): string[] {
  const ranges: string[] = [];
  for (let prefix = 81; prefix <= 95; prefix++) ranges.push(`${ipv6Text(MAPPED_PREFIX & maskOf(prefix))}/${prefix}`);
  return ranges;
}

/** Parses a list of canonical ranges (config already validated); throws on a value the schema would refuse. */
export function compileRanges(texts: readonly string[]): AddressRange[] {
  return texts.map((text) => {
    const parsed = parseAddressRange(text);
    if (!parsed.ok) throw new Error(parsed.error);
    return parsed.value;
  });
}
