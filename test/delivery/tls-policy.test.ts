import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { createTestCa, startSinkGroup, type SinkMx, type TestCa } from '../fixtures/sink-mx.ts';
import { settle, startHarness, waitFor, type Harness } from './harness.ts';

let ca: TestCa;
let sinks: SinkMx[];
let harness: Harness;

// plain: no STARTTLS at all; good: STARTTLS with a certificate for its MX name;
// wrongName: STARTTLS with a certificate (same CA) for another name.
before(async () => {
  ca = createTestCa();
  sinks = await startSinkGroup([{}, { tls: ca.issue(['mx.good.test']) }, { tls: ca.issue(['someone-else.test']) }]);
  const [plain, good, wrongName] = sinks as [SinkMx, SinkMx, SinkMx];
  const zone: Record<string, { mx?: { preference: number; exchange: string }[]; a?: string[] }> = {};
  const route = (domain: string, mxName: string, address: string) => {
    zone[domain] = { mx: [{ preference: 10, exchange: mxName }] };
    zone[mxName] = { a: [address] };
  };
  route('plain-required.test', 'mx.plain.test', plain.address);
  route('plain-opportunistic.test', 'mx.plain.test', plain.address);
  route('good-opportunistic.test', 'mx.good.test', good.address);
  route('good-verify.test', 'mx.good.test', good.address);
  route('wrong-verify.test', 'mx.wrong.test', wrongName.address);
  route('wrong-required.test', 'mx.wrong.test', wrongName.address);
  harness = await startHarness({
    mxPort: plain.port,
    zone,
    trustedCa: ca.caCert,
    pool: {
      name: 'pool-tls',
      virtualMtas: [{ name: 'vmta-tls', hostname: 'tls.sender.test' }],
      domainDefaults: [
        { match: '*', tlsPolicy: 'opportunistic', retryAfter: ['1h'] },
        { match: 'plain-required.test', tlsPolicy: 'required' },
        { match: 'wrong-required.test', tlsPolicy: 'required' },
        { match: 'good-verify.test', tlsPolicy: 'verify' },
        { match: 'wrong-verify.test', tlsPolicy: 'verify' },
      ],
    },
  });
});

after(async () => {
  await harness?.close();
  await Promise.all((sinks ?? []).map((sink) => sink.close()));
  ca?.close();
});

/**
 * A TLS failure defers the destination queue as a whole, in memory (no spool record per
 * message): the engine's view of the recipient once it has been attempted.
 */
const attemptedRecipient = (id: string) => {
  const recipient = harness.engine.showMessage(id)?.recipients[0];
  return recipient?.attempts ? recipient : undefined;
};

test('required never sends in clear to an MX without STARTTLS: the recipient is deferred', async () => {
  const plain = sinks[0]!;
  const stored = await harness.submit({ to: ['a@plain-required.test'] });
  const state = await waitFor(() => attemptedRecipient(stored.id), 'a recorded attempt');
  assert.equal(state.status, 'pending');
  assert.match(state.lastResult ?? '', /TLS|STARTTLS/);
  await settle();
  assert.equal(plain.messages.some((message) => message.to.includes('a@plain-required.test')), false, 'nothing reached the plain-text sink');
  const metrics = await harness.metrics.registry.getSingleMetricAsString('vmta_outbound_connections_total');
  assert.match(metrics, /tls="failed"/);
});

test('opportunistic delivers in plain text when STARTTLS is not offered', async () => {
  const plain = sinks[0]!;
  await harness.submit({ to: ['b@plain-opportunistic.test'] });
  const received = await waitFor(() => plain.messages.find((message) => message.to.includes('b@plain-opportunistic.test')), 'plain delivery');
  assert.equal(received.secure, false);
});

test('opportunistic uses STARTTLS when offered, without checking the certificate chain', async () => {
  const good = sinks[1]!;
  const stored = await harness.submit({ to: ['c@good-opportunistic.test'] });
  const received = await waitFor(() => good.messages.find((message) => message.to.includes('c@good-opportunistic.test')), 'TLS delivery');
  assert.equal(received.secure, true);
  const record = await waitFor(async () => (await harness.accountingLines()).find((line) => line.queueId === stored.id), 'accounting');
  assert.match(String(record.tlsVersion), /^TLSv1\.[23]$/);
  assert.ok(record.tlsCipher);
});

test('verify delivers when the chain and the MX host name check out (SNI = MX name)', async () => {
  const good = sinks[1]!;
  await harness.submit({ to: ['d@good-verify.test'] });
  const received = await waitFor(() => good.messages.find((message) => message.to.includes('d@good-verify.test')), 'verified TLS delivery');
  assert.equal(received.secure, true);
  assert.ok(good.sessions.some((session) => session.servername === 'mx.good.test'));
});

test('verify refuses a certificate issued for another name, while required accepts it', async () => {
  const wrongName = sinks[2]!;
  const refused = await harness.submit({ to: ['e@wrong-verify.test'] });
  const state = await waitFor(() => attemptedRecipient(refused.id), 'a recorded attempt');
  assert.equal(state.status, 'pending');
  assert.match(state.lastResult ?? '', /TLS failure .*does not match certificate/);
  await harness.submit({ to: ['f@wrong-required.test'] });
  await waitFor(() => wrongName.messages.find((message) => message.to.includes('f@wrong-required.test')), 'required (unverified) TLS delivery');
  assert.equal(wrongName.messages.some((message) => message.to.includes('e@wrong-verify.test')), false);
});
