// FileSpool at open: torn and damaged batches, segment headers and bodies, files it did not write.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { text } from 'node:stream/consumers';
import { describe, it } from 'node:test';
import { encodeBatch, SEGMENT_HEADER_LENGTH } from '../../mta/spool/segment-format.ts';
import { FileSpool } from '../../mta/spool/spool.ts';
import { pendingEnvelope } from '../fixtures/spool-envelope.ts';
import { directoryPerTest, editSegment, filesUnder, scanAll, segmentsWithData } from './spool-files.ts';

describe('FileSpool recovery of torn and damaged files', () => {
  const dir = directoryPerTest('spool-damage-');

  it('drops a torn last batch at open (a write a crash interrupted) and keeps the batches before it', async () => {
    const spool = await FileSpool.open(dir());
    const kept = await spool.store(pendingEnvelope(1), Buffer.from('kept\r\n'));
    const torn = await spool.store(pendingEnvelope(1), Buffer.from('torn\r\n'));
    await spool.close();
    await editSegment(dir(), (content) => {
      content.writeUInt8(content.readUInt8(content.length - 3) ^ 0xff, content.length - 3); // a body byte of the last batch never reached the disk
    });
    const reopened = await FileSpool.open(dir());
    assert.deepEqual((await scanAll(reopened)).map((message) => message.id), [kept.id]);
    assert.equal(await text(reopened.readMessage(kept.id)), 'kept\r\n');
    await assert.rejects(text(reopened.readMessage(torn.id)), { code: 'ENOENT' });
    await reopened.close();
  });

  it('drops a batch cut short by a crash, and deletes empty spare segments and compaction temp files at open', async () => {
    const spool = await FileSpool.open(dir());
    const { id } = await spool.store(pendingEnvelope(1), Buffer.from('x\r\n'));
    await spool.close();
    const [segment] = await segmentsWithData(dir());
    assert.ok(segment);
    const batch = (await fs.readFile(segment)).subarray(SEGMENT_HEADER_LENGTH);
    await fs.appendFile(segment, batch.subarray(0, batch.length - 1)); // a second batch, its last byte missing
    await fs.writeFile(path.join(path.dirname(segment), 'results.j.tmp'), '{"id":');
    assert.ok((await filesUnder(dir())).some((file) => file.endsWith('.seg') && file !== segment), 'a spare segment was prepared');
    const reopened = await FileSpool.open(dir());
    assert.deepEqual((await scanAll(reopened)).map((message) => message.id), [id]);
    assert.deepEqual(await filesUnder(dir()), [segment], 'the spare and the temp file are gone');
    await reopened.close();
  });

  it('recovers the batches after a damaged one in the middle of a segment, and keeps a copy of the segment', async () => {
    const spool = await FileSpool.open(dir());
    const first = await spool.store(pendingEnvelope(1), Buffer.from('first\r\n'));
    const damaged = await spool.store(pendingEnvelope(1), Buffer.from('second\r\n'));
    const third = await spool.store(pendingEnvelope(1), Buffer.from('third\r\n'));
    await spool.close();
    const content = await editSegment(dir(), (bytes) => {
      bytes.write('X', bytes.indexOf(damaged.id), 'latin1'); // in the second batch's table
    });
    const reopened = await FileSpool.open(dir());
    assert.deepEqual((await scanAll(reopened)).map((message) => message.id), [first.id, third.id], 'only the damaged batch is lost');
    assert.equal(await text(reopened.readMessage(third.id)), 'third\r\n');
    const copies = await fs.readdir(path.join(dir(), 'damaged'));
    assert.equal(copies.length, 1);
    assert.ok((await fs.readFile(path.join(dir(), 'damaged', copies[0]!))).equals(content), 'the damaged segment is kept as it was found');
    await reopened.close();
  });

  it('drops a last batch torn anywhere: in its prefix, its table, its envelopes or its body, or with damaged length digits', async () => {
    const spool = await FileSpool.open(dir());
    const { id } = await spool.store(pendingEnvelope(1), Buffer.from('x\r\n'));
    await spool.close();
    const [segment] = await segmentsWithData(dir());
    assert.ok(segment);
    const intact = await fs.readFile(segment);
    const batch = intact.subarray(SEGMENT_HEADER_LENGTH);
    const envelopeStart = batch.indexOf('{"mailFrom"');
    for (const cut of [3, 40, envelopeStart + 10, batch.length - 2]) {
      await fs.writeFile(segment, Buffer.concat([intact, batch.subarray(0, cut)]));
      const reopened = await FileSpool.open(dir());
      assert.deepEqual((await scanAll(reopened)).map((message) => message.id), [id], `a second batch cut after ${cut} bytes`);
      await reopened.close();
    }
    const hugeTable = Buffer.from(batch.subarray(0, 40).toString('latin1').replace(/ \d{10} /, ' 9999999999 '), 'latin1');
    assert.notDeepEqual(hugeTable, batch.subarray(0, 40));
    await fs.writeFile(segment, Buffer.concat([intact, hugeTable]));
    const reopened = await FileSpool.open(dir());
    assert.deepEqual((await scanAll(reopened)).map((message) => message.id), [id], 'a prefix claiming a 10 GB table is not read, just dropped');
    await reopened.close();
  });

  it('leaves alone a bucket holding files it did not write, journal included', async () => {
    const bucket = path.join(dir(), 'queue', '01m84k7');
    await fs.mkdir(bucket, { recursive: true });
    await fs.writeFile(path.join(bucket, '01m84k77gh0000j3ye'), 'VMTB1 0000000012\n{"m":[]}\n');
    await fs.writeFile(path.join(bucket, 'results.j'), '\n{"id":"01m84k77gh0000j3ye","t":1,"r":[[0,"delivered",0,1]]}');
    const spool = await FileSpool.open(dir());
    assert.deepEqual(await scanAll(spool), []);
    await spool.close();
    assert.deepEqual((await fs.readdir(bucket)).sort(), ['01m84k77gh0000j3ye', 'results.j']);
  });

  it('never takes a batch a client wrote into a message body for one of its own, even when a crash tears the batch around it', async () => {
    const spool = await FileSpool.open(dir());
    const kept = await spool.store(pendingEnvelope(1), Buffer.from('kept\r\n'));
    const forgedId = spool.allocateId();
    const forged = encodeBatch([{ id: forgedId, envelope: { ...pendingEnvelope(1, { virtualMta: 'chosen-by-client' }), size: 4 }, chunks: [Buffer.from('evil')] }], randomBytes(16));
    const carrier = await spool.store(pendingEnvelope(1), Buffer.concat([Buffer.from('Subject: innocent\r\n\r\n'), ...forged.buffers]));
    await spool.close();
    await editSegment(dir(), (content) => {
      const carrierBatch = content.lastIndexOf('VMTS1 ', content.indexOf(carrier.id));
      content.fill(0, carrierBatch, carrierBatch + 40); // the carrier's prefix never reached the disk
    });
    const reopened = await FileSpool.open(dir());
    assert.deepEqual((await scanAll(reopened)).map((message) => message.id), [kept.id], 'the forged batch fails its MAC under the segment key');
    await reopened.close();
  });

  it('recovers the batches of a segment whose header is damaged, every body checked, and keeps a copy', async () => {
    const spool = await FileSpool.open(dir());
    const first = await spool.store(pendingEnvelope(1), Buffer.from('first\r\n'));
    const second = await spool.store(pendingEnvelope(1), Buffer.from('second\r\n'));
    await spool.close();
    await editSegment(dir(), (content) => {
      content.write('Z', 12, 'latin1'); // inside the key: no MAC can be checked any more
    });
    const reopened = await FileSpool.open(dir());
    assert.deepEqual((await scanAll(reopened)).map((message) => message.id), [first.id, second.id]);
    assert.equal(await text(reopened.readMessage(second.id)), 'second\r\n');
    assert.equal((await fs.readdir(path.join(dir(), 'damaged'))).length, 1);
    await reopened.close();
  });

  it('refuses to stream a message whose bytes no longer match their checksum', async () => {
    const spool = await FileSpool.open(dir());
    const damaged = await spool.store(pendingEnvelope(1), Buffer.from('damaged body\r\n'));
    await spool.store(pendingEnvelope(1), Buffer.from('later batch\r\n'));
    await spool.close();
    await editSegment(dir(), (content) => {
      const at = content.indexOf('damaged body');
      content[at] = 'D'.charCodeAt(0);
    });
    const reopened = await FileSpool.open(dir());
    await assert.rejects(text(reopened.readMessage(damaged.id)), /fails its checksum/);
    await reopened.close();
  });
});
