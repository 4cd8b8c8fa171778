// The relay process with its spool on a real, small file system (tmpfs) that fills up: mail is
// queued, the disk is filled to the last byte, and the queue is delivered to a sink MX. Every
// message must arrive exactly once and leave the spool (its result recorded from the reserve, not
// retried for want of space); MAIL FROM is answered 452 4.3.1 while free space is below the floor,
// and mail is accepted again once space is back.
import assert from 'node:assert/strict';
import { rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { test } from 'node:test';
import { waitFor } from '../delivery/harness.ts';
import { freePort, loopbackRelayConfig, metricValue, startRelayProcess, temporaryDirectory, writeRelayConfig } from '../fixtures/relay-process.ts';
import { loopbackAddresses, startSinkMx } from '../fixtures/sink-mx.ts';
import { mountSmallFilesystem } from '../fixtures/small-filesystem.ts';
import { RawSmtpClient } from '../fixtures/smtp-clients.ts';

const MiB = 1024 * 1024;
const MESSAGES = 300;
const FLOOR = 4 * MiB;
const TOKEN = 'full-disk-test-token';

/** Sends the messages over one session; resolves with the reply to each MAIL FROM and DATA end. */
async function send(port: number, numbers: readonly number[]): Promise<{ mail: string; data?: string }[]> {
  const client = await RawSmtpClient.connect(port);
  const replies: { mail: string; data?: string }[] = [];
  try {
    assert.equal((await client.read()).code, 220);
    assert.equal((await client.command('EHLO client.test')).code, 250);
    for (const number of numbers) {
      const mail = await client.command('MAIL FROM:<sender@example.com>');
      if (mail.code !== 250) {
        replies.push({ mail: mail.text });
        continue;
      }
      assert.equal((await client.command(`RCPT TO:<user${number}@example.net>`)).code, 250);
      assert.equal((await client.command('DATA')).code, 354);
      client.write(`Subject: full disk ${number}\r\nX-Test-Number: ${number}\r\n\r\n${`line of message ${number}\r\n`.repeat(200)}`);
      const data = await client.command('.');
      replies.push({ mail: mail.text, data: data.text });
    }
    await client.command('QUIT');
  } finally {
    client.close();
  }
  return replies;
}

test('on a full disk the relay delivers each queued message exactly once, refuses MAIL FROM with 452 below the floor, and accepts again once space is back', async (t) => {
  const filesystem = await mountSmallFilesystem(t, 24 * MiB);
  if (!filesystem) return;
  t.after(() => filesystem.unmount());
  const directory = await temporaryDirectory('vmta-full-disk-');
  t.after(() => directory.remove());
  const [sinkAddress] = loopbackAddresses(1);
  const sink = await startSinkMx({ address: sinkAddress! });
  t.after(() => sink.close());
  const port = await freePort();
  const adminPort = await freePort();
  await writeFile(path.join(directory.path, 'admin-token'), `${TOKEN}\n`);
  const base = loopbackRelayConfig(port, adminPort);
  await writeRelayConfig(directory.path, {
    ...base,
    pool: { name: 'pool-a', domainDefaults: [{ match: '*', smtpHost: `${sink.address}:${sink.port}`, retryAfter: ['1s'] }], virtualMtas: [{ name: 'vmta-1', hostname: 'out1.relay.test' }] },
    listeners: base.listeners.map((listener) => ({ ...listener, limits: { greetingDelay: '0s' } })),
    spool: { path: path.join(filesystem.path, 'spool'), minFreeBytes: FLOOR, reserveBytes: 1 * MiB },
    admin: { address: '127.0.0.1', port: adminPort, tokenFile: 'admin-token' },
  });
  const relay = await startRelayProcess({ configDir: directory.path, adminPort });
  t.after(() => relay.kill('SIGKILL'));
  const queueCall = async (action: string): Promise<void> => {
    const response = await fetch(`${relay.adminUrl}/api/v1/queues/${action}`, { method: 'POST', headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' }, body: JSON.stringify({ virtualMta: 'vmta-1' }) });
    assert.equal(response.status, 200, `${action}: ${await response.text()}`);
  };

  // Queue the mail while delivery is paused, then take every byte the file system has left.
  await queueCall('pause');
  const numbers = Array.from({ length: MESSAGES }, (_, index) => index);
  const accepted = (await Promise.all([0, 1, 2, 3].map((lane) => send(port, numbers.filter((number) => number % 4 === lane))))).flat();
  assert.ok(accepted.every((reply) => reply.data?.startsWith('250')), 'every message is accepted while there is space');
  const filled = await filesystem.fill(path.join(filesystem.path, 'filler'));
  t.diagnostic(`filled the file system with ${filled} bytes; ${await filesystem.freeBytes()} bytes left`);

  const refused = await waitFor(async () => {
    const [reply] = await send(port, [MESSAGES]);
    return reply?.data === undefined ? reply?.mail : undefined;
  }, 'MAIL FROM to be refused below the floor', 10_000);
  assert.match(refused, /^452 4\.3\.1 /);
  assert.ok((await metricValue(relay.adminUrl, 'vmta_inbound_rejections_total{listener="relay",reason="insufficient_storage"}'))! >= 1);
  assert.ok((await metricValue(relay.adminUrl, 'vmta_spool_free_bytes'))! < FLOOR);

  // Deliver everything on the full disk.
  await queueCall('resume');
  await waitFor(() => sink.messages.length >= MESSAGES, 'the sink to receive every message', 90_000);
  await waitFor(async () => (await metricValue(relay.adminUrl, 'vmta_spool_messages')) === 0, 'the spool to be empty (every result recorded)', 30_000);
  const deliveries = new Map<number, number>();
  for (const message of sink.messages) {
    const number = Number(/X-Test-Number: (\d+)/.exec(message.body.toString())?.[1]);
    deliveries.set(number, (deliveries.get(number) ?? 0) + 1);
  }
  assert.deepEqual([...deliveries.keys()].sort((a, b) => a - b), numbers, 'every queued message is delivered');
  const twice = [...deliveries].filter(([, count]) => count > 1);
  assert.deepEqual(twice, [], 'no message is delivered twice');
  assert.equal(relay.logs.filter((record) => record.msg.startsWith('recording recipient results failed')).length, 0, 'no result failed to be recorded');
  t.diagnostic(`deliveries per message on the full disk: ${sink.messages.length / MESSAGES}; reserve now ${await metricValue(relay.adminUrl, 'vmta_spool_reserve_bytes')} bytes`);

  // Space back: mail is accepted again and delivered.
  await rm(path.join(filesystem.path, 'filler'));
  const [again] = await waitFor(async () => {
    const replies = await send(port, [MESSAGES + 1]);
    return replies[0]?.data ? replies : undefined;
  }, 'MAIL FROM to be accepted again', 10_000);
  assert.match(again!.data!, /^250 /);
  await waitFor(() => sink.messages.some((message) => message.body.includes(`X-Test-Number: ${MESSAGES + 1}`)), 'the message sent after space came back to be delivered');
});
