// FileSpool: storing, reading, recipient results and group commit.
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { text } from 'node:stream/consumers';
import { describe, it } from 'node:test';
import { RelayMetrics } from '../../mta/observe/metrics.ts';
import { FileSpool } from '../../mta/spool/spool.ts';
import { pendingEnvelope } from '../fixtures/spool-envelope.ts';
import { directoryPerTest, filesUnder, fsyncCount, scanAll } from './spool-files.ts';

describe('FileSpool', () => {
  const dir = directoryPerTest('spool-test-');

  it('finds a stored message with its envelope after reopening, and streams the exact bytes', async () => {
    const spool = await FileSpool.open(dir());
    const message = Buffer.from('Subject: hello\r\n\r\nbody line\r\n');
    const stored = await spool.store(pendingEnvelope(2, { user: 'alice', virtualMta: 'vmta-b' }), message);
    assert.equal(stored.envelope.size, message.length);
    await spool.close();

    const reopened = await FileSpool.open(dir());
    const [found, ...others] = await scanAll(reopened);
    assert.equal(others.length, 0);
    assert.equal(found?.id, stored.id);
    assert.deepEqual(found?.envelope, stored.envelope);
    assert.equal(await text(reopened.readMessage(stored.id)), message.toString());
    await reopened.close();
  });

  it('writes a message given as several buffers in order, without joining them first', async () => {
    const spool = await FileSpool.open(dir());
    const parts = [Buffer.from('Received: x\r\n'), Buffer.from('Subject: y\r\n\r\n'), Buffer.alloc(200_000, 'z')];
    const stored = await spool.store(pendingEnvelope(1), parts);
    assert.equal(stored.envelope.size, 13 + 14 + 200_000);
    assert.equal(await text(spool.readMessage(stored.id)), Buffer.concat(parts).toString());
    await spool.close();
  });

  it('stores under a queue id allocated beforehand', async () => {
    const spool = await FileSpool.open(dir());
    const id = spool.allocateId();
    const stored = await spool.store(pendingEnvelope(1), Buffer.from('a\r\n'), id);
    assert.equal(stored.id, id);
    assert.deepEqual((await scanAll(spool)).map((message) => message.id), [id]);
    await spool.close();
  });

  it('refuses a queue id that could escape the spool directory', async () => {
    const spool = await FileSpool.open(dir());
    await assert.rejects(spool.store(pendingEnvelope(1), Buffer.from('a'), '../../etc/passwd'), /not a queue id/);
    assert.throws(() => spool.readMessage('../x'), /not a queue id/);
    await spool.close();
  });

  it('reads envelopes with many recipients (longer than the first bounded read)', async () => {
    const spool = await FileSpool.open(dir());
    const stored = await spool.store(pendingEnvelope(500), Buffer.from('x\r\n'));
    await spool.close();
    const reopened = await FileSpool.open(dir());
    const [found] = await scanAll(reopened);
    assert.equal(found?.envelope.recipients.length, 500);
    assert.deepEqual(found?.envelope, stored.envelope);
    await reopened.close();
  });

  it('keeps per-recipient results across a reopen, latest result winning, attempts counted', async () => {
    const spool = await FileSpool.open(dir());
    const { id } = await spool.store(pendingEnvelope(3), Buffer.from('x\r\n'));
    await spool.recordRecipientResults(id, new Map([[0, { status: 'pending' as const, nextAttemptAt: 1000, lastResult: '451 try later' }], [1, { status: 'delivered' as const, nextAttemptAt: 0, lastResult: '250 ok' }]]));
    await spool.recordRecipientResults(id, new Map([[0, { status: 'bounced' as const, nextAttemptAt: 0, lastResult: '550 no such user' }]]));
    await spool.recordRecipientResults(id, new Map([[2, { status: 'pending' as const, nextAttemptAt: 5000, attempts: 7 }]]));
    await spool.close();

    const reopened = await FileSpool.open(dir());
    const [found] = await scanAll(reopened);
    assert.deepEqual(
      found?.envelope.recipients.map(({ status, attempts, nextAttemptAt, lastResult }) => ({ status, attempts, nextAttemptAt, lastResult })),
      [
        { status: 'bounced', attempts: 2, nextAttemptAt: 0, lastResult: '550 no such user' },
        { status: 'delivered', attempts: 1, nextAttemptAt: 0, lastResult: '250 ok' },
        { status: 'pending', attempts: 7, nextAttemptAt: 5000, lastResult: undefined },
      ],
    );
    await reopened.close();
  });

  it('skips a journal record torn by a crash and still applies the records after it', async () => {
    const spool = await FileSpool.open(dir());
    const { id } = await spool.store(pendingEnvelope(2), Buffer.from('x\r\n'));
    await spool.recordRecipientResults(id, new Map([[0, { status: 'delivered' as const, nextAttemptAt: 0 }]]));
    const [journal] = (await filesUnder(dir())).filter((file) => file.endsWith('.j'));
    assert.ok(journal);
    await fs.appendFile(journal, '\n{"t":1,"r":[[1,"deliv');
    await spool.recordRecipientResults(id, new Map([[1, { status: 'bounced' as const, nextAttemptAt: 0 }]]));
    await spool.close();
    const reopened = await FileSpool.open(dir());
    const [found] = await scanAll(reopened);
    assert.deepEqual(found?.envelope.recipients.map((recipient) => recipient.status), ['delivered', 'bounced']);
    await reopened.close();
  });

  it('keeps a journal record whole when bytes a torn append left follow it', async () => {
    const spool = await FileSpool.open(dir());
    const { id } = await spool.store(pendingEnvelope(1), Buffer.from('x\r\n'));
    await spool.recordRecipientResults(id, new Map([[0, { status: 'delivered' as const, nextAttemptAt: 0 }]]));
    await spool.close();
    const journal = (await filesUnder(dir())).find((file) => file.endsWith('results.j'));
    assert.ok(journal);
    await fs.appendFile(journal, Buffer.alloc(16)); // a later append whose bytes never arrived: zeros
    const reopened = await FileSpool.open(dir());
    assert.deepEqual((await scanAll(reopened)).map((message) => message.envelope.recipients[0]?.status), ['delivered']);
    await reopened.close();
  });

  it('refuses a second store under a queue id already being stored', async () => {
    const spool = await FileSpool.open(dir());
    const id = spool.allocateId();
    const results = await Promise.allSettled([spool.store(pendingEnvelope(1), Buffer.from('a\r\n'), id), spool.store(pendingEnvelope(1), Buffer.from('b\r\n'), id)]);
    assert.deepEqual(results.map((result) => result.status), ['fulfilled', 'rejected']);
    await assert.rejects(spool.store(pendingEnvelope(1), Buffer.from('c\r\n'), id), /already in spool/);
    await spool.close();
  });

  it('makes a batch durable with one flush, and concurrent stores share it (group commit)', async () => {
    const metrics = new RelayMetrics({ processMetrics: false });
    const spool = await FileSpool.open(dir(), { metrics });
    await spool.store(pendingEnvelope(1), Buffer.from('warm-up\r\n')); // creates the bucket dir(), a segment and a spare
    await spool.close(); // waits for the spare
    const reopened = await FileSpool.open(dir(), { metrics });
    await reopened.store(pendingEnvelope(1), Buffer.from('warm-up\r\n'));
    await new Promise((resolve) => setTimeout(resolve, 200)); // the spare segment of the new active one
    let before = await fsyncCount(metrics);
    for (let index = 0; index < 5; index++) await reopened.store(pendingEnvelope(1), Buffer.from(`one at a time ${index}\r\n`));
    assert.equal((await fsyncCount(metrics)) - before, 5, 'a store alone costs exactly one flush: no directory fsync');
    before = await fsyncCount(metrics);
    const count = 50;
    await Promise.all(Array.from({ length: count }, (_, index) => reopened.store(pendingEnvelope(1), Buffer.alloc(10_240, String(index)))));
    const fsyncs = (await fsyncCount(metrics)) - before;
    // The first store is written alone; the other 49 wait for it and go in the next batch.
    assert.ok(fsyncs <= 2, `expected at most 2 flushes for ${count} concurrent stores, got ${fsyncs}`);
    assert.equal((await metrics.spoolWriteSeconds.get()).values.find((value) => value.metricName === 'vmta_spool_write_seconds_count')?.value, 1 + 1 + 5 + count);
    assert.equal((await scanAll(reopened)).length, 1 + 1 + 5 + count);
    await reopened.close();
  });

  it('group-commits concurrent recipient results and keeps each message\'s own state', async () => {
    const metrics = new RelayMetrics({ processMetrics: false });
    const spool = await FileSpool.open(dir(), { metrics });
    const stored = await Promise.all(Array.from({ length: 40 }, () => spool.store(pendingEnvelope(2), Buffer.from('x\r\n'))));
    await spool.recordRecipientResults(stored[0]?.id ?? '', new Map([[1, { status: 'pending' as const, nextAttemptAt: 1 }]])); // creates the journal
    const before = await fsyncCount(metrics);
    await Promise.all(
      stored.map(({ id }, index) => spool.recordRecipientResults(id, new Map([[index % 2, { status: index % 3 === 0 ? ('bounced' as const) : ('delivered' as const), nextAttemptAt: 0, lastResult: `reply ${index}` }]]))),
    );
    const fsyncs = (await fsyncCount(metrics)) - before;
    assert.ok(fsyncs <= 20, `expected at most 20 fsyncs for 40 concurrent results, got ${fsyncs}`);
    await spool.close();
    const reopened = await FileSpool.open(dir());
    const found = new Map((await scanAll(reopened)).map((message) => [message.id, message.envelope]));
    for (const [index, { id }] of stored.entries()) {
      const recipient = found.get(id)?.recipients[index % 2];
      assert.equal(recipient?.status, index % 3 === 0 ? 'bounced' : 'delivered', `message ${index}`);
      assert.equal(recipient?.lastResult, `reply ${index}`);
      assert.equal(found.get(id)?.recipients[1 - (index % 2)]?.status, 'pending', `message ${index}, other recipient`);
    }
    await reopened.close();
  });

  it('keeps each message of a shared batch readable on its own, before and after the others are removed', async () => {
    const spool = await FileSpool.open(dir());
    const bodies = Array.from({ length: 30 }, (_, index) => Buffer.alloc(1000 + index * 997, `message ${index}\r\n`));
    const stored = await Promise.all(bodies.map((body, index) => spool.store(pendingEnvelope(1 + (index % 4)), body)));
    for (const [index, { id }] of stored.entries()) assert.equal(await text(spool.readMessage(id)), bodies[index]?.toString());
    for (const { id } of stored.filter((_, index) => index % 2 === 0)) await spool.remove(id);
    await spool.close();
    const reopened = await FileSpool.open(dir());
    const found = await scanAll(reopened);
    const survivors = stored.filter((_, index) => index % 2 === 1);
    assert.deepEqual(found.map((message) => message.id).sort(), survivors.map((message) => message.id).sort());
    for (const message of found) {
      const original = stored.findIndex((candidate) => candidate.id === message.id);
      assert.deepEqual(message.envelope, stored[original]?.envelope);
      assert.equal(await text(reopened.readMessage(message.id)), bodies[original]?.toString());
    }
    await reopened.close();
  });

  it('allocates sortable ids: scan returns messages in store order', async () => {
    const spool = await FileSpool.open(dir());
    const ids: string[] = [];
    for (let index = 0; index < 20; index++) ids.push((await spool.store(pendingEnvelope(1), Buffer.from(`${index}\r\n`))).id);
    assert.deepEqual([...ids].sort(), ids);
    assert.deepEqual((await scanAll(spool)).map((message) => message.id), ids);
    await spool.close();
  });

  it('refuses results for a message it never stored, and takes removing an unknown message as done', async () => {
    const spool = await FileSpool.open(dir());
    const unknown = spool.allocateId();
    await assert.rejects(spool.recordRecipientResults(unknown, new Map([[0, { status: 'delivered' as const, nextAttemptAt: 0 }]])), /no message/);
    await spool.remove(unknown);
    assert.deepEqual(await fs.readdir(path.join(dir(), 'queue')), []);
    await spool.close();
  });

  it('refuses work after close', async () => {
    const spool = await FileSpool.open(dir());
    await spool.close();
    await assert.rejects(spool.store(pendingEnvelope(1), Buffer.from('x')), /closed/);
  });
});
