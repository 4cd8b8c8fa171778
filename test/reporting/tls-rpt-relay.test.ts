// TLS-RPT through the real relay process, with DANE: a validating resolver (Unbound) over zones
// signed here (NSD), sink MX servers on loopback. Sessions to a DANE-EE host that matches, to a
// host whose TLSA record does not match and to an unsigned zone are counted; the relay is
// restarted; the admin trigger sends the reports to the rua of each _smtp._tls record: by HTTPS
// POST to a loopback server whose test CA the relay trusts by config, and by mail queued
// through the relay itself to a sink MX, DKIM-signed with the submitter's key (checked with
// mailauth's verifier). The counts are the sessions the sinks saw, before and after the restart.
import assert from 'node:assert/strict';
import { createHash, generateKeyPairSync, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { gunzipSync } from 'node:zlib';
import { after, before, describe, test } from 'node:test';
import { simpleParser } from 'mailparser';
import { dkimVerify } from 'mailauth/lib/dkim/verify.js';
import type { RuntimeConfigInput } from '../../mta/config/schema.ts';
import { dkimPublicKeyRecord } from '../../mta/signing/dkim-keys.ts';
import { dnssecToolsSkip, missingDnssecTools, startDnssecResolver } from '../fixtures/dnssec-resolver.ts';
import { freePort, loopbackRelayConfig, startRelayProcess, temporaryDirectory, writeRelayConfig, type RelayProcess } from '../fixtures/relay-process.ts';
import { loopbackAddresses, startSinkGroup, type SinkMx } from '../fixtures/sink-mx.ts';
import { sendMarkedMessage } from '../fixtures/smtp-clients.ts';
import { createTestCa, type TestCertificate } from '../fixtures/tls.ts';
import { startReportCollector, type ReportCollector } from '../fixtures/tlsrpt-collector.ts';
import { tlsReportErrors } from '../fixtures/tlsrpt-schema.ts';
import { waitFor } from '../delivery/harness.ts';

const missing = missingDnssecTools();
const TOKEN = 'tls-rpt-test-token';

function spkiSha256(pem: Buffer): string {
  return createHash('sha256').update(new X509Certificate(pem).publicKey.export({ type: 'spki', format: 'der' })).digest('hex');
}

type PolicyReport = { policy: Record<string, unknown>; summary: Record<string, number>; 'failure-details'?: Record<string, unknown>[] };

describe('TLS-RPT through a relay process', { skip: dnssecToolsSkip(missing) }, () => {
  const cleanups: (() => unknown)[] = [];
  const sinks: Record<string, SinkMx> = {};
  let relay: RelayProcess;
  let relayPort: number;
  let adminPort: number;
  let configDir: string;
  let collector: ReportCollector;
  let dkimRecord: string;

  before(async () => {
    assert.deepEqual(missing, [], 'CI installs nsd, unbound and ldnsutils (scripts/install-dnssec-tools.sh)');
    const ca = createTestCa('tls-rpt e2e CA');
    const selfSigned = createTestCa('mx.ee.test');
    cleanups.push(() => ca.cleanup(), () => selfSigned.cleanup());
    const selfSignedCert: TestCertificate = { certFile: selfSigned.caFile, keyFile: path.join(selfSigned.dir, 'ca.key'), cert: selfSigned.ca, key: readFileSync(path.join(selfSigned.dir, 'ca.key')) };
    const names = ['ee', 'mismatch', 'insecure', 'collector'] as const;
    const group = await startSinkGroup([{ tls: selfSignedCert }, { tls: ca.issue(['mx.mismatch.test']) }, { tls: ca.issue(['mx.insecure.test']) }, {}]);
    names.forEach((name, index) => (sinks[name] = group[index]!));
    cleanups.push(() => Promise.all(group.map((sink) => sink.close())));
    collector = await startReportCollector(loopbackAddresses(1)[0]!, ca.issue(['reports.collector.test']));
    cleanups.push(() => collector.close());
    const port = group[0]!.port;
    const rua = `_smtp._tls IN TXT "v=TLSRPTv1; rua=mailto:tlsrpt@collector.test,https://reports.collector.test:${collector.port}/v1/tlsrpt"`;
    const zone = (name: string, signed: boolean, tlsa?: string) => ({
      name: `${name}.test`,
      signed,
      records: ['@ IN MX 10 mx', `mx IN A ${sinks[name]!.address}`, rua, ...(tlsa ? [`_${port}._tcp.mx IN TLSA ${tlsa}`] : [])],
    });
    const resolver = await startDnssecResolver([
      zone('ee', true, `3 1 1 ${spkiSha256(selfSigned.ca)}`),
      zone('mismatch', true, `3 1 1 ${'00'.repeat(32)}`),
      zone('insecure', false),
      { name: 'collector.test', signed: false, records: ['@ IN MX 10 mx', `mx IN A ${sinks.collector!.address}`, `reports IN A ${collector.address}`] },
    ]);
    cleanups.push(() => resolver.close());

    const dir = await temporaryDirectory('vmta-tlsrpt-');
    cleanups.push(() => dir.remove());
    configDir = dir.path;
    await writeFile(path.join(configDir, 'admin-token'), `${TOKEN}\n`);
    await writeFile(path.join(configDir, 'ca.pem'), ca.ca);
    await mkdir(path.join(configDir, 'dkim'));
    const dkimKey = generateKeyPairSync('ed25519').privateKey;
    await writeFile(path.join(configDir, 'dkim', 'relay.test.pem'), dkimKey.export({ type: 'pkcs8', format: 'pem' }));
    dkimRecord = dkimPublicKeyRecord(dkimKey);
    relayPort = await freePort();
    adminPort = await freePort();
    const config: RuntimeConfigInput = loopbackRelayConfig(relayPort, adminPort, {
      pool: {
        name: 'pool-a',
        domainDefaults: [{ match: '*', tlsPolicy: 'dane', retryAfter: ['10m'] }],
        virtualMtas: [{ name: 'vmta-1', hostname: 'out1.relay.test' }],
        dkim: { keys: [{ domain: 'relay.test', selector: 'tlsrpt', algorithm: 'ed25519-sha256', keyFile: path.join(configDir, 'dkim', 'relay.test.pem') }] },
      },
      delivery: { resolvers: [resolver.server], dnssecResolvers: [resolver.server], mxPort: port },
      tlsReporting: { enabled: true, submitter: 'relay.test', contactInfo: 'tlsrpt@relay.test', https: { trustedCaFile: path.join(configDir, 'ca.pem'), allowPrivateAddresses: true } },
    });
    config.admin = { ...config.admin, tokenFile: path.join(configDir, 'admin-token') };
    await writeRelayConfig(configDir, config);
    relay = await startRelayProcess({ configDir, adminPort });
    cleanups.push(() => relay.kill('SIGKILL'));
  });

  after(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup();
  });

  const send = (to: string, marker: string) => sendMarkedMessage(relayPort, 'app@relay.test', to, marker);
  const delivered = (name: string, marker: string) => waitFor(() => sinks[name]!.messages.find((message) => message.body.toString().includes(marker)), `${marker} at ${name}.test`);

  test('reports by HTTPS and by signed mail count the sessions of DANE, TLSA-mismatch and no-policy domains across a restart', async () => {
    await send('user@ee.test', 'ee-before');
    await send('user@insecure.test', 'insecure-before');
    await send('user@mismatch.test', 'mismatch-before');
    await delivered('ee', 'ee-before');
    await delivered('insecure', 'insecure-before');
    await waitFor(() => sinks.mismatch!.connections > 0, 'a session with the TLSA-mismatch host');
    const eeBefore = sinks.ee!.connections;

    await relay.kill('SIGTERM');
    relay = await startRelayProcess({ configDir, adminPort });
    await send('user@ee.test', 'ee-after');
    await delivered('ee', 'ee-after');
    assert.ok(sinks.ee!.connections > eeBefore, 'a session after the restart');
    assert.equal(sinks.mismatch!.messages.length, 0, 'nothing sent to the host whose TLSA record does not match');

    const refused = await fetch(`${relay.adminUrl}/api/v1/tls-reports/send`, { method: 'POST' });
    assert.equal(refused.status, 401, 'the trigger needs the admin token');
    const response = await fetch(`${relay.adminUrl}/api/v1/tls-reports/send`, { method: 'POST', headers: { authorization: `Bearer ${TOKEN}` } });
    assert.equal(response.status, 200);
    const { reports } = (await response.json()) as { reports: { domain: string; destinations: { uri: string; ok: boolean; error?: string }[] }[] };
    const reported = Object.fromEntries(reports.map((run) => [run.domain, run.destinations.map((destination) => destination.ok)]));
    assert.deepEqual(reported, { 'ee.test': [true, true], 'insecure.test': [true, true], 'mismatch.test': [true, true] }, JSON.stringify(reports));

    assert.equal(collector.reports.length, 3);
    const byDomain = new Map<string, PolicyReport[]>();
    for (const received of collector.reports) {
      assert.equal(received.contentType, 'application/tlsrpt+gzip');
      assert.deepEqual(tlsReportErrors(received.report), []);
      const policies = received.report.policies as PolicyReport[];
      byDomain.set(policies[0]!.policy['policy-domain'] as string, policies);
    }
    const [ee] = byDomain.get('ee.test')!;
    assert.equal(ee!.policy['policy-type'], 'tlsa');
    assert.deepEqual(ee!.policy['mx-host'], ['mx.ee.test']);
    assert.deepEqual(ee!.summary, { 'total-successful-session-count': sinks.ee!.connections, 'total-failure-session-count': 0 }, 'every DANE-EE session, before and after the restart');
    const [mismatch] = byDomain.get('mismatch.test')!;
    assert.deepEqual(mismatch!.policy['policy-string'], [`3 1 1 ${'00'.repeat(32)}`]);
    assert.deepEqual(mismatch!.summary, { 'total-successful-session-count': 0, 'total-failure-session-count': sinks.mismatch!.connections });
    assert.equal(mismatch!['failure-details']![0]!['result-type'], 'tlsa-invalid');
    assert.equal(mismatch!['failure-details']![0]!['receiving-ip'], sinks.mismatch!.address);
    const [insecure] = byDomain.get('insecure.test')!;
    assert.equal(insecure!.policy['policy-type'], 'no-policy-found');
    assert.equal(insecure!.summary['total-successful-session-count'], sinks.insecure!.connections);

    const mails = await waitFor(() => (sinks.collector!.messages.length >= 3 ? sinks.collector!.messages : undefined), 'three mailed reports');
    for (const message of mails) {
      assert.deepEqual(message.to, ['tlsrpt@collector.test']);
      const parsed = await simpleParser(message.body);
      const domain = parsed.headers.get('tls-report-domain') as string;
      assert.equal(parsed.headers.get('tls-report-submitter'), 'relay.test');
      assert.match(parsed.subject ?? '', new RegExp(`^Report Domain: ${domain.replace('.', '\\.')} Submitter: relay\\.test Report-ID: <[^>]+>$`));
      const attachment = parsed.attachments[0]!;
      assert.equal(attachment.contentType, 'application/tlsrpt+gzip');
      const report = JSON.parse(gunzipSync(attachment.content).toString('utf8')) as Record<string, unknown>;
      assert.deepEqual(tlsReportErrors(report), []);
      assert.deepEqual(report, collector.reports.find((received) => received.report['report-id'] === report['report-id'])?.report, 'the same report by mail and by HTTPS');
      const verified = await dkimVerify(message.body, { resolver: async (name: string, type: string) => (type === 'TXT' && name === 'tlsrpt._domainkey.relay.test' ? [[dkimRecord]] : []) } as never);
      assert.deepEqual(verified.results.map((result) => [result.signingDomain, result.status.result]), [['relay.test', 'pass']], 'DKIM-signed by the submitter');
    }
  });
});
