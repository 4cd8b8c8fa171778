// One RFC 8460 report: the JSON of §4.4 for one policy domain and one reporting period, its
// report-id, its gzip form (application/tlsrpt+gzip) and its file name (§5.3:
// submitter!policy-domain!begin-timestamp!end-timestamp!unique-id.json.gz). Pure: no I/O.
// Each relay pod reports its own sessions under its own report-id (the instance name is part of
// it): RFC 8460 §4 lets a receiver get several reports per day from different sending MTAs, and
// a per-pod report needs no coordination between pods, so a pod that dies loses no one else's.
import { createHash } from 'node:crypto';
import { gzipSync } from 'node:zlib';
import type { PolicyCounts, ReportPeriod } from './tls-rpt-store.ts';

export const TLSRPT_GZIP_MEDIA_TYPE = 'application/tlsrpt+gzip';

export interface ReportIdentity {
  /** organization-name and the "sender" of the file name: the reporting organisation (a domain). */
  submitter: string;
  /** contact-info: an address or URL to ask about the report. */
  contactInfo: string;
  /** This pod's name, so pods of one pool never share a report-id. */
  instance: string;
}

export interface TlsReport {
  reportId: string;
  fileName: string;
  json: Record<string, unknown>;
  gzip: Buffer;
}

/** RFC 3339 without fractions: "2026-12-03T00:00:00Z". */
function dateTime(ms: number): string {
  return new Date(Math.floor(ms / 1000) * 1000).toISOString().replace('.000Z', 'Z');
}

function compactTime(ms: number): string {
  return dateTime(ms).replace(/[-:]/g, '');
}

function policyReport(domain: string, counts: PolicyCounts): Record<string, unknown> {
  return {
    policy: {
      'policy-type': counts.type,
      ...(counts.strings.length > 0 ? { 'policy-string': counts.strings } : {}),
      'policy-domain': domain,
      ...(counts.mxHost.length > 0 ? { 'mx-host': counts.mxHost } : {}),
    },
    summary: { 'total-successful-session-count': counts.success, 'total-failure-session-count': counts.failure },
    ...(counts.details.length > 0
      ? {
          'failure-details': counts.details.map((detail) => ({
            'result-type': detail.result,
            ...(detail.sendingIp ? { 'sending-mta-ip': detail.sendingIp } : {}),
            ...(detail.mxHost ? { 'receiving-mx-hostname': detail.mxHost } : {}),
            ...(detail.mxIp ? { 'receiving-ip': detail.mxIp } : {}),
            'failed-session-count': detail.count,
            ...(detail.reasonCode ? { 'failure-reason-code': detail.reasonCode } : {}),
          })),
        }
      : {}),
  };
}

export function buildReport(period: Pick<ReportPeriod, 'begin' | 'end'>, domain: string, policies: readonly PolicyCounts[], identity: ReportIdentity): TlsReport {
  // The period is [begin, end); the report's range ends on its last second (23:59:59Z for a day).
  const last = period.end - 1;
  const reportId = `${compactTime(period.begin)}.${identity.instance}.${domain}@${identity.submitter}`;
  const json = {
    'organization-name': identity.submitter,
    'date-range': { 'start-datetime': dateTime(period.begin), 'end-datetime': dateTime(last) },
    'contact-info': identity.contactInfo,
    'report-id': reportId,
    policies: policies.map((counts) => policyReport(domain, counts)),
  };
  const uniqueId = createHash('sha256').update(reportId).digest('hex').slice(0, 16);
  const fileName = `${identity.submitter}!${domain}!${Math.floor(period.begin / 1000)}!${Math.floor(last / 1000)}!${uniqueId}.json.gz`;
  return { reportId, fileName, json, gzip: gzipSync(JSON.stringify(json)) };
}
