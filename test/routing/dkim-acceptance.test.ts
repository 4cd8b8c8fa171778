// The acceptor signs with the From domain's key only for senders allowed to use it: an
// authenticated user gets a signature for a From domain among their allowed sender domains and
// none for another customer's keyed domain (counted as from_not_allowed); mail relayed for an
// allowed network is signed by From alone. The signature goes on top, above the Received header.
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { text } from 'node:stream/consumers';
import { after, before, test } from 'node:test';
import { RUNTIME_CONFIG_API_VERSION, RuntimeConfig } from '../../mta/config/schema.ts';
import type { AcceptedTransaction } from '../../mta/inbound/transaction.ts';
import { RelayMetrics } from '../../mta/observe/metrics.ts';
import { createMessageAcceptor } from '../../mta/routing/acceptance.ts';
import { DkimSigner } from '../../mta/signing/dkim-signer.ts';
import { FileSpool } from '../../mta/spool/spool.ts';

let directory: string;
let spool: FileSpool;
before(async () => {
  directory = await fs.mkdtemp(path.join(os.tmpdir(), 'dkim-acceptor-'));
  spool = await FileSpool.open(path.join(directory, 'spool'));
});
after(async () => {
  await spool.close();
  await fs.rm(directory, { recursive: true, force: true });
});

test('an authenticated user gets signatures only for From domains they may send from', async () => {
  const keyFiles: Record<string, string> = {};
  for (const domain of ['alice.test', 'bob.test']) {
    keyFiles[domain] = path.join(directory, `${domain}.pem`);
    await fs.writeFile(keyFiles[domain]!, generateKeyPairSync('ed25519').privateKey.export({ type: 'pkcs8', format: 'pem' }));
  }
  const config = RuntimeConfig.parse({
    apiVersion: RUNTIME_CONFIG_API_VERSION,
    hostname: 'relay.test',
    pool: { name: 'p', virtualMtas: [{ name: 'v', hostname: 'v.test' }], dkim: { keys: Object.entries(keyFiles).map(([domain, keyFile]) => ({ domain, selector: 's', algorithm: 'ed25519-sha256', keyFile })) } },
    listeners: [],
    relayPolicies: [{ name: 'submission', users: { secretPath: directory, allowedSenderDomains: { alice: ['alice.test', '*.alice.test'] } } }, { name: 'network', allowedCidrs: ['10.0.0.0/8'] }],
    spool: { path: 'spool' },
  });
  const metrics = new RelayMetrics({ processMetrics: false });
  const signer = await DkimSigner.load(config, metrics);
  const accept = createMessageAcceptor({ spool, getConfig: () => config, getSigner: () => signer });
  const base = (policy: number, user?: string): AcceptedTransaction => ({
    listener: 'l', clientAddress: '10.1.2.3', heloName: 'client.test', protocol: 'ESMTP', mailFrom: 'x@alice.test',
    recipients: [{ address: 'r@dest.test', domain: 'dest.test' }], eightBitMime: false, smtpUtf8: false, policy: config.relayPolicies[policy]!,
    ...(user !== undefined ? { user } : {}),
  });
  const cases: [AcceptedTransaction, string, boolean][] = [
    [base(0, 'alice'), 'alice.test', true],
    [base(0, 'alice'), 'news.alice.test', true],
    [base(0, 'alice'), 'bob.test', false],
    [base(0, 'mallory'), 'alice.test', false],
    [base(1), 'bob.test', true],
  ];
  for (const [transaction, fromDomain, signed] of cases) {
    const { queueId } = await accept(transaction, Buffer.from(`From: someone@${fromDomain}\r\nSubject: t\r\n\r\nbody\r\n`));
    const stored = await text(spool.readMessage(queueId));
    const what = `${transaction.user ?? 'network client'} with From @${fromDomain}`;
    if (signed) assert.match(stored, /^DKIM-Signature: v=1; a=ed25519-sha256;[^]*\r\nReceived: from client\.test/, `${what}: signed, signature above Received`);
    else assert.doesNotMatch(stored, /DKIM-Signature/i, `${what}: not signed`);
  }
  const unsigned = await metrics.dkimUnsigned.get();
  assert.deepEqual(unsigned.values.map((sample) => [sample.labels.reason, sample.value]), [['from_not_allowed', 2]]);
});
