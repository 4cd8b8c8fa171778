// A TLS report as a mail message (RFC 8460 §5.3): multipart/report; report-type="tlsrpt" with a
// short human-readable part and the gzipped JSON as an application/tlsrpt+gzip attachment
// named by the report's file name, the TLS-Report-Domain and TLS-Report-Submitter header fields
// and the subject "Report Domain: ... Submitter: ... Report-ID: <...>". The relay then signs it
// like any message it accepts (DKIM, §3: reports by mail must be signed by the submitter).
import { randomBytes } from 'node:crypto';
import { TLSRPT_GZIP_MEDIA_TYPE, type TlsReport } from './tls-rpt-report.ts';

export interface ReportMailInput {
  from: string;
  to: string;
  policyDomain: string;
  submitter: string;
  report: TlsReport;
  date: Date;
}

/** Base64 in 76-character lines (RFC 2045 §6.8). */
function base64Lines(data: Buffer): string {
  return (data.toString('base64').match(/.{1,76}/g) ?? []).join('\r\n');
}

export function composeReportMail(input: ReportMailInput): Buffer {
  const { report, policyDomain, submitter } = input;
  const boundary = `tlsrpt-${randomBytes(12).toString('hex')}`;
  const range = report.json['date-range'] as { 'start-datetime': string; 'end-datetime': string };
  const lines = [
    `From: <${input.from}>`,
    `To: <${input.to}>`,
    `Date: ${input.date.toUTCString().replace('GMT', '+0000')}`,
    `Subject: Report Domain: ${policyDomain} Submitter: ${submitter} Report-ID: <${report.reportId}>`,
    `Message-ID: <${randomBytes(12).toString('hex')}.tlsrpt@${submitter}>`,
    `TLS-Report-Domain: ${policyDomain}`,
    `TLS-Report-Submitter: ${submitter}`,
    'MIME-Version: 1.0',
    `Content-Type: multipart/report; report-type="tlsrpt"; boundary="${boundary}"`,
    '',
    `--${boundary}`,
    'Content-Type: text/plain; charset=us-ascii',
    'Content-Transfer-Encoding: 7bit',
    '',
    `This is an aggregate TLS report (RFC 8460) from ${submitter} about mail sent to ${policyDomain}`,
    `from ${range['start-datetime']} to ${range['end-datetime']}. The report is attached as ${report.fileName}.`,
    '',
    `--${boundary}`,
    `Content-Type: ${TLSRPT_GZIP_MEDIA_TYPE}; name="${report.fileName}"`,
    `Content-Disposition: attachment; filename="${report.fileName}"`,
    'Content-Transfer-Encoding: base64',
    '',
    base64Lines(report.gzip),
    '',
    `--${boundary}--`,
    '',
  ];
  return Buffer.from(lines.join('\r\n'), 'latin1');
}
