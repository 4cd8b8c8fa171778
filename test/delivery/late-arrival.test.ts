// A message accepted before the newest message of a queue-wide deferral but queued after it
// (stores finish out of order: accept and queue are milliseconds apart) took no part in that
// deferral and waits for the queue's retry with the rest. What a restart finds of it must be what
// memory holds: no attempt, and its next attempt at the queue's retry, so no later round before
// that retry is counted for it either. Each late message is stored first and queued after the
// deferral of one or more messages accepted later.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { loopbackAddresses } from '../fixtures/sink-mx.ts';
import { startHarness, waitFor, type Harness } from './harness.ts';

let harness: Harness;

before(async () => {
  const [deadAddress] = loopbackAddresses(1) as [string];
  harness = await startHarness({
    mxPort: 9,
    zone: { 'blocked.test': { mx: [{ preference: 10, exchange: 'dead.blocked.test' }] }, 'dead.blocked.test': { a: [deadAddress] } },
    pool: { name: 'pool-a', virtualMtas: [{ name: 'vmta-1', hostname: 'mta1.sender.test' }], domainDefaults: [{ match: '*', tlsPolicy: 'none' }] },
  });
});

after(async () => {
  await harness?.close();
});

const blockedQueue = () => harness.engine.listQueues().find((row) => row.domain === 'blocked.test');

for (const deferredFirst of [1, 3]) {
  test(`a message queued after the deferral of ${deferredFirst} newer one(s) is held, and found after a restart, with no attempt and its next try at the queue's retry`, async () => {
    const before = blockedQueue()?.scheduled ?? 0;
    const late = await harness.spool.store(
      { mailFrom: 'sender@sender.test', recipients: [{ address: `late${deferredFirst}@blocked.test`, domain: 'blocked.test', status: 'pending', attempts: 0, nextAttemptAt: 0 }], virtualMta: 'vmta-1', receivedAt: Date.now() - 1000, listener: 'test', clientAddress: '127.0.0.1', eightBitMime: false, smtpUtf8: false },
      Buffer.from('Subject: late\r\n\r\nlate\r\n'),
    );
    for (let index = 0; index < deferredFirst; index += 1) await harness.submit({ to: [`newer${deferredFirst}-${index}@blocked.test`] });
    await waitFor(() => (blockedQueue()?.scheduled === before + deferredFirst && blockedQueue()?.inFlight === 0 ? true : undefined), 'the newer messages deferred');
    const retryAt = Date.parse(blockedQueue()!.nextRetryAt!);
    harness.engine.enqueue(late);
    const inMemory = harness.engine.showMessage(late.id)?.recipients[0];
    assert.equal(inMemory?.attempts, 0, 'it took no part in the deferral');
    assert.equal(Date.parse(inMemory!.nextAttemptAt!), retryAt, `it waits for the queue's retry: ${JSON.stringify(inMemory)}`);
    const recovered = await waitFor(async () => {
      const found = (await harness.recoveredRecipients(late.id))?.[0];
      return found && found.nextAttemptAt === inMemory!.nextAttemptAt ? found : undefined;
    }, 'a restart to find it waiting for the retry', 60_000);
    assert.equal(recovered.attempts, 0);
  });
}
