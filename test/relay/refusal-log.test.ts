// Every inbound refusal of the real relay process leaves one JSON log line naming the client
// address (key `client`, which local mode's formatter shows), the reason and the reply sent:
// relaying denied, a sender the user may not use, a failed AUTH, the lock-out and every AUTH
// refused during it, too many connections from one address. A flood of one kind costs a bounded
// number of lines and a summary counting the rest.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { readableLogLine } from '../../operator/local/relay-process.ts';
import { EVENT_LOG_BURST } from '../../mta/observe/event-log.ts';
import { baseRelayConfig, freePort, LISTENER_TLS_FILES, startRelayProcess, temporaryDirectory, writeListenerFiles, writeRelayConfig, type LogRecord, type RelayProcess } from '../fixtures/relay-process.ts';
import { RawSmtpClient, run } from '../fixtures/smtp-clients.ts';
import { createTestCa, type TestCa } from '../fixtures/tls.ts';

const b64 = (text: string) => Buffer.from(text).toString('base64');
let ca: TestCa;
let relay: RelayProcess;
let ports: { submissions: number; relay: number };
const cleanups: Array<() => Promise<void> | void> = [];

before(async () => {
  ca = createTestCa();
  cleanups.push(() => ca.cleanup());
  const directory = await temporaryDirectory('vmta-refusals-');
  cleanups.push(() => directory.remove());
  await writeListenerFiles(directory.path, ca.issue(['localhost']), { alice: 'alice-password' });
  ports = { submissions: await freePort(), relay: await freePort() };
  const adminPort = await freePort();
  await writeRelayConfig(directory.path, baseRelayConfig({
    listeners: [
      { name: 'submissions', address: '127.0.0.1', port: ports.submissions, relayPolicy: 'submission', tls: { mode: 'implicit', required: true, ...LISTENER_TLS_FILES }, auth: { required: true, maxFailures: 3, failureWindow: '10m' } },
      { name: 'mx', address: '127.0.0.1', port: ports.relay, relayPolicy: 'inbound', auth: { mechanisms: [] }, limits: { maxConnectionsPerClient: 1, maxErrors: 1000 } },
    ],
    relayPolicies: [
      { name: 'submission', users: { secretPath: 'users', defaultAllowedSenderDomains: ['example.com'] } },
      { name: 'inbound', relayDomains: ['example.org'] },
    ],
    admin: { address: '127.0.0.1', port: adminPort },
  }));
  relay = await startRelayProcess({ configDir: directory.path, adminPort });
  cleanups.push(() => relay.kill('SIGKILL').then(() => undefined));
});
after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

async function session(port: number, localAddress: string, implicitTls = false): Promise<RawSmtpClient> {
  const client = await RawSmtpClient.connect(port, { localAddress, ...(implicitTls ? { implicitTls: { ca: ca.ca } } : {}) });
  assert.equal((await client.read()).code, 220);
  assert.equal((await client.command('EHLO client.test')).code, 250);
  return client;
}

function line(match: (record: LogRecord) => boolean): Promise<LogRecord> {
  return relay.waitForLog(match, 15_000);
}

function assertShownLocally(record: LogRecord, client: string, reply: RegExp): void {
  const shown = readableLogLine(JSON.stringify(record));
  assert.match(shown, new RegExp(`client=${client.replaceAll('.', '\\.')}`), shown);
  assert.match(shown, reply, shown);
}

test('relaying denied: one line with the client, the recipient and the 550 sent', async () => {
  const client = await session(ports.relay, '127.0.0.2');
  try {
    assert.equal((await client.command('MAIL FROM:<someone@remote.test>')).code, 250);
    assert.equal((await client.command('RCPT TO:<victim@elsewhere.test>')).code, 550);
  } finally {
    client.close();
  }
  const record = await line((entry) => entry.reason === 'relay_denied' && entry.client === '127.0.0.2');
  assert.equal(record.msg, 'refused: relay denied');
  assert.equal(record.recipient, 'victim@elsewhere.test');
  assert.equal(record.listener, 'mx');
  assert.match(String(record.reply), /^550 5\.7\.1 Relaying denied/);
  assertShownLocally(record, '127.0.0.2', /reply="?550 5\.7\.1/);
});

test('a sender the user may not use: one line with the user, MAIL FROM and the 553', async () => {
  const client = await session(ports.submissions, '127.0.0.3', true);
  try {
    assert.equal((await client.command(`AUTH PLAIN ${b64('\0alice\0alice-password')}`)).code, 235);
    assert.equal((await client.command('MAIL FROM:<ceo@not-hers.test>')).code, 553);
  } finally {
    client.close();
  }
  const record = await line((entry) => entry.reason === 'sender_not_allowed');
  assert.equal(record.client, '127.0.0.3');
  assert.equal(record.user, 'alice');
  assert.equal(record.mailFrom, 'ceo@not-hers.test');
  assertShownLocally(record, '127.0.0.3', /user=alice/);
});

test('failed AUTH, the lock-out at maxFailures and an AUTH during the lock-out: a line each, and the client is told for how long', async () => {
  for (let attempt = 1; attempt <= 3; attempt++) {
    const client = await session(ports.submissions, '127.0.0.4', true);
    try {
      const reply = await client.command(`AUTH PLAIN ${b64('\0alice\0guess')}`);
      if (attempt < 3) assert.equal(reply.code, 535);
      else assert.match(reply.text, /^454 4\.7\.0 Too many failed authentication attempts from 127\.0\.0\.4; AUTH is refused on every listener for 10 more minute\(s\)$/);
    } finally {
      client.close();
    }
  }
  const lockout = await line((entry) => entry.event === 'lockout' && entry.client === '127.0.0.4');
  // Written before the lock-out line, so read by now.
  const failures = relay.logs.filter((entry) => entry.msg === 'authentication failed' && entry.client === '127.0.0.4');
  assert.equal(failures.length, 2);
  assert.equal(failures[0]!.user, 'alice');
  assert.equal(lockout.level, 40);
  assert.match(lockout.msg, /locked out: 3 failed AUTH attempts within 600s/);
  assertShownLocally(lockout, '127.0.0.4', /reply="?454 4\.7\.0/);
  const again = await session(ports.submissions, '127.0.0.4', true);
  try {
    assert.equal((await again.command(`AUTH PLAIN ${b64('\0alice\0alice-password')}`)).code, 454);
  } finally {
    again.close();
  }
  const during = await line((entry) => entry.reason === 'auth_rate_limited' && entry.client === '127.0.0.4' && entry.event === 'refusal auth_rate_limited');
  assert.match(String(during.reply), /^454 .*for \d+ more minute/);
});

test('Python smtplib, as an application logs in, shows the lock-out reason instead of "connection unexpectedly closed"', async () => {
  // 127.0.0.4 is locked out by the test above; smtplib tries PLAIN, then LOGIN.
  const result = await run('python3', ['-c', `
import smtplib, ssl
ctx = ssl.create_default_context(cafile=${JSON.stringify(ca.caFile)})
s = smtplib.SMTP_SSL('127.0.0.1', ${ports.submissions}, context=ctx, source_address=('127.0.0.4', 0), timeout=30)
try:
    s.login('alice', 'alice-password')
except smtplib.SMTPAuthenticationError as error:
    print(error.smtp_code, error.smtp_error.decode())
`]);
  assert.match(result.stdout, /^454 4\.7\.0 Too many failed authentication attempts from 127\.0\.0\.4; AUTH is refused on every listener for \d+ more minute\(s\)$/m, result.stdout + result.stderr);
});

test('too many connections from one address: the refused connection has a line with the client', async () => {
  const first = await session(ports.relay, '127.0.0.5');
  const second = await RawSmtpClient.connect(ports.relay, { localAddress: '127.0.0.5' });
  try {
    assert.equal((await second.read()).code, 421);
  } finally {
    first.close();
    second.close();
  }
  const record = await line((entry) => entry.reason === 'too_many_connections_per_client' && entry.client === '127.0.0.5');
  assert.match(record.msg, /^connection refused: too many connections per client/);
  assertShownLocally(record, '127.0.0.5', /reply="?421 4\.7\.0/);
});

test(`a flood of refusals of one kind: at most ${EVENT_LOG_BURST} lines per window, then a summary with the count left out`, async () => {
  const flood = EVENT_LOG_BURST * 3;
  const client = await session(ports.relay, '127.0.0.6');
  try {
    assert.equal((await client.command('MAIL FROM:<someone@remote.test>')).code, 250);
    for (let index = 0; index < flood; index++) assert.equal((await client.command(`RCPT TO:<victim${index}@elsewhere.test>`)).code, 550);
  } finally {
    client.close();
  }
  const summary = await line((entry) => entry.event === 'refusal relay_denied' && typeof entry.suppressed === 'number');
  const written = relay.logs.filter((entry) => entry.msg === 'refused: relay denied');
  // The first test's line may share the window: every refusal is either written or counted.
  assert.ok(written.length <= EVENT_LOG_BURST, `${written.length} lines`);
  assert.equal(written.filter((entry) => entry.client === '127.0.0.6').length + Number(summary.suppressed), flood);
});
