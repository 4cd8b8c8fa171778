// Hostile bytes at open(): a segment of several batches is cut short or has a byte flipped at offsets
// spread over all of it (header, prefixes, tables, envelopes, bodies). Whatever the damage, open()
// must not throw, every batch that ends before the damage must be there, no message the spool
// never stored may appear, and a removed message must stay removed.
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, it } from 'node:test';
import { decodeBatchTable, SEGMENT_HEADER_LENGTH } from '../../mta/spool/segment-format.ts';
import { FileSpool } from '../../mta/spool/spool.ts';
import { pendingEnvelope } from '../fixtures/spool-envelope.ts';

const TRIALS_PER_KIND = 120;

let root: string;
before(async () => {
  root = await fs.mkdtemp(path.join(os.tmpdir(), 'spool-fuzz-'));
});
after(async () => {
  await fs.rm(root, { recursive: true, force: true });
});

interface Pristine {
  directory: string;
  segmentPath: string;
  segment: Buffer;
  /** Each batch: where it ends in the segment, and its ids. */
  batches: { end: number; ids: string[] }[];
  removed: string;
}

async function pristineSpool(): Promise<Pristine> {
  const directory = path.join(root, 'pristine');
  const spool = await FileSpool.open(directory);
  for (let batch = 0; batch < 4; batch++) {
    await Promise.all([0, 1, 2].map((index) => spool.store(pendingEnvelope(1 + index), Buffer.from(`Subject: ${batch}.${index}\r\n\r\n${'body '.repeat(20 + index)}\r\n`))));
  }
  await spool.close();
  const files = (await fs.readdir(directory, { recursive: true })).filter((name) => name.endsWith('.seg'));
  const sized = await Promise.all(files.map(async (name) => ({ name, size: (await fs.stat(path.join(directory, name))).size })));
  const segmentPath = path.join(directory, sized.sort((a, b) => b.size - a.size)[0]!.name);
  const segment = await fs.readFile(segmentPath);
  const batches: Pristine['batches'] = [];
  for (let offset = SEGMENT_HEADER_LENGTH; offset < segment.length; ) {
    const table = decodeBatchTable(segment.subarray(offset));
    offset += table.length;
    batches.push({ end: offset, ids: table.entries.map((entry) => entry.id) });
  }
  assert.ok(batches.length >= 4, `at least four batches in one segment (${batches.length})`);
  const removed = batches.flatMap((batch) => batch.ids)[1]!;
  const reopened = await FileSpool.open(directory);
  await reopened.remove(removed);
  await reopened.close();
  return { directory, segmentPath, segment, batches, removed };
}

async function openDamaged(pristine: Pristine, trial: string, damaged: Buffer): Promise<string[]> {
  const directory = path.join(root, trial);
  await fs.cp(pristine.directory, directory, { recursive: true });
  await fs.writeFile(path.join(directory, path.relative(pristine.directory, pristine.segmentPath)), damaged);
  const spool = await FileSpool.open(directory);
  const ids: string[] = [];
  for await (const message of spool.scan()) ids.push(message.id);
  await spool.close();
  await fs.rm(directory, { recursive: true, force: true });
  return ids;
}

function check(pristine: Pristine, trial: string, damageAt: number, found: readonly string[]): void {
  const stored = new Set(pristine.batches.flatMap((batch) => batch.ids));
  for (const id of found) assert.ok(stored.has(id), `${trial}: ${id} was never stored`);
  assert.ok(!found.includes(pristine.removed), `${trial}: the removed message came back`);
  for (const batch of pristine.batches.filter((candidate) => candidate.end <= damageAt)) {
    for (const id of batch.ids.filter((candidate) => candidate !== pristine.removed)) assert.ok(found.includes(id), `${trial}: ${id}, in an intact batch before the damage, is lost`);
  }
}

it('open() survives cuts and flipped bytes anywhere in a segment without losing an intact earlier batch', { timeout: 120_000 }, async () => {
  const pristine = await pristineSpool();
  const length = pristine.segment.length;
  for (let trial = 0; trial < TRIALS_PER_KIND; trial++) {
    const at = Math.floor((trial * length) / TRIALS_PER_KIND);
    check(pristine, `cut at ${at}`, at, await openDamaged(pristine, `cut-${trial}`, pristine.segment.subarray(0, at)));
    const flipped = Buffer.from(pristine.segment);
    flipped.writeUInt8(flipped.readUInt8(at) ^ 0x20, at);
    // A flipped header byte leaves no MAC to check: the batches are then read with every body
    // checked, and as all of them are intact, none may be lost.
    check(pristine, `flip at ${at}`, at < SEGMENT_HEADER_LENGTH ? length : at, await openDamaged(pristine, `flip-${trial}`, flipped));
  }
});
