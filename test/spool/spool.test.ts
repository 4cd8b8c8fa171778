import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { text } from 'node:stream/consumers';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { RelayMetrics } from '../../mta/observe/metrics.ts';
import { encodeBatch, SEGMENT_HEADER_LENGTH } from '../../mta/spool/segment-format.ts';
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

/** Segment files that hold at least one batch (a spare holds just its header). */
async function segmentsWithData(directory: string): Promise<string[]> {
  const segments = (await filesUnder(directory)).filter((file) => file.endsWith('.seg'));
  const sizes = await Promise.all(segments.map((file) => fs.stat(file).then((stat) => stat.size)));
  return segments.filter((_, index) => (sizes[index] ?? 0) > SEGMENT_HEADER_LENGTH).sort();
}

/** Rewrites the one segment holding batches in place, as a crash or a bad disk would leave it; returns what it now holds. */
async function editSegment(directory: string, edit: (content: Buffer) => void): Promise<Buffer> {
  const [segment] = await segmentsWithData(directory);
  assert.ok(segment, 'a segment holds the stored batches');
  const content = await fs.readFile(segment);
  edit(content);
  await fs.writeFile(segment, content);
  return content;
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

  it('keeps a journal record whole when bytes a torn append left follow it', async () => {
    const spool = await FileSpool.open(directory);
    const { id } = await spool.store(pendingEnvelope(1), Buffer.from('x\r\n'));
    await spool.recordRecipientResults(id, new Map([[0, { status: 'delivered' as const, nextAttemptAt: 0 }]]));
    await spool.close();
    const journal = (await filesUnder(directory)).find((file) => file.endsWith('results.j'));
    assert.ok(journal);
    await fs.appendFile(journal, Buffer.alloc(16)); // a later append whose bytes never arrived: zeros
    const reopened = await FileSpool.open(directory);
    assert.deepEqual((await scanAll(reopened)).map((message) => message.envelope.recipients[0]?.status), ['delivered']);
    await reopened.close();
  });

  it('drops a torn last batch at open (a write a crash interrupted) and keeps the batches before it', async () => {
    const spool = await FileSpool.open(directory);
    const kept = await spool.store(pendingEnvelope(1), Buffer.from('kept\r\n'));
    const torn = await spool.store(pendingEnvelope(1), Buffer.from('torn\r\n'));
    await spool.close();
    await editSegment(directory, (content) => {
      content.writeUInt8(content.readUInt8(content.length - 3) ^ 0xff, content.length - 3); // a body byte of the last batch never reached the disk
    });
    const reopened = await FileSpool.open(directory);
    assert.deepEqual((await scanAll(reopened)).map((message) => message.id), [kept.id]);
    assert.equal(await text(reopened.readMessage(kept.id)), 'kept\r\n');
    await assert.rejects(text(reopened.readMessage(torn.id)), { code: 'ENOENT' });
    await reopened.close();
  });

  it('drops a batch cut short by a crash, and deletes empty spare segments and compaction temp files at open', async () => {
    const spool = await FileSpool.open(directory);
    const { id } = await spool.store(pendingEnvelope(1), Buffer.from('x\r\n'));
    await spool.close();
    const [segment] = await segmentsWithData(directory);
    assert.ok(segment);
    const batch = (await fs.readFile(segment)).subarray(SEGMENT_HEADER_LENGTH);
    await fs.appendFile(segment, batch.subarray(0, batch.length - 1)); // a second batch, its last byte missing
    await fs.writeFile(path.join(path.dirname(segment), 'results.j.tmp'), '{"id":');
    assert.ok((await filesUnder(directory)).some((file) => file.endsWith('.seg') && file !== segment), 'a spare segment was prepared');
    const reopened = await FileSpool.open(directory);
    assert.deepEqual((await scanAll(reopened)).map((message) => message.id), [id]);
    assert.deepEqual(await filesUnder(directory), [segment], 'the spare and the temp file are gone');
    await reopened.close();
  });

  it('recovers the batches after a damaged one in the middle of a segment, and keeps a copy of the segment', async () => {
    const spool = await FileSpool.open(directory);
    const first = await spool.store(pendingEnvelope(1), Buffer.from('first\r\n'));
    const damaged = await spool.store(pendingEnvelope(1), Buffer.from('second\r\n'));
    const third = await spool.store(pendingEnvelope(1), Buffer.from('third\r\n'));
    await spool.close();
    const content = await editSegment(directory, (bytes) => {
      bytes.write('X', bytes.indexOf(damaged.id), 'latin1'); // in the second batch's table
    });
    const reopened = await FileSpool.open(directory);
    assert.deepEqual((await scanAll(reopened)).map((message) => message.id), [first.id, third.id], 'only the damaged batch is lost');
    assert.equal(await text(reopened.readMessage(third.id)), 'third\r\n');
    const copies = await fs.readdir(path.join(directory, 'damaged'));
    assert.equal(copies.length, 1);
    assert.ok((await fs.readFile(path.join(directory, 'damaged', copies[0]!))).equals(content), 'the damaged segment is kept as it was found');
    await reopened.close();
  });

  it('refuses a second store under a queue id already being stored', async () => {
    const spool = await FileSpool.open(directory);
    const id = spool.allocateId();
    const results = await Promise.allSettled([spool.store(pendingEnvelope(1), Buffer.from('a\r\n'), id), spool.store(pendingEnvelope(1), Buffer.from('b\r\n'), id)]);
    assert.deepEqual(results.map((result) => result.status), ['fulfilled', 'rejected']);
    await assert.rejects(spool.store(pendingEnvelope(1), Buffer.from('c\r\n'), id), /already in spool/);
    await spool.close();
  });

  it('drops a last batch torn anywhere: in its prefix, its table, its envelopes or its body, or with damaged length digits', async () => {
    const spool = await FileSpool.open(directory);
    const { id } = await spool.store(pendingEnvelope(1), Buffer.from('x\r\n'));
    await spool.close();
    const [segment] = await segmentsWithData(directory);
    assert.ok(segment);
    const intact = await fs.readFile(segment);
    const batch = intact.subarray(SEGMENT_HEADER_LENGTH);
    const envelopeStart = batch.indexOf('{"mailFrom"');
    for (const cut of [3, 40, envelopeStart + 10, batch.length - 2]) {
      await fs.writeFile(segment, Buffer.concat([intact, batch.subarray(0, cut)]));
      const reopened = await FileSpool.open(directory);
      assert.deepEqual((await scanAll(reopened)).map((message) => message.id), [id], `a second batch cut after ${cut} bytes`);
      await reopened.close();
    }
    const hugeTable = Buffer.from(batch.subarray(0, 40).toString('latin1').replace(/ \d{10} /, ' 9999999999 '), 'latin1');
    assert.notDeepEqual(hugeTable, batch.subarray(0, 40));
    await fs.writeFile(segment, Buffer.concat([intact, hugeTable]));
    const reopened = await FileSpool.open(directory);
    assert.deepEqual((await scanAll(reopened)).map((message) => message.id), [id], 'a prefix claiming a 10 GB table is not read, just dropped');
    await reopened.close();
  });

  it('leaves alone a bucket holding files it did not write, journal included', async () => {
    const bucket = path.join(directory, 'queue', '01m84k7');
    await fs.mkdir(bucket, { recursive: true });
    await fs.writeFile(path.join(bucket, '01m84k77gh0000j3ye'), 'VMTB1 0000000012\n{"m":[]}\n');
    await fs.writeFile(path.join(bucket, 'results.j'), '\n{"id":"01m84k77gh0000j3ye","t":1,"r":[[0,"delivered",0,1]]}');
    const spool = await FileSpool.open(directory);
    assert.deepEqual(await scanAll(spool), []);
    await spool.close();
    assert.deepEqual((await fs.readdir(bucket)).sort(), ['01m84k77gh0000j3ye', 'results.j']);
  });

  it('never takes a batch a client wrote into a message body for one of its own, even when a crash tears the batch around it', async () => {
    const spool = await FileSpool.open(directory);
    const kept = await spool.store(pendingEnvelope(1), Buffer.from('kept\r\n'));
    const forgedId = spool.allocateId();
    const forged = encodeBatch([{ id: forgedId, envelope: { ...pendingEnvelope(1, { virtualMta: 'chosen-by-client' }), size: 4 }, chunks: [Buffer.from('evil')] }], randomBytes(16));
    const carrier = await spool.store(pendingEnvelope(1), Buffer.concat([Buffer.from('Subject: innocent\r\n\r\n'), ...forged.buffers]));
    await spool.close();
    await editSegment(directory, (content) => {
      const carrierBatch = content.lastIndexOf('VMTS1 ', content.indexOf(carrier.id));
      content.fill(0, carrierBatch, carrierBatch + 40); // the carrier's prefix never reached the disk
    });
    const reopened = await FileSpool.open(directory);
    assert.deepEqual((await scanAll(reopened)).map((message) => message.id), [kept.id], 'the forged batch fails its MAC under the segment key');
    await reopened.close();
  });

  it('recovers the batches of a segment whose header is damaged, every body checked, and keeps a copy', async () => {
    const spool = await FileSpool.open(directory);
    const first = await spool.store(pendingEnvelope(1), Buffer.from('first\r\n'));
    const second = await spool.store(pendingEnvelope(1), Buffer.from('second\r\n'));
    await spool.close();
    await editSegment(directory, (content) => {
      content.write('Z', 12, 'latin1'); // inside the key: no MAC can be checked any more
    });
    const reopened = await FileSpool.open(directory);
    assert.deepEqual((await scanAll(reopened)).map((message) => message.id), [first.id, second.id]);
    assert.equal(await text(reopened.readMessage(second.id)), 'second\r\n');
    assert.equal((await fs.readdir(path.join(directory, 'damaged'))).length, 1);
    await reopened.close();
  });

  it('refuses to stream a message whose bytes no longer match their checksum', async () => {
    const spool = await FileSpool.open(directory);
    const damaged = await spool.store(pendingEnvelope(1), Buffer.from('damaged body\r\n'));
    await spool.store(pendingEnvelope(1), Buffer.from('later batch\r\n'));
    await spool.close();
    await editSegment(directory, (content) => {
      const at = content.indexOf('damaged body');
      content[at] = 'D'.charCodeAt(0);
    });
    const reopened = await FileSpool.open(directory);
    await assert.rejects(text(reopened.readMessage(damaged.id)), /fails its checksum/);
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
    await assert.rejects(spool.recordRecipientResults(id, new Map([[1, { status: 'delivered' as const, nextAttemptAt: 0 }]])), /no message/);
    clock += 3_600_000;
    await spool.remove(kept.id);
    await spool.close();
    assert.deepEqual(await fs.readdir(path.join(directory, 'queue')), []);
  });

  it('lets go of the segments of a bucket of the past when a new slice of time begins: its spare is deleted', async () => {
    let clock = Date.UTC(2026, 0, 1);
    const spool = await FileSpool.open(directory, { now: () => clock });
    const old = await spool.store(pendingEnvelope(1), Buffer.from('old\r\n'));
    const [oldSegment] = await segmentsWithData(directory);
    assert.ok(oldSegment);
    const segmentsIn = async (dir: string) => (await fs.readdir(dir)).filter((name) => name.endsWith('.seg')).length;
    for (let tries = 0; (await segmentsIn(path.dirname(oldSegment))) < 2; tries++) {
      assert.ok(tries < 100, 'a spare segment is prepared beside the active one');
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    clock += 3_600_000;
    const later = await spool.store(pendingEnvelope(1), Buffer.from('new\r\n'));
    await spool.close();
    assert.equal(await segmentsIn(path.dirname(oldSegment)), 1, 'only the segment holding the old message is left in the past bucket');
    const reopened = await FileSpool.open(directory);
    assert.deepEqual((await scanAll(reopened)).map((message) => message.id), [old.id, later.id]);
    await reopened.close();
  });

  it('counts the messages it holds in vmta_spool_messages, from open to store to remove', async () => {
    const gauge = async (metrics: RelayMetrics) => (await metrics.spoolMessages.get()).values[0]?.value;
    const metrics = new RelayMetrics({ processMetrics: false });
    const spool = await FileSpool.open(directory, { metrics });
    const stored = await Promise.all([1, 2, 3].map(() => spool.store(pendingEnvelope(1), Buffer.from('x\r\n'))));
    assert.equal(await gauge(metrics), 3);
    await spool.remove(stored[0]!.id);
    assert.equal(await gauge(metrics), 2);
    await spool.close();
    const reopenedMetrics = new RelayMetrics({ processMetrics: false });
    const reopened = await FileSpool.open(directory, { metrics: reopenedMetrics });
    assert.equal(await gauge(reopenedMetrics), 2);
    await reopened.close();
  });

  it('deletes at open what a crash left of a bucket whose messages were all removed: segments, journal, directory', async () => {
    const spool = await FileSpool.open(directory);
    const { id } = await spool.store(pendingEnvelope(1), Buffer.from('x\r\n'));
    await spool.remove(id); // journalled; its segment is still the active one, so it stays on disk
    await spool.close();
    assert.equal((await segmentsWithData(directory)).length, 1);
    const reopened = await FileSpool.open(directory);
    assert.deepEqual(await scanAll(reopened), []);
    assert.deepEqual(await filesUnder(directory), []);
    await reopened.close();
  });

  it('deletes a full segment once every message in it is removed, while the bucket goes on', async () => {
    const spool = await FileSpool.open(directory);
    const big = await spool.store(pendingEnvelope(1), Buffer.alloc(1024 * 1024, 'b')); // fills its segment
    const [full] = await segmentsWithData(directory);
    const next = await spool.store(pendingEnvelope(1), Buffer.from('next\r\n'));
    assert.equal((await segmentsWithData(directory)).length, 2, 'the next store went to another segment');
    await spool.remove(big.id);
    await spool.close();
    assert.deepEqual(
      (await segmentsWithData(directory)).filter((file) => file === full),
      [],
      'the emptied segment is deleted',
    );
    const reopened = await FileSpool.open(directory);
    assert.deepEqual((await scanAll(reopened)).map((message) => message.id), [next.id]);
    await reopened.close();
  });

  it('makes a batch durable with one flush, and concurrent stores share it (group commit)', async () => {
    const metrics = new RelayMetrics({ processMetrics: false });
    const spool = await FileSpool.open(directory, { metrics });
    await spool.store(pendingEnvelope(1), Buffer.from('warm-up\r\n')); // creates the bucket directory, a segment and a spare
    await spool.close(); // waits for the spare
    const reopened = await FileSpool.open(directory, { metrics });
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

  it('folds many results into one record per live message, keeps removals while their segment is on disk, drops the rest', async () => {
    const spool = await FileSpool.open(directory);
    const removed = await Promise.all(Array.from({ length: 5 }, () => spool.store(pendingEnvelope(3), Buffer.from('x\r\n'))));
    // A 1 MiB message fills that segment: the messages stored after it go to another one.
    const filler = await spool.store(pendingEnvelope(1), Buffer.alloc(1024 * 1024, 'f'));
    const [removedBeside, ...kept] = await Promise.all(Array.from({ length: 6 }, () => spool.store(pendingEnvelope(3), Buffer.from('x\r\n'))));
    assert.ok(removedBeside);
    const stored = [...removed, removedBeside, ...kept];
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
        for (const { id } of [...removed, filler, removedBeside]) await spool.remove(id);
        for (const { id } of kept) await spool.recordRecipientResults(id, new Map([[2, { status: 'delivered' as const, nextAttemptAt: 0, attempts: 1000 }]]));
      }
    }
    await spool.close();
    const journal = (await filesUnder(directory)).find((file) => file.endsWith('results.j'));
    assert.ok(journal);
    const { size } = await fs.stat(journal);
    assert.ok(size < 1024 * 1024, `journal compacted (size ${size})`);
    const content = await fs.readFile(journal, 'utf8');
    for (const { id } of removed) assert.doesNotMatch(content, new RegExp(id), 'records of removed messages whose segment is deleted are dropped');
    const besideRecords = content.split('\n').filter((line) => line.includes(removedBeside.id));
    assert.deepEqual(besideRecords.map((line) => JSON.parse(line).x), [1], 'a removed message whose segment holds live ones keeps just its removal record');

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
