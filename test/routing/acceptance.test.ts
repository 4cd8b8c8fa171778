import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { text } from 'node:stream/consumers';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { RUNTIME_CONFIG_API_VERSION, RuntimeConfig } from '../../mta/config/schema.ts';
import type { AcceptedTransaction } from '../../mta/inbound/transaction.ts';
import { createMessageAcceptor } from '../../mta/routing/acceptance.ts';
import { FileSpool } from '../../mta/spool/spool.ts';
import type { SpooledMessage } from '../../mta/spool/types.ts';

function config(spoolPath: string, honorVirtualMtaHeader: boolean, relayPolicies: unknown[] = [{ name: 'submission', routing: { honorVirtualMtaHeader, rules: [{ user: 'alice', virtualMta: 'vmta-b' }] } }]): RuntimeConfig {
  return RuntimeConfig.parse({
    apiVersion: RUNTIME_CONFIG_API_VERSION,
    hostname: 'relay.example.com',
    pool: { name: 'main', virtualMtas: [{ name: 'vmta-a', hostname: 'a.example.com' }, { name: 'vmta-b', hostname: 'b.example.com' }] },
    listeners: [],
    relayPolicies,
    spool: { path: spoolPath },
  });
}

function transaction(current: RuntimeConfig, overrides: Partial<AcceptedTransaction> = {}): AcceptedTransaction {
  const policy = current.relayPolicies[0];
  assert.ok(policy);
  return {
    listener: 'submission',
    clientAddress: '::ffff:127.0.0.1',
    clientHostname: 'localhost',
    heloName: 'client.example.org',
    protocol: 'ESMTPSA',
    tls: { version: 'TLSv1.3', cipher: 'TLS_AES_128_GCM_SHA256' },
    user: 'bob',
    mailFrom: 'bob@example.org',
    recipients: [{ address: 'carol@example.net', domain: 'example.net' }],
    eightBitMime: true,
    smtpUtf8: false,
    policy,
    ...overrides,
  };
}

describe('createMessageAcceptor', () => {
  let directory: string;
  let spool: FileSpool;
  beforeEach(async () => {
    directory = await fs.mkdtemp(path.join(os.tmpdir(), 'acceptor-test-'));
    spool = await FileSpool.open(directory);
  });
  afterEach(async () => {
    await spool.close();
    await fs.rm(directory, { recursive: true, force: true });
  });

  it('stores the message durably with a Received header naming its queue id, without X-Virtual-MTA, routed by the header when honoured', async () => {
    const current = config(directory, true);
    const accepted: SpooledMessage[] = [];
    const accept = createMessageAcceptor({ spool, getConfig: () => current, onAccepted: (message) => accepted.push(message), now: () => new Date(Date.UTC(2026, 10, 23, 12, 0, 0)) });
    const { queueId } = await accept(transaction(current), Buffer.from('X-Virtual-MTA: vmta-b\r\nSubject: hi\r\n\r\nbody\r\n'));

    const reopened = await FileSpool.open(directory);
    const found: SpooledMessage[] = [];
    for await (const message of reopened.scan()) found.push(message);
    await reopened.close();
    assert.equal(found.length, 1);
    const [stored] = found;
    assert.equal(stored?.id, queueId);
    assert.deepEqual(accepted.map((message) => message.id), [queueId]);
    assert.equal(stored?.envelope.virtualMta, 'vmta-b');
    assert.deepEqual(stored?.envelope.recipients, [{ address: 'carol@example.net', domain: 'example.net', status: 'pending', attempts: 0, nextAttemptAt: 0 }]);
    assert.equal(stored?.envelope.user, 'bob');
    assert.equal(stored?.envelope.eightBitMime, true);
    assert.equal(stored?.envelope.receivedAt, Date.UTC(2026, 10, 23, 12, 0, 0));
    assert.equal(
      await text(spool.readMessage(queueId)),
      'Received: from client.example.org (localhost [127.0.0.1])\r\n' +
        '\t(using TLSv1.3 with cipher TLS_AES_128_GCM_SHA256)\r\n' +
        `\tby relay.example.com with ESMTPSA id ${queueId}\r\n` +
        '\tfor <carol@example.net>; Mon, 23 Nov 2026 12:00:00 +0000\r\n' +
        'Subject: hi\r\n\r\nbody\r\n',
    );
  });

  it('removes X-Virtual-MTA even when the policy does not honour it, and routes by the rules instead', async () => {
    const current = config(directory, false);
    const accept = createMessageAcceptor({ spool, getConfig: () => current });
    const { queueId } = await accept(transaction(current, { user: 'alice' }), Buffer.from('Subject: hi\r\nX-Virtual-MTA: vmta-a\r\n\r\nbody\r\n'));
    const stored: SpooledMessage[] = [];
    for await (const message of spool.scan()) stored.push(message);
    assert.equal(stored[0]?.envelope.virtualMta, 'vmta-b');
    const message = await text(spool.readMessage(queueId));
    assert.doesNotMatch(message, /x-virtual-mta/i);
    assert.match(message, /\r\nSubject: hi\r\n\r\nbody\r\n$/);
  });

  it('spreads messages no rule decides over the pool, using the config current at each message', async () => {
    let current = config(directory, false);
    const accept = createMessageAcceptor({ spool, getConfig: () => current });
    const routed: string[] = [];
    for (let index = 0; index < 4; index++) await accept(transaction(current), Buffer.from('Subject: x\r\n\r\n'));
    current = config(directory, false, [{ name: 'submission', routing: { defaultVirtualMta: 'vmta-b' } }]);
    await accept(transaction(current), Buffer.from('Subject: x\r\n\r\n'));
    for await (const message of spool.scan()) routed.push(message.envelope.virtualMta);
    assert.deepEqual(routed, ['vmta-a', 'vmta-b', 'vmta-a', 'vmta-b', 'vmta-b']);
  });
});
