import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { text } from 'node:stream/consumers';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { RelayMetrics } from '../../mta/observe/metrics.ts';
import { FileSpool } from '../../mta/spool/spool.ts';
import type { SpooledMessage } from '../../mta/spool/types.ts';
import { pendingEnvelope } from '../fixtures/spool-envelope.ts';

async function scanAll(spool: FileSpool): Promise<SpooledMessage[]> {
  const messages: SpooledMessage[] = [];
  for await (const message of spool.scan()) messages.push(message);
  return messages;
}

async function filesUnder(directory: string): Promise<string[]> {
  const entries = await fs.readdir(directory, { recursive: true, withFileTypes: true });
  return entries.filter((entry) => entry.isFile()).map((entry) => path.join(entry.parentPath, entry.name));
}

async function fsyncCount(metrics: RelayMetrics): Promise<number> {
  return (await metrics.spoolFsyncs.get()).values[0]?.value ?? 0;
}

describe('FileSpool', () => {
  let directory: string;
  beforeEach(async () => {
    directory = await fs.mkdtemp(path.join(os.tmpdir(), 'spool-test-'));
  });
  afterEach(async () => {
    await fs.rm(directory, { recursive: true, force: true });
  });

  it('finds a stored message with its envelope after reopening, and streams the exact bytes', async () => {
    const spool = await FileSpool.open(directory);
    const message = Buffer.from('Subject: hello\r\n\r\nbody line\r\n');
    const stored = await spool.store(pendingEnvelope(2, { user: 'alice', virtualMta: 'vmta-b' }), message);
    assert.equal(stored.envelope.size, message.length);
    await spool.close();

    const reopened = await FileSpool.open(directory);
    const [found, ...others] = await scanAll(reopened);
    assert.equal(others.length, 0);
    assert.equal(found?.id, stored.id);
    assert.deepEqual(found?.envelope, stored.envelope);
    assert.equal(await text(reopened.readMessage(stored.id)), message.toString());
    await reopened.close();
  });

  it('writes a message given as several buffers in order, without joining them first', async () => {
    const spool = await FileSpool.open(directory);
    const parts = [Buffer.from('Received: x\r\n'), Buffer.from('Subject: y\r\n\r\n'), Buffer.alloc(200_000, 'z')];
    const stored = await spool.store(pendingEnvelope(1), parts);
    assert.equal(stored.envelope.size, 13 + 14 + 200_000);
    assert.equal(await text(spool.readMessage(stored.id)), Buffer.concat(parts).toString());
    await spool.close();
  });

  it('stores under a queue id allocated beforehand', async () => {
    const spool = await FileSpool.open(directory);
    const id = spool.allocateId();
    const stored = await spool.store(pendingEnvelope(1), Buffer.from('a\r\n'), id);
    assert.equal(stored.id, id);
    assert.deepEqual((await scanAll(spool)).map((message) => message.id), [id]);
    await spool.close();
  });

  it('refuses a queue id that could escape the spool directory', async () => {
    const spool = await FileSpool.open(directory);
    await assert.rejects(spool.store(pendingEnvelope(1), Buffer.from('a'), '../../etc/passwd'), /not a queue id/);
    assert.throws(() => spool.readMessage('../x'), /not a queue id/);
    await spool.close();
  });

  it('reads envelopes with many recipients (longer than the first bounded read)', async () => {
    const spool = await FileSpool.open(directory);
    const stored = await spool.store(pendingEnvelope(500), Buffer.from('x\r\n'));
    await spool.close();
    const reopened = await FileSpool.open(directory);
    const [found] = await scanAll(reopened);
    assert.equal(found?.envelope.recipients.length, 500);
    assert.deepEqual(found?.envelope, stored.envelope);
    await reopened.close();
  });

  it('keeps per-recipient results across a reopen, latest result winning, attempts counted', async () => {
    const spool = await FileSpool.open(directory);
    const { id } = await spool.store(pendingEnvelope(3), Buffer.from('x\r\n'));
    await spool.recordRecipientResults(id, new Map([[0, { status: 'pending' as const, nextAttemptAt: 1000, lastResult: '451 try later' }], [1, { status: 'delivered' as const, nextAttemptAt: 0, lastResult: '250 ok' }]]));
    await spool.recordRecipientResults(id, new Map([[0, { status: 'bounced' as const, nextAttemptAt: 0, lastResult: '550 no such user' }]]));
    await spool.recordRecipientResults(id, new Map([[2, { status: 'pending' as const, nextAttemptAt: 5000, attempts: 7 }]]));
    await spool.close();

    const reopened = await FileSpool.open(directory);
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
    const spool = await FileSpool.open(directory);
    const { id } = await spool.store(pendingEnvelope(2), Buffer.from('x\r\n'));
    await spool.recordRecipientResults(id, new Map([[0, { status: 'delivered' as const, nextAttemptAt: 0 }]]));
    const [journal] = (await filesUnder(directory)).filter((file) => file.endsWith('.j'));
    assert.ok(journal);
    await fs.appendFile(journal, '\n{"t":1,"r":[[1,"deliv');
    await spool.recordRecipientResults(id, new Map([[1, { status: 'bounced' as const, nextAttemptAt: 0 }]]));
    await spool.close();
    const reopened = await FileSpool.open(directory);
    const [found] = await scanAll(reopened);
    assert.deepEqual(found?.envelope.recipients.map((recipient) => recipient.status), ['delivered', 'bounced']);
    await reopened.close();
  });

  it('ignores and deletes temp files of interrupted stores at open', async () => {
    const spool = await FileSpool.open(directory);
    const { id } = await spool.store(pendingEnvelope(1), Buffer.from('x\r\n'));
    await spool.close();
    const [messageFile] = await filesUnder(directory);
    assert.ok(messageFile);
    const temp = path.join(path.dirname(messageFile), `${id.slice(0, -1)}z.tmp`);
    await fs.writeFile(temp, 'VMTA1 0000000'); // a store that never finished
    const reopened = await FileSpool.open(directory);
    assert.deepEqual((await scanAll(reopened)).map((message) => message.id), [id]);
    assert.deepEqual(await filesUnder(directory), [messageFile]);
    await reopened.close();
  });

  it('removes a message, and an emptied past bucket directory with its journal', async () => {
    let clock = Date.UTC(2026, 0, 1);
    const spool = await FileSpool.open(directory, { now: () => clock });
    const { id } = await spool.store(pendingEnvelope(2), Buffer.from('x\r\n'));
    const kept = await spool.store(pendingEnvelope(1), Buffer.from('y\r\n'));
    await spool.recordRecipientResults(id, new Map([[0, { status: 'delivered' as const, nextAttemptAt: 0 }]]));
    await spool.remove(id);
    assert.deepEqual((await scanAll(spool)).map((message) => message.id), [kept.id]);
    await assert.rejects(text(spool.readMessage(id)), { code: 'ENOENT' });
    clock += 3_600_000;
    await spool.remove(kept.id);
    await spool.close();
    assert.deepEqual(await fs.readdir(path.join(directory, 'queue')), []);
  });

  it('deletes at open the journal and directory of a bucket whose messages were all removed before a crash', async () => {
    const spool = await FileSpool.open(directory);
    const { id } = await spool.store(pendingEnvelope(1), Buffer.from('x\r\n'));
    await spool.recordRecipientResults(id, new Map([[0, { status: 'delivered' as const, nextAttemptAt: 0 }]]));
    await spool.close();
    const messageFile = (await filesUnder(directory)).find((file) => !file.endsWith('.j'));
    assert.ok(messageFile);
    await fs.unlink(messageFile); // crash between the message unlink and the journal unlink
    const reopened = await FileSpool.open(directory);
    assert.deepEqual(await scanAll(reopened), []);
    assert.deepEqual(await filesUnder(directory), []);
    await reopened.close();
  });

  it('shares directory fsyncs between concurrent stores (group commit)', async () => {
    const metrics = new RelayMetrics({ processMetrics: false });
    const spool = await FileSpool.open(directory, { metrics });
    await spool.store(pendingEnvelope(1), Buffer.from('warm-up\r\n')); // creates the bucket directory
    const before = await fsyncCount(metrics);
    const count = 50;
    await Promise.all(Array.from({ length: count }, (_, index) => spool.store(pendingEnvelope(1), Buffer.alloc(10_240, String(index)))));
    const fsyncs = (await fsyncCount(metrics)) - before;
    // Without group commit every store costs a data and a directory fsync (2 per message).
    assert.ok(fsyncs <= count / 2, `expected at most ${count / 2} fsyncs for ${count} concurrent stores, got ${fsyncs}`);
    assert.equal((await metrics.spoolWriteSeconds.get()).values.find((value) => value.metricName === 'vmta_spool_write_seconds_count')?.value, count + 1);
    assert.equal((await scanAll(spool)).length, count + 1);
    await spool.close();
  });

  it('group-commits concurrent recipient results and keeps each message\'s own state', async () => {
    const metrics = new RelayMetrics({ processMetrics: false });
    const spool = await FileSpool.open(directory, { metrics });
    const stored = await Promise.all(Array.from({ length: 40 }, () => spool.store(pendingEnvelope(2), Buffer.from('x\r\n'))));
    await spool.recordRecipientResults(stored[0]?.id ?? '', new Map([[1, { status: 'pending' as const, nextAttemptAt: 1 }]])); // creates the journal
    const before = await fsyncCount(metrics);
    await Promise.all(
      stored.map(({ id }, index) => spool.recordRecipientResults(id, new Map([[index % 2, { status: index % 3 === 0 ? ('bounced' as const) : ('delivered' as const), nextAttemptAt: 0, lastResult: `reply ${index}` }]]))),
    );
    const fsyncs = (await fsyncCount(metrics)) - before;
    assert.ok(fsyncs <= 20, `expected at most 20 fsyncs for 40 concurrent results, got ${fsyncs}`);
    await spool.close();
    const reopened = await FileSpool.open(directory);
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
    const spool = await FileSpool.open(directory);
    const bodies = Array.from({ length: 30 }, (_, index) => Buffer.alloc(1000 + index * 997, `message ${index}\r\n`));
    const stored = await Promise.all(bodies.map((body, index) => spool.store(pendingEnvelope(1 + (index % 4)), body)));
    for (const [index, { id }] of stored.entries()) assert.equal(await text(spool.readMessage(id)), bodies[index]?.toString());
    for (const { id } of stored.filter((_, index) => index % 2 === 0)) await spool.remove(id);
    await spool.close();
    const reopened = await FileSpool.open(directory);
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
    const spool = await FileSpool.open(directory);
    const ids: string[] = [];
    for (let index = 0; index < 20; index++) ids.push((await spool.store(pendingEnvelope(1), Buffer.from(`${index}\r\n`))).id);
    assert.deepEqual([...ids].sort(), ids);
    assert.deepEqual((await scanAll(spool)).map((message) => message.id), ids);
    await spool.close();
  });

  it('refuses results for a message it never stored, and takes removing an unknown message as done', async () => {
    const spool = await FileSpool.open(directory);
    const unknown = spool.allocateId();
    await assert.rejects(spool.recordRecipientResults(unknown, new Map([[0, { status: 'delivered' as const, nextAttemptAt: 0 }]])), /no message/);
    await spool.remove(unknown);
    assert.deepEqual(await fs.readdir(path.join(directory, 'queue')), []);
    await spool.close();
  });

  it('refuses work after close', async () => {
    const spool = await FileSpool.open(directory);
    await spool.close();
    await assert.rejects(spool.store(pendingEnvelope(1), Buffer.from('x')), /closed/);
  });
});

describe('journal compaction', () => {
  let directory: string;
  beforeEach(async () => {
    directory = await fs.mkdtemp(path.join(os.tmpdir(), 'spool-journal-'));
  });
  afterEach(async () => {
    await fs.rm(directory, { recursive: true, force: true });
  });

  it('folds many results into one record per live message, with the same state, and drops removed messages', async () => {
    const spool = await FileSpool.open(directory);
    const stored = await Promise.all(Array.from({ length: 10 }, () => spool.store(pendingEnvelope(3), Buffer.from('x\r\n'))));
    const removed = stored.slice(5);
    const kept = stored.slice(0, 5);
    // About 280 bytes per record: 5 live messages x 1000 rounds write ~1.4 MB, past the 1 MiB threshold.
    const rounds = 1000;
    const removeAt = 10;
    for (let round = 0; round < rounds; round++) {
      await Promise.all(
        (round <= removeAt ? stored : kept).map(({ id }) =>
          spool.recordRecipientResults(id, new Map([0, 1, 2].map((index) => [index, { status: 'pending' as const, nextAttemptAt: round, lastResult: `451 4.7.1 greylisted, round ${round} of recipient ${index}` }]))),
        ),
      );
      if (round === removeAt) {
        for (const { id } of removed) await spool.remove(id);
        for (const { id } of kept) await spool.recordRecipientResults(id, new Map([[2, { status: 'delivered' as const, nextAttemptAt: 0, attempts: 1000 }]]));
      }
    }
    await spool.close();
    const journal = (await filesUnder(directory)).find((file) => file.endsWith('results.j'));
    assert.ok(journal);
    const { size } = await fs.stat(journal);
    assert.ok(size < 1024 * 1024, `journal compacted (size ${size})`);
    const content = await fs.readFile(journal, 'utf8');
    for (const { id } of removed) assert.doesNotMatch(content, new RegExp(id), 'records of removed messages are dropped');

    const reopened = await FileSpool.open(directory);
    const found = await scanAll(reopened);
    assert.deepEqual(found.map((message) => message.id).sort(), kept.map((message) => message.id).sort());
    for (const { envelope } of found) {
      assert.deepEqual(
        envelope.recipients.map(({ status, attempts, nextAttemptAt, lastResult }) => ({ status, attempts, nextAttemptAt, lastResult })),
        [
          { status: 'pending', attempts: rounds, nextAttemptAt: rounds - 1, lastResult: `451 4.7.1 greylisted, round ${rounds - 1} of recipient 0` },
          { status: 'pending', attempts: rounds, nextAttemptAt: rounds - 1, lastResult: `451 4.7.1 greylisted, round ${rounds - 1} of recipient 1` },
          { status: 'pending', attempts: 1000 + rounds - removeAt - 1, nextAttemptAt: rounds - 1, lastResult: `451 4.7.1 greylisted, round ${rounds - 1} of recipient 2` },
        ],
      );
    }
    await reopened.close();
  });
});
