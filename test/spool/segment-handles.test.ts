// Segment read handles (mta/spool/segment-handles.ts) on real files, counted in /proc/self/fd:
// concurrent reads of one segment share one descriptor; idle handles beyond the bound are closed,
// least recently used first, for every bound and number of files; a handle in use is never
// closed under its read, even when its segment is forgotten (deleted) meanwhile, and a forgotten
// idle one closes at once; a file that cannot be opened leaves nothing behind; closeAll closes all.
import assert from 'node:assert/strict';
import { mkdtemp, readdir, readlink, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { SegmentReadHandles } from '../../mta/spool/segment-handles.ts';
import { readAt } from '../../mta/spool/segment-reader.ts';

let directory: string;
const files: string[] = [];

before(async () => {
  directory = await mkdtemp(path.join(os.tmpdir(), 'vmta-segment-handles-'));
  for (let index = 0; index < 40; index++) {
    const file = path.join(directory, `segment-${index}.seg`);
    await writeFile(file, `content of segment ${index}`);
    files.push(file);
  }
});
after(() => rm(directory, { recursive: true, force: true }));

/** Descriptors of this process open on files of the test directory. */
async function openHere(): Promise<string[]> {
  const targets = await Promise.all((await readdir('/proc/self/fd')).map((fd) => readlink(`/proc/self/fd/${fd}`).catch(() => '')));
  return targets.filter((target) => target.startsWith(directory));
}

test('concurrent reads of one segment share one descriptor and read its bytes', async () => {
  const handles = new SegmentReadHandles(8);
  const reads = await Promise.all(Array.from({ length: 10 }, () => handles.acquire(files[0]!)));
  assert.equal((await openHere()).length, 1);
  const contents = await Promise.all(reads.map((read) => readAt(read.handle, 0, 100)));
  for (const content of contents) assert.equal(content.toString(), 'content of segment 0');
  for (const read of reads) read.release();
  assert.equal((await openHere()).length, 1, 'kept open for the next read');
  await handles.closeAll();
  assert.equal((await openHere()).length, 0);
});

for (const [bound, used] of [[0, 5], [1, 5], [4, 4], [4, 40], [16, 40]] as const) {
  test(`bound ${bound}, ${used} files read one after the other: at most ${bound} stay open, the most recently used`, async () => {
    const handles = new SegmentReadHandles(bound);
    for (const file of files.slice(0, used)) (await handles.acquire(file)).release();
    await new Promise((resolve) => setImmediate(resolve));
    const open = await openHere();
    assert.equal(open.length, Math.min(bound, used));
    assert.deepEqual(open.sort(), files.slice(used - Math.min(bound, used), used).sort());
    await handles.closeAll();
  });
}

test('handles in use are never closed to keep the bound; they close once idle beyond it', async () => {
  const handles = new SegmentReadHandles(2);
  const reads = await Promise.all(files.slice(0, 6).map((file) => handles.acquire(file)));
  assert.equal((await openHere()).length, 6, 'six reads at once: six descriptors');
  for (const read of reads) assert.equal((await readAt(read.handle, 0, 7)).toString(), 'content');
  for (const read of reads) read.release();
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal((await openHere()).length, 2);
  await handles.closeAll();
});

test('a segment forgotten (deleted) during a read keeps its handle until the read ends; an idle one closes at once', async () => {
  const handles = new SegmentReadHandles(8);
  const reading = await handles.acquire(files[1]!);
  (await handles.acquire(files[2]!)).release();
  handles.forget(files[1]!);
  handles.forget(files[2]!);
  await new Promise((resolve) => setImmediate(resolve));
  assert.deepEqual(await openHere(), [files[1]], 'only the one being read');
  assert.equal((await readAt(reading.handle, 0, 100)).toString(), 'content of segment 1');
  reading.release();
  reading.release(); // a second release changes nothing
  await new Promise((resolve) => setImmediate(resolve));
  assert.deepEqual(await openHere(), []);
  // A new read of the same path opens it afresh.
  const again = await handles.acquire(files[1]!);
  assert.equal((await readAt(again.handle, 0, 100)).toString(), 'content of segment 1');
  again.release();
  await handles.closeAll();
});

test('a file that cannot be opened rejects every read of it and leaves no handle', async () => {
  const handles = new SegmentReadHandles(8);
  const missing = path.join(directory, 'missing.seg');
  const results = await Promise.allSettled([handles.acquire(missing), handles.acquire(missing)]);
  for (const result of results) assert.equal(result.status === 'rejected' && (result.reason as NodeJS.ErrnoException).code, 'ENOENT');
  assert.equal(handles.open, 0);
});
