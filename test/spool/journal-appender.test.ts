// The journal appender (mta/spool/group-commit.ts) on a real file, its descriptors counted in
// /proc/self/fd: appends made one group at a time reuse one open file and none is left open
// after release(); the file closes by itself once appends stop for a while; every record of
// every group is in the file, in order, whatever the spacing between groups.
import assert from 'node:assert/strict';
import { mkdtemp, readdir, readFile, readlink, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { JournalAppender } from '../../mta/spool/group-commit.ts';

let directory: string;
before(async () => {
  directory = await mkdtemp(path.join(os.tmpdir(), 'vmta-journal-'));
});
after(() => rm(directory, { recursive: true, force: true }));

async function openOn(file: string): Promise<number> {
  const targets = await Promise.all((await readdir('/proc/self/fd')).map((fd) => readlink(`/proc/self/fd/${fd}`).catch(() => '')));
  return targets.filter((target) => target === file).length;
}

function appender(file: string): { journal: JournalAppender; fsyncs: () => number } {
  let fsyncs = 0;
  const journal = new JournalAppender(file, {
    exists: false,
    onFsync: () => void fsyncs++,
    syncDirectory: async () => undefined,
    compact: async (content) => content,
    onCompactionError: (error) => assert.fail(String(error)),
  });
  return { journal, fsyncs: () => fsyncs };
}

for (const gapMs of [0, 5, 50]) {
  test(`groups ${gapMs} ms apart: one open file for all of them, every record in order, closed by release()`, async () => {
    const file = path.join(directory, `gap-${gapMs}.j`);
    const { journal, fsyncs } = appender(file);
    const lines: string[] = [];
    for (let group = 0; group < 10; group++) {
      const records = Array.from({ length: group % 3 + 1 }, (_, index) => `group ${group} record ${index}\n`);
      lines.push(...records);
      await Promise.all(records.map((record) => journal.append(Buffer.from(record))));
      assert.equal(await openOn(file), 1, `open after group ${group}`);
      await new Promise((resolve) => setTimeout(resolve, gapMs));
    }
    assert.equal(await readFile(file, 'utf8'), lines.join(''));
    assert.ok(fsyncs() >= 10, 'every group flushed');
    await journal.release();
    assert.equal(await openOn(file), 0);
  });
}

test('the file closes by itself once appends stop for a while, and opens again for the next', async () => {
  const file = path.join(directory, 'idle.j');
  const { journal } = appender(file);
  await journal.append(Buffer.from('first\n'));
  assert.equal(await openOn(file), 1);
  const deadline = Date.now() + 10_000;
  while ((await openOn(file)) > 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 100));
  assert.equal(await openOn(file), 0, 'closed after the idle time');
  await journal.append(Buffer.from('second\n'));
  assert.equal(await readFile(file, 'utf8'), 'first\nsecond\n');
  await journal.release();
  assert.equal(await openOn(file), 0);
});
