// No acknowledged message is lost: the relay process is killed with SIGKILL again and again while
// several clients keep sending; every queue id a client got in a 250 reply must be in the spool
// afterwards (found by FileSpool's own scan after a restart), with its own recipient, exactly once.
import assert from 'node:assert/strict';
import path from 'node:path';
import { test } from 'node:test';
import { FileSpool } from '../../mta/spool/spool.ts';
import { RawSmtpClient } from '../fixtures/smtp-clients.ts';
import { freePort, loopbackRelayConfig, startRelayProcess, temporaryDirectory, writeRelayConfig, type RelayProcess } from '../fixtures/relay-process.ts';

const ROUNDS = 5;
const CLIENTS = 8;
const BODY = `Subject: crash safety\r\n\r\n${'line of a message that must survive a crash\r\n'.repeat(60)}`;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** One transaction with a unique recipient; the queue id when the server answered 250, else undefined. */
async function sendOnce(port: number, recipient: string): Promise<string | undefined> {
  const client = await RawSmtpClient.connect(port);
  try {
    if ((await client.read()).code !== 220) return undefined;
    if ((await client.command('EHLO load.test')).code !== 250) return undefined;
    if ((await client.command('MAIL FROM:<load@example.com>')).code !== 250) return undefined;
    if ((await client.command(`RCPT TO:<${recipient}>`)).code !== 250) return undefined;
    if ((await client.command('DATA')).code !== 354) return undefined;
    client.write(`${BODY}`);
    const reply = await client.command('.');
    if (reply.code !== 250) return undefined;
    const queueId = /queued as (\S+)/.exec(reply.text)?.[1];
    assert.ok(queueId, `250 without a queue id: ${reply.text}`);
    return queueId;
  } finally {
    client.close();
  }
}

test('SIGKILL under load, five times over: every queue id answered 250 is in the spool once, with its recipient', async (t) => {
  const directory = await temporaryDirectory('vmta-crash-');
  const port = await freePort();
  const adminPort = await freePort();
  const config = loopbackRelayConfig(port, adminPort);
  config.listeners[0]!.limits = { greetingDelay: '0s', maxConnectionsPerClient: 1000 };
  await writeRelayConfig(directory.path, config);

  /** queue id -> the recipient of the transaction it acknowledged. */
  const acknowledged = new Map<string, string>();
  let sent = 0;
  let running = true;
  const client = async (index: number): Promise<void> => {
    while (running) {
      const recipient = `c${index}-m${sent++}@example.org`;
      try {
        const queueId = await sendOnce(port, recipient);
        if (queueId) {
          assert.ok(!acknowledged.has(queueId), `queue id ${queueId} acknowledged twice`);
          acknowledged.set(queueId, recipient);
        }
      } catch {
        // Refused while the relay is down, or cut off by the kill: not acknowledged, nothing to check.
        await sleep(20);
      }
    }
  };

  let clients: Promise<void>[] = [];
  let relay: RelayProcess | undefined;
  try {
    for (let round = 0; round < ROUNDS; round += 1) {
      relay = await startRelayProcess({ configDir: directory.path, adminPort });
      if (round === 0) clients = Array.from({ length: CLIENTS }, (_, index) => client(index));
      const before = acknowledged.size;
      // Kill at a different moment each round, once this round has acknowledged some messages.
      const deadline = Date.now() + 60_000;
      while (acknowledged.size < before + 20) {
        assert.ok(Date.now() < deadline, `round ${round}: no messages acknowledged within 60 s`);
        await sleep(10);
      }
      await sleep(37 * round);
      relay.child.kill('SIGKILL');
      assert.deepEqual(await relay.exited, { code: null, signal: 'SIGKILL' });
    }
    running = false;
    await Promise.all(clients);

    // A restart recovers the spool; then FileSpool itself says what is in it.
    relay = await startRelayProcess({ configDir: directory.path, adminPort });
    assert.deepEqual(await relay.kill('SIGTERM'), { code: 0, signal: null });
    const spool = await FileSpool.open(path.join(directory.path, 'spool'));
    const stored = new Map<string, string[]>();
    const idsSeen: string[] = [];
    try {
      for await (const message of spool.scan()) {
        idsSeen.push(message.id);
        stored.set(message.id, message.envelope.recipients.map((recipient) => recipient.address));
      }
    } finally {
      await spool.close();
    }

    t.diagnostic(`${acknowledged.size} acknowledged of ${sent} attempted; ${stored.size} in the spool after ${ROUNDS} kills`);
    assert.ok(acknowledged.size >= ROUNDS * 20, `only ${acknowledged.size} messages acknowledged`);
    assert.equal(new Set(idsSeen).size, idsSeen.length, 'a queue id appears twice in the spool');
    const recipients = [...stored.values()].flat();
    assert.equal(new Set(recipients).size, recipients.length, 'a message is stored twice');
    const missing = [...acknowledged].filter(([queueId, recipient]) => stored.get(queueId)?.[0] !== recipient);
    assert.deepEqual(missing, [], `${missing.length} of ${acknowledged.size} acknowledged messages missing from the spool`);
  } finally {
    running = false;
    await relay?.kill('SIGKILL');
    await Promise.all(clients);
    await directory.remove();
  }
});
