// The TLSRPT policy record of a recipient domain (RFC 8460 §3): one TXT record at
// _smtp._tls.<domain> starting "v=TLSRPTv1;", whose rua= lists where reports go, as mailto: and
// https: URIs separated by commas. Records not starting with v=TLSRPTv1 are ignored; more than
// one that does means the domain has no usable policy. Other URI schemes are skipped, and at most
// MAX_DESTINATIONS are used (a record must not make the relay send a report a thousand times).
import { isIP } from 'node:net';

export type ReportDestination = { kind: 'mailto'; address: string } | { kind: 'https'; url: URL };

export type TlsRptRecord = { ok: true; destinations: ReportDestination[] } | { ok: false; reason: string };

export const MAX_DESTINATIONS = 10;
const VERSION = /^v=TLSRPTv1\s*(;|$)/;
const MAILBOX = /^[^\s@<>()",;:]+@[A-Za-z0-9](?:[-A-Za-z0-9]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[-A-Za-z0-9]*[A-Za-z0-9])?)+$/;

export function reportRecordName(domain: string): string {
  return `_smtp._tls.${domain.replace(/\.$/, '')}`;
}

function destination(uri: string): ReportDestination | undefined {
  if (/^mailto:/i.test(uri)) {
    let address: string;
    try {
      address = decodeURIComponent(uri.slice('mailto:'.length).split('?')[0]!);
    } catch {
      return undefined;
    }
    return MAILBOX.test(address) && !isIP(address.slice(address.lastIndexOf('@') + 1)) ? { kind: 'mailto', address } : undefined;
  }
  if (/^https:/i.test(uri)) {
    try {
      const url = new URL(uri);
      return url.username || url.password ? undefined : { kind: 'https', url };
    } catch {
      return undefined;
    }
  }
  return undefined;
}

/** Parse the TXT records found at _smtp._tls.<domain>. */
export function parseTlsRptRecords(records: readonly string[]): TlsRptRecord {
  const candidates = records.filter((record) => VERSION.test(record));
  if (candidates.length === 0) return { ok: false, reason: 'no v=TLSRPTv1 record' };
  if (candidates.length > 1) return { ok: false, reason: `${candidates.length} v=TLSRPTv1 records (exactly one is allowed)` };
  const fields = candidates[0]!.split(';').map((field) => field.trim()).filter(Boolean).slice(1);
  const rua = fields.find((field) => /^rua\s*=/i.test(field));
  if (!rua) return { ok: false, reason: 'the record has no rua= field' };
  const destinations = rua
    .slice(rua.indexOf('=') + 1)
    .split(',')
    .map((uri) => destination(uri.trim()))
    .filter((found): found is ReportDestination => found !== undefined)
    .slice(0, MAX_DESTINATIONS);
  return destinations.length > 0 ? { ok: true, destinations } : { ok: false, reason: 'rua= names no usable mailto: or https: URI' };
}
