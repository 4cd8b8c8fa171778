// The RFC 8460 report as built from counted sessions: generated classes of sessions (every
// policy type and result type, IPv4 and IPv6 peers, many MX hosts) give reports that validate
// against the §4.4 schema and whose counts are the sessions counted; the file name follows
// §5.3; the mailed form carries the §5.3 header fields and the gzipped report; the TLSRPT TXT
// record is parsed as §3 says.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import { test } from 'node:test';
import { simpleParser } from 'mailparser';
import { seededRandom } from '../../mta/config/seeded-random.ts';
import { composeReportMail } from '../../mta/reporting/tls-rpt-mail.ts';
import { MAX_DESTINATIONS, parseTlsRptRecords } from '../../mta/reporting/tls-rpt-record.ts';
import { buildReport } from '../../mta/reporting/tls-rpt-report.ts';
import { POLICY_TYPES, RESULT_TYPES, TlsRptStore, type PolicyKey } from '../../mta/reporting/tls-rpt-store.ts';
import { codeBlocks } from '../chart/markdown.ts';
import { tlsReportErrors } from '../fixtures/tlsrpt-schema.ts';

const DAY = 86_400_000;
const IDENTITY = { submitter: 'relay.sender.test', contactInfo: 'tlsrpt@sender.test', instance: 'pool-a-0' };

function pick<T>(random: () => number, items: readonly T[]): T {
  return items[Math.floor(random() * items.length)]!;
}

function policyFor(random: () => number, type: PolicyKey['type'], domain: string): PolicyKey {
  if (type === 'sts') return { type, strings: ['version: STSv1', 'mode: enforce', `mx: *.${domain}`, 'max_age: 86400'], mxHost: [`*.${domain}`] };
  if (type === 'tlsa') return { type, strings: [`3 1 1 ${Math.floor(random() * 2 ** 32).toString(16).padStart(64, '0')}`], mxHost: [`mx.${domain}`] };
  return { type, strings: [], mxHost: [] };
}

test('reports built from generated sessions validate against the RFC 8460 schema and count every session', () => {
  const random = seededRandom(8460);
  for (let round = 0; round < 40; round += 1) {
    const store = new TlsRptStore({ intervalMs: DAY });
    const day = Date.UTC(2026, 11, 1 + (round % 28));
    const expected = new Map<string, { success: number; failure: number }>();
    const domains = Array.from({ length: 1 + Math.floor(random() * 4) }, (_, index) => `d${round}-${index}.example`);
    const sessions = 1 + Math.floor(random() * 300);
    for (let session = 0; session < sessions; session += 1) {
      const domain = pick(random, domains);
      const policy = policyFor(random, pick(random, POLICY_TYPES), domain);
      const ok = random() < 0.6;
      const v6 = random() < 0.5;
      const mxIp = v6 ? `2001:db8::${Math.floor(random() * 0xffff).toString(16)}` : `192.0.2.${Math.floor(random() * 254) + 1}`;
      store.record(
        domain,
        policy,
        ok ? { ok } : { ok, result: pick(random, RESULT_TYPES), sendingIp: v6 ? '2001:db8::25' : '198.51.100.25', mxHost: `mx${Math.floor(random() * 3)}.${domain}`, mxIp, reasonCode: 'generated' },
        day + Math.floor(random() * DAY),
      );
      const counts = expected.get(domain) ?? { success: 0, failure: 0 };
      counts[ok ? 'success' : 'failure'] += 1;
      expected.set(domain, counts);
    }
    const [period] = store.ended(day + DAY);
    assert.ok(period, 'the day has ended');
    assert.equal(period.begin, day);
    for (const [domain, counts] of expected) {
      const report = buildReport(period, domain, period.domains[domain]!, IDENTITY);
      assert.deepEqual(tlsReportErrors(report.json), [], `${domain}: ${JSON.stringify(report.json).slice(0, 300)}`);
      const policies = report.json.policies as { summary: Record<string, number>; 'failure-details'?: { 'failed-session-count': number }[] }[];
      assert.equal(policies.reduce((sum, policy) => sum + policy.summary['total-successful-session-count']!, 0), counts.success, `${domain} successes`);
      assert.equal(policies.reduce((sum, policy) => sum + policy.summary['total-failure-session-count']!, 0), counts.failure, `${domain} failures`);
      const detailed = policies.flatMap((policy) => policy['failure-details'] ?? []).reduce((sum, detail) => sum + detail['failed-session-count'], 0);
      assert.equal(detailed, counts.failure, `${domain}: every failure is in a failure-details row`);
      assert.deepEqual(JSON.parse(gunzipSync(report.gzip).toString('utf8')), report.json, 'the gzip form is the JSON');
      assert.deepEqual(report.json['date-range'], { 'start-datetime': new Date(day).toISOString().replace('.000', ''), 'end-datetime': new Date(day + DAY - 1000).toISOString().replace('.000', '') });
    }
  }
});

test('the schema accepts the RFC 8460 §4.5 example and refuses reports that break it', () => {
  const example = {
    'organization-name': 'Company-X',
    'date-range': { 'start-datetime': '2016-04-01T00:00:00Z', 'end-datetime': '2016-04-01T23:59:59Z' },
    'contact-info': 'sts-reporting@company-x.example',
    'report-id': '5065427c-23d3-47ca-b6e0-946ea0e8c4be',
    policies: [
      {
        policy: { 'policy-type': 'sts', 'policy-string': ['version: STSv1', 'mode: testing', 'mx: *.mail.company-y.example', 'max_age: 86400'], 'policy-domain': 'company-y.example', 'mx-host': '*.mail.company-y.example' },
        summary: { 'total-successful-session-count': 5326, 'total-failure-session-count': 303 },
        'failure-details': [
          { 'result-type': 'certificate-expired', 'sending-mta-ip': '2001:db8:abcd:0012::1', 'receiving-mx-hostname': 'mx1.mail.company-y.example', 'failed-session-count': 100 },
          { 'result-type': 'starttls-not-supported', 'sending-mta-ip': '2001:db8:abcd:0013::1', 'receiving-mx-hostname': 'mx2.mail.company-y.example', 'receiving-ip': '203.0.113.56', 'failed-session-count': 200, 'additional-information': 'https://reports.company-x.example/report_info?id=5065427c-23d3#StarttlsNotSupported' },
          { 'result-type': 'validation-failure', 'sending-mta-ip': '198.51.100.62', 'receiving-ip': '203.0.113.58', 'receiving-mx-hostname': 'mx-backup.mail.company-y.example', 'failed-session-count': 3, 'failure-error-code': 'X509_V_ERR_PROXY_PATH_LENGTH_EXCEEDED' },
        ],
      },
    ],
  };
  assert.deepEqual(tlsReportErrors(example), []);
  const broken: [string, (report: typeof example) => void][] = [
    ['no report-id', (report) => delete (report as Partial<typeof example>)['report-id']],
    ['an unknown policy type', (report) => ((report.policies[0]!.policy as Record<string, unknown>)['policy-type'] = 'dane')],
    ['an unknown result type', (report) => ((report.policies[0]!['failure-details'][0] as Record<string, unknown>)['result-type'] = 'tls-broken')],
    ['a negative count', (report) => (report.policies[0]!.summary['total-failure-session-count'] = -1)],
    ['a date that is not RFC 3339', (report) => (report['date-range']['start-datetime'] = '1 April 2016')],
    ['a receiving-ip that is not an address', (report) => ((report.policies[0]!['failure-details'][1] as Record<string, unknown>)['receiving-ip'] = 'mx2')],
  ];
  for (const [what, change] of broken) {
    const report = structuredClone(example);
    change(report);
    assert.notDeepEqual(tlsReportErrors(report), [], what);
  }
});

test('the file name is submitter!policy-domain!begin!end!unique-id.json.gz (RFC 8460 §5.3), unique per pod', () => {
  const period = { begin: Date.UTC(2026, 11, 2), end: Date.UTC(2026, 11, 3) };
  const counts = [{ type: 'no-policy-found' as const, strings: [], mxHost: [], success: 1, failure: 0, details: [] }];
  const first = buildReport(period, 'example.com', counts, IDENTITY);
  assert.equal(first.fileName.replace(/![0-9a-f]{16}\.json\.gz$/, ''), `relay.sender.test!example.com!${period.begin / 1000}!${period.end / 1000 - 1}`);
  assert.match(first.fileName, /^[^!]+![^!]+!\d+!\d+![A-Za-z0-9]+\.json\.gz$/);
  const otherPod = buildReport(period, 'example.com', counts, { ...IDENTITY, instance: 'pool-a-1' });
  assert.notEqual(otherPod.reportId, first.reportId);
  assert.notEqual(otherPod.fileName, first.fileName);
  assert.equal(buildReport(period, 'example.com', counts, IDENTITY).reportId, first.reportId, 'a retry sends the same report-id');
});

test('the mailed report is multipart/report; report-type="tlsrpt" with the RFC 8460 §5.3 header fields and the gzipped report', async () => {
  const period = { begin: Date.UTC(2026, 11, 2), end: Date.UTC(2026, 11, 3) };
  const report = buildReport(period, 'example.com', [{ type: 'sts', strings: ['version: STSv1', 'mode: enforce', 'mx: mx.example.com', 'max_age: 86400'], mxHost: ['mx.example.com'], success: 7, failure: 2, details: [{ result: 'starttls-not-supported', mxHost: 'mx.example.com', mxIp: '192.0.2.1', count: 2 }] }], IDENTITY);
  const raw = composeReportMail({ from: 'noreply-tlsrpt@relay.sender.test', to: 'tlsrpt@example.com', policyDomain: 'example.com', submitter: IDENTITY.submitter, report, date: new Date(period.end) });
  assert.doesNotMatch(raw.toString('latin1'), /(?<!\r)\n/, 'CRLF line ends only');
  const mail = await simpleParser(raw);
  assert.equal(mail.subject, `Report Domain: example.com Submitter: relay.sender.test Report-ID: <${report.reportId}>`);
  assert.equal(mail.headers.get('tls-report-domain'), 'example.com');
  assert.equal(mail.headers.get('tls-report-submitter'), 'relay.sender.test');
  const contentType = mail.headers.get('content-type') as { value: string; params: Record<string, string> };
  assert.equal(contentType.value, 'multipart/report');
  assert.equal(contentType.params['report-type'], 'tlsrpt');
  assert.equal(mail.attachments.length, 1);
  const [attachment] = mail.attachments;
  assert.equal(attachment!.contentType, 'application/tlsrpt+gzip');
  assert.equal(attachment!.filename, report.fileName);
  assert.deepEqual(JSON.parse(gunzipSync(attachment!.content).toString('utf8')), report.json);
});

test('the _smtp._tls record: one v=TLSRPTv1 record, rua= with mailto: and https: URIs', () => {
  const good = parseTlsRptRecords(['v=TLSRPTv1; rua=mailto:tls@example.com,https://reports.example.com/v1/tlsrpt']);
  assert.deepEqual(good.ok && good.destinations.map((destination) => (destination.kind === 'mailto' ? destination.address : destination.url.href)), ['tls@example.com', 'https://reports.example.com/v1/tlsrpt']);
  const spaced = parseTlsRptRecords(['v=spf1 -all', 'v=TLSRPTv1 ;  rua = mailto:a%2Bb@example.com?subject=x , ftp://x.example ; ext=1']);
  assert.deepEqual(spaced.ok && spaced.destinations, [{ kind: 'mailto', address: 'a+b@example.com' }], 'other records, spaces, percent-encoding and other schemes');
  const many = parseTlsRptRecords([`v=TLSRPTv1; rua=${Array.from({ length: 50 }, (_, index) => `mailto:r${index}@example.com`).join(',')}`]);
  assert.equal(many.ok && many.destinations.length, MAX_DESTINATIONS, 'a record cannot make the relay send one report fifty times');
  for (const [records, reason] of [
    [[], /no v=TLSRPTv1 record/],
    [['v=TLSRPTv1; rua=mailto:a@example.com', 'v=TLSRPTv1; rua=mailto:b@example.com'], /2 v=TLSRPTv1 records/],
    [['v=TLSRPTv1;'], /no rua= field/],
    [['v=TLSRPTv1; rua=http://insecure.example/, mailto:not-an-address, https://user:pw@x.example/, mailto:a@[127.0.0.1], mailto:%E0%A4%A'], /no usable/],
    [['v=TLSRPTv10; rua=mailto:a@example.com'], /no v=TLSRPTv1 record/],
  ] as const) {
    const parsed = parseTlsRptRecords(records);
    assert.equal(parsed.ok, false, JSON.stringify(records));
    assert.match(!parsed.ok ? parsed.reason : '', reason);
  }
});

test('the sample report of docs/tls-rpt.md is valid and its file name is the one buildReport gives its period', () => {
  const page = readFileSync(new URL('../../docs/tls-rpt.md', import.meta.url), 'utf8');
  const [block] = codeBlocks(page).filter((candidate) => candidate.language === 'json');
  const sample = JSON.parse(block!.body) as { 'date-range': Record<string, string>; 'report-id': string; policies: { policy: { 'policy-domain': string } }[] };
  assert.deepEqual(tlsReportErrors(sample), []);
  const begin = Date.parse(sample['date-range']['start-datetime']!);
  const end = Date.parse(sample['date-range']['end-datetime']!) + 1000;
  const domain = sample.policies[0]!.policy['policy-domain'];
  const built = buildReport({ begin, end }, domain, [], { submitter: 'relay.example.com', contactInfo: 'tlsrpt@example.com', instance: 'pool-a-0' });
  assert.equal(built.reportId, sample['report-id']);
  assert.ok(page.includes(`File name \`${built.fileName}\``), built.fileName);
});
