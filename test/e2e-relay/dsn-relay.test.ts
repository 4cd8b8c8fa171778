// DSN as clients ask for it (RFC 3461) and delayed DSNs, through the real relay process: Python's
// smtplib submits with RET, ENVID and per-recipient NOTIFY and ORCPT; a sink MX that advertises
// DSN sees the parameters passed on; a sink that does not makes the relay send a "relayed" DSN
// to the sender for NOTIFY=SUCCESS; failures are reported unless NOTIFY leaves FAILURE out
// (NEVER), with the whole message under RET=FULL; a recipient still queued after
// delayWarningAfter gets one "delayed" DSN, also across a restart and when the whole queue is
// deferred (connections refused). The DSNs arrive at the
// sender's own MX and are parsed with mailparser, field by field (RFC 3464).
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { parseDsn, smtplibSubmitWithDsn, type ParsedDsn } from '../fixtures/dsn-client.ts';
import { startDnsServer } from '../fixtures/dns-server.ts';
import { baseRelayConfig, freePort, startRelayProcess, temporaryDirectory, writeRelayConfig, type RelayProcess } from '../fixtures/relay-process.ts';
import { loopbackAddresses, startSinkGroup, type SinkMx } from '../fixtures/sink-mx.ts';
import { waitForRelay } from '../fixtures/wait-for-relay.ts';

let relay: RelayProcess;
let dir: string;
let adminPort: number;
let port: number;
let dsnMx: SinkMx;
let plainMx: SinkMx;
let senderMx: SinkMx;
let slowMx: SinkMx;
const cleanups: (() => Promise<unknown> | void)[] = [];

before(async () => {
  [dsnMx, plainMx, senderMx, slowMx] = (await startSinkGroup([
    { dsn: true },
    { rcptReplies: { 'never@plain.test': '550 5.1.1 No such user', 'fail@plain.test': '550 5.1.1 No such user', 'full@plain.test': '550 5.1.1 No such user' } },
    {},
    { replyFor: (stage) => (stage === 'rcpt' ? '451 4.2.1 Mailbox busy, try later' : undefined) },
  ])) as [SinkMx, SinkMx, SinkMx, SinkMx];
  cleanups.push(() => Promise.all([dsnMx, plainMx, senderMx, slowMx].map((sink) => sink.close())));
  const dns = await startDnsServer({
    'dsn.test': { mx: [{ preference: 10, exchange: 'mx.dsn.test' }] },
    'mx.dsn.test': { a: [dsnMx.address] },
    'plain.test': { mx: [{ preference: 10, exchange: 'mx.plain.test' }] },
    'mx.plain.test': { a: [plainMx.address] },
    'example.com': { mx: [{ preference: 10, exchange: 'mx.example.com' }] },
    'mx.example.com': { a: [senderMx.address] },
    'slow.test': { mx: [{ preference: 10, exchange: 'mx.slow.test' }] },
    'mx.slow.test': { a: [slowMx.address] },
    // Nothing listens there: every connection is refused, the queue is deferred as a whole.
    'down.test': { mx: [{ preference: 10, exchange: 'mx.down.test' }] },
    'mx.down.test': { a: [loopbackAddresses(1)[0]!] },
  });
  cleanups.push(() => dns.close());
  const directory = await temporaryDirectory('vmta-dsn-');
  cleanups.push(directory.remove);
  dir = directory.path;
  port = await freePort();
  adminPort = await freePort();
  await writeRelayConfig(dir, baseRelayConfig({
    hostname: 'relay.dsn.test',
    pool: { name: 'pool-a', domainDefaults: [{ match: '*', tlsPolicy: 'none', retryAfter: ['1s'], bounceAfter: '10m' }], virtualMtas: [{ name: 'vmta-1', hostname: 'out.dsn.test' }] },
    listeners: [{ name: 'relay', address: '127.0.0.1', port, relayPolicy: 'loopback', auth: { mechanisms: [] } }],
    relayPolicies: [{ name: 'loopback', allowedCidrs: ['127.0.0.0/8'] }],
    admin: { address: '127.0.0.1', port: adminPort },
    delivery: { resolvers: [dns.server], mxPort: dsnMx.port, delayWarningAfter: '2s' },
  }));
  relay = await startRelayProcess({ configDir: dir, adminPort });
  cleanups.push(() => relay.kill('SIGKILL'));
});

after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

function waitFor<T>(what: string, probe: () => T | undefined | Promise<T | undefined>, timeoutMs = 30_000): Promise<T> {
  return waitForRelay(what, probe, [relay], timeoutMs);
}

const message = (marker: string) => `From: app@example.com\r\nSubject: dsn ${marker}\r\nMessage-ID: <${marker}@example.com>\r\n\r\nbody of ${marker}\r\n`;

/** DSNs that reached the sender's MX about the message with this marker. */
async function dsnsAbout(marker: string): Promise<ParsedDsn[]> {
  const raw = senderMx.messages.filter((received) => received.from === '' && received.body.includes(marker));
  return Promise.all(raw.map((received) => parseDsn(received.body)));
}

async function submit(recipients: { address: string; options: string[] }[], mailOptions: string[], marker: string): Promise<void> {
  const answer = await smtplibSubmitWithDsn({ port, from: 'app@example.com', mailOptions, recipients, message: message(marker) });
  assert.match(answer, /^OK 250 /, answer);
}

test('a next hop that advertises DSN gets RET, ENVID and each recipient\'s NOTIFY and ORCPT (ORCPT added when the client gave none), and the sender gets no DSN from the relay', async () => {
  const marker = `pass-${Date.now()}`;
  await submit([
    { address: 'first@dsn.test', options: ['NOTIFY=SUCCESS,FAILURE', 'ORCPT=rfc822;"orig+20first"@dsn.test'] },
    { address: 'second@dsn.test', options: [] },
    { address: 'third@dsn.test', options: ['NOTIFY=NEVER'] },
  ], ['RET=HDRS', `ENVID=env+20${marker}`], marker);
  const received = await waitFor('the DSN sink to receive it', () => dsnMx.messages.find((entry) => entry.body.includes(marker)));
  assert.equal(received.mailParams.RET, 'HDRS');
  // The sink decodes xtext, as the relay does: a space ("+20") arrives whole only if it was passed on encoded.
  assert.equal(received.mailParams.ENVID, `env ${marker}`);
  assert.deepEqual(received.rcptParams?.['first@dsn.test'], { NOTIFY: 'SUCCESS,FAILURE', ORCPT: 'rfc822;"orig first"@dsn.test' });
  assert.deepEqual(received.rcptParams?.['second@dsn.test'], { ORCPT: 'rfc822;second@dsn.test' });
  assert.deepEqual(received.rcptParams?.['third@dsn.test'], { NOTIFY: 'NEVER', ORCPT: 'rfc822;third@dsn.test' });
  await new Promise((resolve) => setTimeout(resolve, 1500));
  assert.deepEqual(await dsnsAbout(marker), [], 'the next hop reports success itself');
});

test('a next hop without DSN: NOTIFY=SUCCESS gets a "relayed" DSN with ENVID and ORCPT in its fields; NOTIFY=FAILURE and no NOTIFY get none for a delivery', async () => {
  const marker = `relayed-${Date.now()}`;
  await submit([
    { address: 'success@plain.test', options: ['NOTIFY=SUCCESS', 'ORCPT=rfc822;Success+40Original.example'] },
    { address: 'quiet@plain.test', options: ['NOTIFY=FAILURE'] },
    { address: 'default@plain.test', options: [] },
  ], [`ENVID=${marker}`], marker);
  await waitFor('the plain sink to receive it', () => plainMx.messages.find((entry) => entry.body.includes(marker)));
  const [dsn, ...others] = await waitFor('the relayed DSN', async () => ((await dsnsAbout(marker)).length > 0 ? dsnsAbout(marker) : undefined));
  await new Promise((resolve) => setTimeout(resolve, 1000));
  assert.equal(others.length + (await dsnsAbout(marker)).length - 1, 0, 'one DSN, for the one recipient that asked');
  assert.equal(dsn!.reportType, 'delivery-status');
  assert.equal(dsn!.perMessage['original-envelope-id'], marker);
  assert.equal(dsn!.perMessage['reporting-mta'], 'dns; relay.dsn.test');
  assert.ok(!Number.isNaN(Date.parse(dsn!.perMessage['arrival-date']!)), dsn!.perMessage['arrival-date']);
  assert.equal(dsn!.recipients.length, 1);
  const [recipient] = dsn!.recipients;
  assert.equal(recipient!['action'], 'relayed');
  assert.equal(recipient!['final-recipient'], 'rfc822; success@plain.test');
  assert.equal(recipient!['original-recipient'], 'rfc822;Success@Original.example');
  assert.match(recipient!['status']!, /^2\.\d+\.\d+$/);
  assert.equal(recipient!['remote-mta'], 'dns; mx.plain.test');
  assert.equal(dsn!.returnedType, 'text/rfc822-headers');
  assert.doesNotMatch(dsn!.returned, new RegExp(`body of ${marker}`));
});

test('failures: NOTIFY=NEVER gets no DSN, NOTIFY=FAILURE does; RET=FULL returns the whole message, RET=HDRS only its headers', async () => {
  for (const ret of ['FULL', 'HDRS'] as const) {
    const marker = `failed-${ret}-${Date.now()}`;
    await submit([
      { address: 'never@plain.test', options: ['NOTIFY=NEVER'] },
      { address: 'fail@plain.test', options: ['NOTIFY=FAILURE', 'ORCPT=rfc822;fail@plain.test'] },
    ], [`RET=${ret}`, `ENVID=${marker}`], marker);
    const [dsn] = await waitFor(`the ${ret} failure DSN`, async () => ((await dsnsAbout(marker)).length > 0 ? dsnsAbout(marker) : undefined));
    await new Promise((resolve) => setTimeout(resolve, 1000));
    assert.equal((await dsnsAbout(marker)).length, 1);
    assert.deepEqual(dsn!.recipients.map((fields) => fields['final-recipient']), ['rfc822; fail@plain.test'], 'never@ asked for no DSN');
    assert.equal(dsn!.recipients[0]!['action'], 'failed');
    assert.equal(dsn!.recipients[0]!['status'], '5.1.1');
    assert.match(dsn!.recipients[0]!['diagnostic-code']!, /^smtp; 550 5\.1\.1 No such user/);
    assert.equal(dsn!.perMessage['original-envelope-id'], marker);
    if (ret === 'FULL') {
      assert.equal(dsn!.returnedType, 'message/rfc822');
      assert.match(dsn!.returned, new RegExp(`body of ${marker}`));
    } else {
      assert.equal(dsn!.returnedType, 'text/rfc822-headers');
      assert.match(dsn!.returned, new RegExp(`Subject: dsn ${marker}`));
      assert.doesNotMatch(dsn!.returned, new RegExp(`body of ${marker}`));
    }
  }
});

test('a recipient still queued after delayWarningAfter gets one "delayed" DSN (NOTIFY with DELAY or none), never a second, not even after a restart', async () => {
  const marker = `delayed-${Date.now()}`;
  await submit([
    { address: 'delay@slow.test', options: ['NOTIFY=DELAY,FAILURE'] },
    { address: 'default@slow.test', options: [] },
    { address: 'failonly@slow.test', options: ['NOTIFY=FAILURE'] },
  ], [], marker);
  const [dsn] = await waitFor('the delayed DSN', async () => ((await dsnsAbout(marker)).length > 0 ? dsnsAbout(marker) : undefined), 20_000);
  assert.match(dsn!.subject, /Delayed Mail/);
  assert.deepEqual(dsn!.recipients.map((fields) => fields['final-recipient']).sort(), ['rfc822; default@slow.test', 'rfc822; delay@slow.test']);
  for (const fields of dsn!.recipients) {
    assert.equal(fields['action'], 'delayed');
    assert.equal(fields['status'], '4.2.1');
    assert.match(fields['diagnostic-code']!, /^smtp; 451 4\.2\.1 Mailbox busy/);
    const until = Date.parse(fields['will-retry-until']!);
    assert.ok(until > Date.now() + 8 * 60_000, `Will-Retry-Until ${fields['will-retry-until']} is about bounceAfter after arrival`);
  }
  // Retries go on every second; no second notice.
  const attemptsBefore = slowMx.sessions.length;
  await new Promise((resolve) => setTimeout(resolve, 3000));
  assert.ok(slowMx.sessions.length > attemptsBefore, 'the relay kept retrying');
  assert.equal((await dsnsAbout(marker)).length, 1);
  await relay.kill('SIGTERM');
  relay = await startRelayProcess({ configDir: dir, adminPort });
  const afterRestart = slowMx.sessions.length;
  await waitFor('a retry after the restart', () => (slowMx.sessions.length > afterRestart + 1 ? true : undefined), 20_000);
  await new Promise((resolve) => setTimeout(resolve, 1000));
  assert.equal((await dsnsAbout(marker)).length, 1, 'the delay notice is not repeated after a restart');
});

test('a destination that refuses connections (the queue deferred as a whole) also gets its one delayed DSN, with the connection failure as the reason', async () => {
  const marker = `down-${Date.now()}`;
  await submit([{ address: 'someone@down.test', options: ['NOTIFY=DELAY'] }], [], marker);
  const [dsn] = await waitFor('the delayed DSN for down.test', async () => ((await dsnsAbout(marker)).length > 0 ? dsnsAbout(marker) : undefined), 20_000);
  assert.equal(dsn!.recipients.length, 1);
  assert.equal(dsn!.recipients[0]!['action'], 'delayed');
  assert.equal(dsn!.recipients[0]!['status'], '4.4.1');
  await new Promise((resolve) => setTimeout(resolve, 3000));
  assert.equal((await dsnsAbout(marker)).length, 1);
});
