// Deferred mail across a restart: a relay process whose sink MX answers 4xx defers its messages;
// killed and started again, each message keeps its attempt count and next retry time (it is not
// retried at once, its count does not start over). Both ways a deferral is made: per recipient
// (a 4xx to RCPT TO) and for the whole destination queue (the MX refuses the connection's greeting).
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { test } from 'node:test';
import { waitFor } from '../delivery/harness.ts';
import { freePort, loopbackRelayConfig, startRelayProcess, temporaryDirectory, writeRelayConfig, type RelayProcess } from '../fixtures/relay-process.ts';
import { loopbackAddresses, startSinkMx, type SinkOptions } from '../fixtures/sink-mx.ts';
import { RawSmtpClient } from '../fixtures/smtp-clients.ts';

const MESSAGES = 3;
const READ_TOKEN = 'deferral-test-read-token';

interface RecipientView {
  attempts: number;
  nextAttemptAt: string | null;
  lastResult: string | null;
}

async function sendMessages(port: number): Promise<string[]> {
  const client = await RawSmtpClient.connect(port);
  const ids: string[] = [];
  try {
    await client.read();
    await client.command('EHLO client.test');
    for (let number = 0; number < MESSAGES; number++) {
      assert.equal((await client.command('MAIL FROM:<sender@example.com>')).code, 250);
      assert.equal((await client.command(`RCPT TO:<user${number}@deferred.example>`)).code, 250);
      assert.equal((await client.command('DATA')).code, 354);
      client.write(`Subject: deferred ${number}\r\n\r\nbody\r\n`);
      const reply = await client.command('.');
      ids.push(/queued as (\S+)/.exec(reply.text)![1]!);
    }
  } finally {
    client.close();
  }
  return ids;
}

async function recipientOf(relay: RelayProcess, id: string): Promise<RecipientView | undefined> {
  const response = await fetch(`${relay.adminUrl}/api/v1/messages/${id}`, { headers: { authorization: `Bearer ${READ_TOKEN}` } });
  if (response.status !== 200) return undefined;
  return ((await response.json()) as { recipients: RecipientView[] }).recipients[0];
}

const cases: [string, Partial<SinkOptions>][] = [
  ['a 4xx to RCPT TO (deferral per recipient)', { rcptReplies: Object.fromEntries(Array.from({ length: MESSAGES }, (_, number) => [`user${number}@deferred.example`, '451 4.7.1 greylisted, try again later'])) }],
  ['a 4xx greeting (deferral of the destination queue)', { connectReply: '421 4.3.2 service not available, try again later' }],
];

for (const [how, sinkReplies] of cases) {
  test(`deferred by ${how}: after a restart each message keeps its attempt count and next retry time`, async (t) => {
    const directory = await temporaryDirectory('vmta-deferral-');
    t.after(() => directory.remove());
    const [sinkAddress] = loopbackAddresses(1);
    const sink = await startSinkMx({ address: sinkAddress!, ...sinkReplies });
    t.after(() => sink.close());
    const port = await freePort();
    const adminPort = await freePort();
    await writeFile(path.join(directory.path, 'read-token'), `${READ_TOKEN}\n`);
    const base = loopbackRelayConfig(port, adminPort, { admin: { address: '127.0.0.1', port: adminPort, readTokenFile: 'read-token' } });
    await writeRelayConfig(directory.path, {
      ...base,
      // A retry after 2 s, then one an hour later: the restart falls into that hour.
      pool: { name: 'pool-a', domainDefaults: [{ match: '*', smtpHost: `${sink.address}:${sink.port}`, retryAfter: ['2s', '1h'] }], virtualMtas: [{ name: 'vmta-1', hostname: 'out1.relay.test' }] },
      listeners: base.listeners.map((listener) => ({ ...listener, limits: { greetingDelay: '0s' } })),
    });
    let relay = await startRelayProcess({ configDir: directory.path, adminPort, env: { LOG_LEVEL: 'debug' } });
    t.after(() => relay.kill('SIGKILL'));
    const ids = await sendMessages(port);
    const before = new Map<string, RecipientView>();
    for (const id of ids) {
      before.set(id, await waitFor(async () => {
        const recipient = await recipientOf(relay, id);
        return recipient?.nextAttemptAt && Date.parse(recipient.nextAttemptAt) > Date.now() + 50 * 60_000 ? recipient : undefined;
      }, `message ${id} to be deferred for an hour`, 30_000));
    }
    assert.ok([...before.values()].some((recipient) => recipient.attempts >= 2), 'a message was tried twice before the restart');
    // A destination deferral is journalled right after it is made in memory (one group commit
    // later): the kill waits for the last one, as a kill in between would lose that attempt only.
    await waitFor(() => {
      const lastDeferred = relay.logs.findLastIndex((record) => record.msg === 'destination deferred');
      return lastDeferred < 0 || relay.logs.findLastIndex((record) => record.msg === 'destination deferral recorded') > lastDeferred ? true : undefined;
    }, 'the last destination deferral to be recorded in the spool', 30_000);

    await relay.kill('SIGKILL');
    relay = await startRelayProcess({ configDir: directory.path, adminPort });
    for (const id of ids) {
      const was = before.get(id)!;
      const now = await recipientOf(relay, id);
      assert.ok(now, `message ${id} is queued after the restart`);
      assert.equal(now.attempts, was.attempts, `message ${id}: the attempt count survives the restart`);
      assert.equal(now.nextAttemptAt, was.nextAttemptAt, `message ${id}: the next retry time survives the restart`);
      assert.ok(Date.parse(now.nextAttemptAt!) > Date.now() + 50 * 60_000, `message ${id} waits for its retry an hour later`);
    }
    // Not retried at once: a few seconds after the restart no message has had another attempt.
    await new Promise((resolve) => setTimeout(resolve, 3000));
    for (const id of ids) assert.equal((await recipientOf(relay, id))?.attempts, before.get(id)!.attempts, `message ${id} is not tried again right after the restart`);
  });
}
