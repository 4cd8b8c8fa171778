// FileSpool over time: removal, buckets of the past, emptied segments, the messages gauge, journal compaction.
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { text } from 'node:stream/consumers';
import { describe, it } from 'node:test';
import { RelayMetrics } from '../../mta/observe/metrics.ts';
import { FileSpool } from '../../mta/spool/spool.ts';
import { pendingEnvelope } from '../fixtures/spool-envelope.ts';
import { directoryPerTest, filesUnder, scanAll, segmentsWithData } from './spool-files.ts';

describe('FileSpool lifecycle', () => {
  const dir = directoryPerTest('spool-life-');

  it('removes a message, and an emptied past bucket directory with its journal', async () => {
    let clock = Date.UTC(2026, 0, 1);
    const spool = await FileSpool.open(dir(), { now: () => clock });
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
    assert.deepEqual(await fs.readdir(path.join(dir(), 'queue')), []);
  });

  it('lets go of the segments of a bucket of the past when a new slice of time begins: its spare is deleted', async () => {
    let clock = Date.UTC(2026, 0, 1);
    const spool = await FileSpool.open(dir(), { now: () => clock });
    const old = await spool.store(pendingEnvelope(1), Buffer.from('old\r\n'));
    const [oldSegment] = await segmentsWithData(dir());
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
    const reopened = await FileSpool.open(dir());
    assert.deepEqual((await scanAll(reopened)).map((message) => message.id), [old.id, later.id]);
    await reopened.close();
  });

  it('counts the messages it holds in vmta_spool_messages, from open to store to remove', async () => {
    const gauge = async (metrics: RelayMetrics) => (await metrics.spoolMessages.get()).values[0]?.value;
    const metrics = new RelayMetrics({ processMetrics: false });
    const spool = await FileSpool.open(dir(), { metrics });
    const stored = await Promise.all([1, 2, 3].map(() => spool.store(pendingEnvelope(1), Buffer.from('x\r\n'))));
    assert.equal(await gauge(metrics), 3);
    await spool.remove(stored[0]!.id);
    assert.equal(await gauge(metrics), 2);
    await spool.close();
    const reopenedMetrics = new RelayMetrics({ processMetrics: false });
    const reopened = await FileSpool.open(dir(), { metrics: reopenedMetrics });
    assert.equal(await gauge(reopenedMetrics), 2);
    await reopened.close();
  });

  it('deletes at open what a crash left of a bucket whose messages were all removed: segments, journal, directory', async () => {
    const spool = await FileSpool.open(dir());
    const { id } = await spool.store(pendingEnvelope(1), Buffer.from('x\r\n'));
    await spool.remove(id); // journalled; its segment is still the active one, so it stays on disk
    await spool.close();
    assert.equal((await segmentsWithData(dir())).length, 1);
    const reopened = await FileSpool.open(dir());
    assert.deepEqual(await scanAll(reopened), []);
    assert.deepEqual(await filesUnder(dir()), []);
    await reopened.close();
  });

  it('deletes a full segment once every message in it is removed, while the bucket goes on', async () => {
    const spool = await FileSpool.open(dir());
    const big = await spool.store(pendingEnvelope(1), Buffer.alloc(1024 * 1024, 'b')); // fills its segment
    const [full] = await segmentsWithData(dir());
    const next = await spool.store(pendingEnvelope(1), Buffer.from('next\r\n'));
    assert.equal((await segmentsWithData(dir())).length, 2, 'the next store went to another segment');
    await spool.remove(big.id);
    await spool.close();
    assert.deepEqual(
      (await segmentsWithData(dir())).filter((file) => file === full),
      [],
      'the emptied segment is deleted',
    );
    const reopened = await FileSpool.open(dir());
    assert.deepEqual((await scanAll(reopened)).map((message) => message.id), [next.id]);
    await reopened.close();
  });
});

describe('journal compaction', () => {
  const dir = directoryPerTest('spool-journal-');

  it('folds many results into one record per live message, keeps removals while their segment is on disk, drops the rest', async () => {
    const spool = await FileSpool.open(dir());
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
    const journal = (await filesUnder(dir())).find((file) => file.endsWith('results.j'));
    assert.ok(journal);
    const { size } = await fs.stat(journal);
    assert.ok(size < 1024 * 1024, `journal compacted (size ${size})`);
    const content = await fs.readFile(journal, 'utf8');
    for (const { id } of removed) assert.doesNotMatch(content, new RegExp(id), 'records of removed messages whose segment is deleted are dropped');
    const besideRecords = content.split('\n').filter((line) => line.includes(removedBeside.id));
    assert.deepEqual(besideRecords.map((line) => JSON.parse(line).x), [1], 'a removed message whose segment holds live ones keeps just its removal record');

    const reopened = await FileSpool.open(dir());
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
