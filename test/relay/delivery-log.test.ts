// Every delivery attempt of the real relay process leaves one JSON log line per recipient that
// says what happened and why, for each class of outcome: delivered (the remote 250), deferred by
// the remote (451) or locally (connection refused, TLS required but not offered, SERVFAIL) with
// the next retry, bounced by the remote (550) or locally (NXDOMAIN, null MX), and the bounce of a
// DSN (null sender, no DSN of its own). The reason is under `reply`, which local mode's formatter
// shows, with the queue id and the recipient.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { readableLogLine } from '../../operator/local/relay-process.ts';
import { startDnsServer } from '../fixtures/dns-server.ts';
import { freePort, loopbackRelayConfig, startRelayProcess, temporaryDirectory, writeRelayConfig, type LogRecord, type RelayProcess } from '../fixtures/relay-process.ts';
import { startSinkGroup, type SinkMx } from '../fixtures/sink-mx.ts';
import { RawSmtpClient } from '../fixtures/smtp-clients.ts';

let relay: RelayProcess;
let relayPort: number;
let accepting: SinkMx;
const cleanups: Array<() => Promise<unknown> | unknown> = [];

before(async () => {
  const [sink, plainOnly] = (await startSinkGroup([{ rcptReplies: { 'nobody@ok.test': '550 5.1.1 No such user here', 'later@ok.test': '451 4.2.1 Mailbox busy, try later' } }, {}])) as [SinkMx, SinkMx];
  accepting = sink;
  cleanups.push(() => sink.close(), () => plainOnly.close());
  const dns = await startDnsServer({
    'ok.test': { mx: [{ preference: 10, exchange: 'mx.ok.test' }] },
    'mx.ok.test': { a: [sink.address] },
    'sender.test': { mx: [{ preference: 10, exchange: 'mx.ok.test' }] },
    'plain.test': { mx: [{ preference: 10, exchange: 'mx.plain.test' }] },
    'mx.plain.test': { a: [plainOnly.address] },
    'nx.test': { rcode: 'NXDOMAIN' },
    'nullmx.test': { mx: [{ preference: 0, exchange: '.' }] },
    'broken.test': { rcode: 'SERVFAIL' },
  });
  cleanups.push(() => dns.close());
  const directory = await temporaryDirectory('vmta-delivery-log-');
  cleanups.push(() => directory.remove());
  relayPort = await freePort();
  const adminPort = await freePort();
  const config = loopbackRelayConfig(relayPort, adminPort);
  config.pool = {
    ...config.pool,
    domainDefaults: [
      { match: '*', retryAfter: ['10m'] },
      { match: 'refused.test', smtpHost: '127.0.0.1:1' },
      { match: 'plain.test', tlsPolicy: 'required' },
    ],
  };
  config.delivery = { resolvers: [dns.server], mxPort: sink.port };
  await writeRelayConfig(directory.path, config);
  relay = await startRelayProcess({ configDir: directory.path, adminPort });
  cleanups.push(() => relay.kill('SIGKILL'));
});
after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

/** Sends one message over the loopback relay port; returns its queue id. */
async function send(from: string, to: string): Promise<string> {
  const client = await RawSmtpClient.connect(relayPort);
  try {
    await client.read();
    for (const command of ['EHLO log.test', `MAIL FROM:<${from}>`, `RCPT TO:<${to}>`]) assert.equal((await client.command(command)).code, 250, command);
    assert.equal((await client.command('DATA')).code, 354);
    const reply = await client.command(`From: ${from}\r\nTo: ${to}\r\nSubject: log\r\n\r\nhello\r\n.`);
    return /queued as (\S+)/.exec(reply.text)![1]!;
  } finally {
    client.close();
  }
}

const outcome = (queueId: string, recipient: string) => relay.waitForLog((record) => record.queueId === queueId && record.recipient === recipient && typeof record.event === 'string' && record.event.startsWith('delivery '), 30_000);

function assertShown(record: LogRecord, pattern: RegExp): void {
  const shown = readableLogLine(JSON.stringify(record));
  assert.match(shown, pattern, shown);
  assert.match(shown, new RegExp(`queueId=${String(record.queueId)}`), shown);
  assert.match(shown, new RegExp(`recipient=${String(record.recipient).replaceAll('.', '\\.')}`), shown);
}

const cases: Array<{ name: string; to: string; msg: string; level: number; reply: RegExp; retry: boolean }> = [
  { name: 'delivered: the remote 250', to: 'someone@ok.test', msg: 'delivered', level: 30, reply: /^250 /, retry: false },
  { name: 'deferred by the remote: its 451', to: 'later@ok.test', msg: 'deferred', level: 30, reply: /^451 4\.2\.1 Mailbox busy/, retry: true },
  { name: 'bounced by the remote: its 550', to: 'nobody@ok.test', msg: 'bounced', level: 40, reply: /^550 5\.1\.1 No such user/, retry: false },
  { name: 'bounced locally: the domain does not exist (NXDOMAIN)', to: 'user@nx.test', msg: 'bounced', level: 40, reply: /NXDOMAIN|does not exist|no such domain/i, retry: false },
  { name: 'bounced locally: null MX', to: 'user@nullmx.test', msg: 'bounced', level: 40, reply: /null MX/i, retry: false },
  { name: 'deferred locally: connection refused', to: 'user@refused.test', msg: 'deferred', level: 30, reply: /ECONNREFUSED|refused/i, retry: true },
  { name: 'deferred locally: TLS required, the MX offers no STARTTLS', to: 'user@plain.test', msg: 'deferred', level: 30, reply: /STARTTLS|TLS/, retry: true },
  { name: 'deferred locally: the resolver fails (SERVFAIL)', to: 'user@broken.test', msg: 'deferred', level: 30, reply: /SERVFAIL|temporar/i, retry: true },
];

for (const entry of cases) {
  test(`${entry.name}: one line with the queue id, the recipient and the reason`, async () => {
    const queueId = await send('app@sender.test', entry.to);
    const record = await outcome(queueId, entry.to);
    assert.equal(record.msg, entry.msg);
    assert.equal(record.level, entry.level);
    assert.match(String(record.reply), entry.reply);
    assert.equal(record.mailFrom, 'app@sender.test');
    assert.equal(record.attempt, 1);
    if (entry.retry) assert.ok(Date.parse(String(record.retryAt)) > Date.now() + 5 * 60_000, `retryAt ${String(record.retryAt)} follows retryAfter 10m`);
    else assert.equal(record.retryAt, undefined);
    assertShown(record, new RegExp(`^(info|warn) ${entry.msg} `));
    assertShown(record, /reply=/);
  });
}

test('a bounce DSN that bounces in turn is logged as such, and gets no DSN of its own', async () => {
  const queueId = await send('app@nx.test', 'nobody@ok.test');
  await outcome(queueId, 'nobody@ok.test');
  const dsn = await relay.waitForLog((record) => record.msg === 'DSN queued to the sender' && record.queueId === queueId);
  assert.equal(dsn.recipient, 'app@nx.test');
  const dsnOutcome = await outcome(String(dsn.dsnQueueId), 'app@nx.test');
  assert.equal(dsnOutcome.mailFrom, '<>');
  assert.match(dsnOutcome.msg, /^bounced \(a DSN: none is sent for it\)$/);
  await new Promise((resolve) => setTimeout(resolve, 500));
  assert.ok(!relay.logs.some((record) => record.msg === 'DSN queued to the sender' && record.queueId === dsn.dsnQueueId));
  assert.ok(accepting.messages.length >= 1);
});
