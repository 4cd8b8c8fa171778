// TLS-RPT for MTA-STS and no-policy domains, with the real delivery engine: an MTA-STS HTTPS
// server, sink MX servers on loopback (one with STARTTLS, one without), a real DNS server with
// the _smtp._tls records, and an HTTPS collector whose certificate comes from a test CA the
// reporter is given. The counts in the reports are the sessions the sinks saw: successes over
// verified STARTTLS under an enforce policy, starttls-not-supported failures where STARTTLS
// is not offered; a policy that cannot be fetched, is invalid or is served with a certificate
// for another name is an sts-policy-fetch-error, sts-policy-invalid or sts-webpki-invalid; a
// domain without a TLSRPT record gets no report; a rua on a loopback address is refused unless
// private addresses are allowed.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { pino } from 'pino';
import { RuntimeConfig } from '../../mta/config/schema.ts';
import { systemClock } from '../../mta/delivery/clock.ts';
import { MxResolver } from '../../mta/delivery/mx-resolver.ts';
import { TlsReporter } from '../../mta/reporting/tls-rpt-reporter.ts';
import { TlsSessionRecorder } from '../../mta/reporting/tls-rpt-sessions.ts';
import { TlsRptStore } from '../../mta/reporting/tls-rpt-store.ts';
import { startMtaStsServer, type MtaStsServer } from '../fixtures/mta-sts-server.ts';
import { createTestCa, loopbackAddresses, startSinkGroup, type SinkMx, type TestCa } from '../fixtures/sink-mx.ts';
import { startReportCollector, type ReportCollector } from '../fixtures/tlsrpt-collector.ts';
import { tlsReportErrors } from '../fixtures/tlsrpt-schema.ts';
import { startHarness, waitFor, type Harness } from '../delivery/harness.ts';

let ca: TestCa;
let sinks: SinkMx[];
let sts: MtaStsServer;
let collector: ReportCollector;
let harness: Harness;
let store: TlsRptStore;
const settings = (allowPrivateAddresses: boolean) =>
  RuntimeConfig.shape.tlsReporting.parse({ enabled: true, submitter: 'relay.sender.test', contactInfo: 'tlsrpt@sender.test', https: { allowPrivateAddresses } });
let allowPrivate = true;
let reporter: TlsReporter;

before(async () => {
  ca = createTestCa();
  sinks = await startSinkGroup([{ tls: ca.issue(['mx.secure.test']) }, {}, { tls: ca.issue(['mx.nopolicy.test']) }]);
  const [secure, plain, other] = sinks as [SinkMx, SinkMx, SinkMx];
  const [stsAddress, collectorAddress] = loopbackAddresses(2) as [string, string];
  const policy = (mx: string) => `version: STSv1\nmode: enforce\nmx: ${mx}\nmax_age: 86400\n`;
  sts = await startMtaStsServer({
    address: stsAddress,
    certificate: ca.issue(['mta-sts.secure.test', 'mta-sts.plain.test', 'mta-sts.invalid.test', 'mta-sts.unfetched.test']),
    policies: { 'secure.test': policy('mx.secure.test'), 'plain.test': policy('mx.plain.test'), 'invalid.test': 'version: STSv1\nmode: strict\nmx: mx.nopolicy.test\nmax_age: 86400\n', 'webpki.test': policy('mx.nopolicy.test') },
  });
  collector = await startReportCollector(collectorAddress, ca.issue(['reports.collector.test']));
  const rua = { txt: [`v=TLSRPTv1; rua=https://reports.collector.test:${collector.port}/v1/tlsrpt`] };
  store = new TlsRptStore({ intervalMs: 86_400_000 });
  harness = await startHarness({
    mxPort: secure.port,
    trustedCa: ca.caCert,
    mtaStsFetch: { connectAddress: sts.address, port: sts.port, ca: ca.caCert },
    tlsSessions: new TlsSessionRecorder(store, () => Date.now()),
    zone: {
      'secure.test': { mx: [{ preference: 10, exchange: 'mx.secure.test' }] },
      '_mta-sts.secure.test': { txt: ['v=STSv1; id=1'] },
      '_smtp._tls.secure.test': rua,
      'plain.test': { mx: [{ preference: 10, exchange: 'mx.plain.test' }] },
      '_mta-sts.plain.test': { txt: ['v=STSv1; id=1'] },
      '_smtp._tls.plain.test': rua,
      'nopolicy.test': { mx: [{ preference: 10, exchange: 'mx.nopolicy.test' }] },
      ...Object.fromEntries(
        ['unfetched', 'invalid', 'webpki'].flatMap((name) => [
          [`${name}.test`, { mx: [{ preference: 10, exchange: 'mx.nopolicy.test' }] }],
          [`_mta-sts.${name}.test`, { txt: ['v=STSv1; id=1'] }],
          [`_smtp._tls.${name}.test`, rua],
        ]),
      ),
      'mx.secure.test': { a: [secure.address] },
      'mx.nopolicy.test': { a: [other.address] },
      'mx.plain.test': { a: [plain.address] },
      'reports.collector.test': { a: [collector.address] },
    },
    pool: { name: 'pool-rpt', virtualMtas: [{ name: 'vmta-rpt', hostname: 'rpt.sender.test' }], domainDefaults: [{ match: '*', tlsPolicy: 'opportunistic', mtaSts: true, retryAfter: ['1h'] }] },
  });
  const resolver = new MxResolver({ servers: [harness.dns.server], clock: systemClock });
  reporter = new TlsReporter({
    store,
    settings: () => settings(allowPrivate),
    instance: 'test-pod',
    resolveTxt: (name) => resolver.resolveTxt(name),
    resolveHost: (host) => resolver.resolveHost(host),
    submitMail: async () => assert.fail('no mailto: rua in this test'),
    trustedCa: () => ca.caCert,
    now: () => Date.now(),
    logger: pino({ level: 'silent' }),
  });
});

after(async () => {
  await reporter?.stop();
  await harness?.close();
  await Promise.all([sts?.close(), collector?.close(), ...(sinks ?? []).map((sink) => sink.close())]);
  ca?.close();
});

test('reports over HTTPS count the STARTTLS successes, the starttls-not-supported failures the sinks saw and the MTA-STS policies not had', async () => {
  const [secure, plain, other] = sinks as [SinkMx, SinkMx, SinkMx];
  for (let index = 0; index < 3; index += 1) {
    await harness.submit({ to: [`r${index}@secure.test`] });
    await waitFor(() => secure.messages.some((message) => message.to.includes(`r${index}@secure.test`)), `delivery ${index} to secure.test`);
  }
  await harness.submit({ to: ['n@nopolicy.test'] });
  await waitFor(() => other.messages.some((message) => message.to.includes('n@nopolicy.test')), 'delivery to nopolicy.test');
  for (const name of ['unfetched', 'invalid', 'webpki']) {
    await harness.submit({ to: [`s@${name}.test`] });
    await waitFor(() => other.messages.some((message) => message.to.includes(`s@${name}.test`)), `delivery to ${name}.test without its policy`);
  }
  const deferred = await harness.submit({ to: ['p@plain.test'] });
  await waitFor(() => harness.engine.showMessage(deferred.id)?.recipients[0]?.attempts, 'the deferral of plain.test');
  assert.equal(plain.messages.length, 0, 'nothing went in clear to the MX without STARTTLS');

  allowPrivate = false;
  const refused = await reporter.run(true);
  assert.equal(refused.find((run) => run.domain === 'nopolicy.test')?.skipped, '_smtp._tls.nopolicy.test: no v=TLSRPTv1 record', 'a domain without a record gets no report');
  const posted = refused.filter((run) => !run.skipped);
  assert.equal(posted.length, 5);
  assert.ok(posted.every((run) => run.destinations.every((destination) => !destination.ok && /private or loopback addresses/.test(destination.error ?? ''))), JSON.stringify(refused));
  assert.equal(collector.reports.length, 0, 'a rua on a loopback address is refused by default');
  allowPrivate = true;
  assert.deepEqual(await reporter.run(false), [], 'a failed report waits before it is tried again');
  const runs = await reporter.run(true);
  assert.deepEqual(runs.map((run) => [run.domain, run.destinations.map((destination) => destination.ok)]).sort(), [
    ['invalid.test', [true]],
    ['plain.test', [true]],
    ['secure.test', [true]],
    ['unfetched.test', [true]],
    ['webpki.test', [true]],
  ], 'an admin request tries the refused reports at once');

  assert.equal(collector.reports.length, 5);
  for (const received of collector.reports) {
    assert.equal(received.contentType, 'application/tlsrpt+gzip');
    assert.equal(received.path, '/v1/tlsrpt');
    assert.deepEqual(tlsReportErrors(received.report), []);
  }
  const byDomain = (domain: string) => {
    const report = collector.reports.find((received) => (received.report.policies as { policy: Record<string, unknown> }[])[0]!.policy['policy-domain'] === domain)!.report;
    return (report.policies as Record<string, any>[])[0]!;
  };
  const securePolicy = byDomain('secure.test');
  assert.deepEqual(securePolicy.policy, { 'policy-type': 'sts', 'policy-string': ['version: STSv1', 'mode: enforce', 'mx: mx.secure.test', 'max_age: 86400'], 'policy-domain': 'secure.test', 'mx-host': ['mx.secure.test'] });
  const secureSessions = secure.sessions.filter((session) => session.secure).length;
  assert.equal(secureSessions, secure.connections, 'every session of mx.secure.test was over TLS');
  assert.deepEqual(securePolicy.summary, { 'total-successful-session-count': secureSessions, 'total-failure-session-count': 0 }, 'one success per TLS session of secure.test');
  const plainPolicy = byDomain('plain.test');
  assert.deepEqual(plainPolicy.summary, { 'total-successful-session-count': 0, 'total-failure-session-count': plain.connections });
  assert.equal(plainPolicy['failure-details'][0]['result-type'], 'starttls-not-supported');
  assert.equal(plainPolicy['failure-details'][0]['receiving-mx-hostname'], 'mx.plain.test');
  assert.equal(plainPolicy['failure-details'][0]['receiving-ip'], plain.address);
  assert.ok(secureSessions >= 1 && plain.connections >= 1);
  for (const [name, result, reason] of [
    ['unfetched', 'sts-policy-fetch-error', /HTTP 404/],
    ['invalid', 'sts-policy-invalid', /mode/i],
    ['webpki', 'sts-webpki-invalid', /mta-sts\.webpki\.test/],
  ] as const) {
    const failed = byDomain(`${name}.test`);
    assert.deepEqual(failed.policy, { 'policy-type': 'sts', 'policy-domain': `${name}.test` }, `${name}: the policy it could not get`);
    assert.deepEqual(failed.summary, { 'total-successful-session-count': 0, 'total-failure-session-count': 1 }, `${name}: the one delivery, not also counted as a success`);
    assert.equal(failed['failure-details'][0]['result-type'], result);
    assert.match(failed['failure-details'][0]['failure-reason-code'], reason);
  }
  assert.deepEqual(store.periods(), [], 'reported counts are forgotten');
});
