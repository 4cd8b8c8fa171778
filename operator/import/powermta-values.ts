// PowerMTA value notations -> the resources' notations: booleans (yes/no/true/false), durations
// (`4d12h` -> `108h`), rates (`100/h`, `unlimited`), CIDR shorthand (`0/0`, `10/8`, a bare
// address) and listener addresses (`10.0.1.22:25`, `[::]:25`, `0/0:25`). Each converter throws a
// plain Error saying what it expected; the importer adds the directive and line.
import { isIP } from 'node:net';
import { parseAddressRange } from '../../mta/config/address-range.ts';

export function pmtaBoolean(value: string): boolean {
  const word = value.toLowerCase();
  if (['yes', 'true', 'on', '1'].includes(word)) return true;
  if (['no', 'false', 'off', '0'].includes(word)) return false;
  throw new Error(`"${value}" is not yes/no or true/false`);
}

const UNIT_SECONDS: Record<string, number> = { w: 604_800, d: 86_400, h: 3600, m: 60, s: 1 };

/** "10m", "4d12h", "90" (seconds) -> the resources' one-unit form ("10m", "108h", "90s"). */
export function pmtaDuration(value: string): string {
  const text = value.toLowerCase();
  if (/^\d+$/.test(text)) return largestUnit(Number(text));
  if (!/^(\d+[wdhms])+$/.test(text)) throw new Error(`"${value}" is not a PowerMTA duration such as 10m, 1h or 4d12h`);
  let seconds = 0;
  for (const [, amount, unit] of text.matchAll(/(\d+)([wdhms])/g)) seconds += Number(amount) * UNIT_SECONDS[unit!]!;
  return largestUnit(seconds);
}

function largestUnit(seconds: number): string {
  for (const unit of ['d', 'h', 'm'] as const) {
    const size = UNIT_SECONDS[unit]!;
    if (seconds >= size && seconds % size === 0) return `${seconds / size}${unit}`;
  }
  return `${seconds}s`;
}

export interface RateConversion {
  /** undefined for "unlimited" (no limit). */
  rate: string | undefined;
  /** Set when the resource's rate is not exactly PowerMTA's. */
  approximation?: string;
}

/** "100/h", "10/m", "5/s", "2400/d", "unlimited". */
export function pmtaRate(value: string): RateConversion {
  const text = value.toLowerCase();
  if (text === 'unlimited') return { rate: undefined };
  const match = /^(\d+)\/(\d*)([smhd])$/.exec(text);
  if (!match) throw new Error(`"${value}" is not a PowerMTA rate such as 100/h, 10/m or unlimited`);
  const count = Number(match[1]);
  const per = Number(match[2] || '1') * UNIT_SECONDS[match[3]!]!;
  for (const [unit, size] of [['s', 1], ['m', 60], ['h', 3600]] as const) {
    if (per === size) return { rate: `${count}/${unit}` };
  }
  // Over a longer or odd period: the same average per hour, rounded down (never faster).
  const perHour = Math.max(1, Math.floor((count * 3600) / per));
  return { rate: `${perHour}/h`, approximation: `${value} is sent as ${perHour}/h (the resources' rates are per second, minute or hour)` };
}

/**
 * PowerMTA CIDR shorthand -> the canonical CIDR of what it means (the relay takes no other form):
 * "0/0" -> "0.0.0.0/0", "10/8" -> "10.0.0.0/8", "10.0.5.20/24" -> "10.0.5.0/24", "10.0.5.20" stays.
 */
export function pmtaCidr(value: string): string {
  const expanded = expandCidrShorthand(value);
  const parsed = parseAddressRange(expanded);
  if (parsed.ok) return expanded;
  if (parsed.canonical !== undefined) return parsed.canonical;
  throw new Error(parsed.error);
}

function expandCidrShorthand(value: string): string {
  if (isIP(value) !== 0) return value;
  const [address = '', length, extra] = value.split('/');
  if (length === undefined || extra !== undefined || !/^\d{1,3}$/.test(length)) throw new Error(`"${value}" is not an address or CIDR`);
  if (address.includes(':')) {
    if (isIP(address) !== 6) throw new Error(`"${value}" is not an IPv6 CIDR`);
    return `${address}/${length}`;
  }
  const octets = address.split('.');
  if (octets.length > 4 || octets.some((octet) => !/^\d{1,3}$/.test(octet) || Number(octet) > 255)) throw new Error(`"${value}" is not an IPv4 CIDR`);
  while (octets.length < 4) octets.push('0');
  return `${octets.join('.')}/${length}`;
}

export interface ListenAddress {
  /** undefined for every address (0/0, *, 0.0.0.0, ::). */
  address: string | undefined;
  port: number;
}

/** "10.0.1.22:25", "[2001:db8::1]:587", "0/0:25", "*:2525", "0.0.0.0:25". */
export function pmtaListenAddress(value: string): ListenAddress {
  const match = /^(\[[^\]]+\]|[^:]+|[0-9a-fA-F:]+):(\d{1,5})$/.exec(value);
  if (!match) throw new Error(`"${value}" is not address:port`);
  const port = Number(match[2]);
  if (port < 1 || port > 65_535) throw new Error(`port ${port} of "${value}" is not 1-65535`);
  const host = match[1]!.replace(/^\[|\]$/g, '');
  if (['0/0', '*', '0.0.0.0', '::'].includes(host)) return { address: undefined, port };
  if (isIP(host) === 0) throw new Error(`"${host}" in "${value}" is not an IP address`);
  return { address: host, port };
}

/** "smarthost.example.com:587", "[192.0.2.1]:2525", "mx.example.com" (port 25) -> "host:port". */
export function pmtaRoute(value: string): string {
  const match = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?::(\d{1,5}))?$/.exec(value);
  if (!match) throw new Error(`"${value}" is not host or host:port`);
  // PowerMTA writes address literals in brackets, IPv4 too; the resources bracket IPv6 only.
  const host = /^\[(\d{1,3}(?:\.\d{1,3}){3})\]$/.exec(match[1]!)?.[1] ?? match[1]!;
  return `${host}:${match[2] ?? '25'}`;
}
