// Opening a spool: create the layout, index every message that is not removed (reading each
// batch's table and envelopes, and the bodies of the last batch of a segment, the only one a
// crash can tear), keep a copy of what is found damaged, and delete what no longer holds a message.
import fsp from 'node:fs/promises';
import path from 'node:path';
import type { BucketSet } from './bucket-set.ts';
import type { RecoveryProgress } from './recovery-progress.ts';
import { DirectorySync } from './group-commit.ts';
import { BatchFormatError, type BatchTable, parseJournal, SEGMENT_HEADER_LENGTH, segmentKey } from './segment-format.ts';
import { findIntactBatch, readAt, readBatchHead, verifyBodies } from './segment-reader.ts';
import {
  type Batch,
  type Bucket,
  bucketOf,
  DAMAGED_DIR,
  forEachConcurrently,
  JOURNAL_FILE,
  listBuckets,
  messageLocation,
  readJournal,
  SCAN_PARALLELISM,
  type Segment,
  SEGMENT_SUFFIX,
  type SpoolContext,
  TEMP_SUFFIX,
} from './spool-layout.ts';
import type { QueueId } from './types.ts';

/** Startup: create the layout, index every message not removed, delete what no longer holds one. */
export async function recoverSpool(context: SpoolContext, buckets: BucketSet, progress?: RecoveryProgress): Promise<void> {
  await fsp.mkdir(context.queueDir, { recursive: true });
  // Also when it exists: a process killed right after creating it may not have synced it.
  await new DirectorySync(context.directory, context.countFsync).sync();
  for (const name of await listBuckets(context.queueDir)) {
    const entries = await fsp.readdir(path.join(context.queueDir, name));
    const bucket = buckets.create(name, { hasJournal: entries.includes(JOURNAL_FILE) });
    const { removed } = parseJournal(await readJournal(bucket));
    let unknown = 0;
    for (const entry of entries) {
      if (entry.endsWith(TEMP_SUFFIX)) await fsp.rm(path.join(bucket.directory, entry), { force: true });
      else if (entry !== JOURNAL_FILE && !entry.endsWith(SEGMENT_SUFFIX)) {
        unknown++;
        context.logger?.warn({ file: path.join(bucket.directory, entry) }, 'spool: unknown file left alone (not written by this version of the spool)');
      }
    }
    const segments = entries.filter((entry) => entry.endsWith(SEGMENT_SUFFIX));
    await forEachConcurrently(segments, SCAN_PARALLELISM, async (entry) => {
      const segment = await loadSegment(context, bucket, entry, removed);
      if (segment.live === 0) await fsp.rm(segment.file, { force: true }); // a spare, every message removed, or only a torn batch
      // Counted as found, so the gauges tell a recovering spool from an empty one.
      progress?.found(context.index.size);
      context.metrics?.spoolMessages.set(context.index.size);
    });
    if (bucket.live > 0) {
      buckets.add(bucket);
      continue;
    }
    if (unknown > 0) continue; // not ours to clear: the journal may belong to those files
    // Every message of the bucket was removed (its segments are deleted by now): the journal can go.
    await bucket.sync.sync();
    await fsp.rm(path.join(bucket.directory, JOURNAL_FILE), { force: true });
    await fsp.rmdir(bucket.directory).catch(() => undefined);
  }
  // What the previous process created may have been killed before its directory fsync: make the
  // names of every journal and segment found durable before anything is appended to them.
  await forEachConcurrently([...buckets.values()], SCAN_PARALLELISM, (bucket) => bucket.sync.sync());
  await context.queueDirSync.sync();
  context.metrics?.spoolMessages.set(context.index.size);
  progress?.found(context.index.size);
  progress?.indexed();
}

/**
 * Reads the batches of one segment and indexes their messages that the journal does not say are
 * removed. A batch that is not intact ends the segment when nothing intact follows it: that is the
 * last write, torn by a crash, and none of it had been acknowledged (the bodies of the last batch
 * are checked too, as a crash can tear them under an intact head). An intact batch after it means
 * damage (a bad sector, an edit): the segment is copied to `damaged/` for inspection, logged as an
 * error, and read on from there. Read errors (EIO) are thrown: open() fails rather than guess.
 */
async function loadSegment(context: SpoolContext, bucket: Bucket, name: string, removed: ReadonlySet<QueueId>): Promise<Segment> {
  const { logger, index } = context;
  const file = path.join(bucket.directory, name);
  const segment: Segment = { file, name: name.slice(0, -SEGMENT_SUFFIX.length), bucket, batches: [], key: undefined, size: 0, live: 0, handle: undefined };
  const handle = await fsp.open(file, 'r');
  try {
    const { size } = await handle.stat();
    try {
      segment.key = segmentKey(await readAt(handle, 0, SEGMENT_HEADER_LENGTH));
    } catch (error) {
      if (!(error instanceof BatchFormatError)) throw error;
      // A spare a crash cut short at creation holds nothing; batches after a header that is not one
      // are read without their MACs, every body checked, up to the first that fails.
      if (size <= SEGMENT_HEADER_LENGTH) return segment;
      const copy = await keepDamaged(context, file, bucket.name);
      logger?.error({ file, size, copy }, 'spool: segment header damaged; its batches are read with every body checked, up to the first that fails');
    }
    let offset = SEGMENT_HEADER_LENGTH;
    while (offset < size) {
      let table: BatchTable | undefined;
      let checkingBodies = false;
      try {
        ({ table } = await readBatchHead(handle, file, offset, size, segment.key));
        const foreign = table.entries.find((entry) => bucketOf(entry.id) !== bucket.name);
        if (foreign) throw new BatchFormatError(`batch holds message ${foreign.id}, which is not of bucket ${bucket.name}`);
        if (offset + table.length > size) throw new BatchFormatError(`batch of ${table.length} bytes at ${offset} is cut short at ${size}`);
        checkingBodies = offset + table.length === size || !segment.key;
        if (checkingBodies) await verifyBodies(handle, offset, table);
      } catch (error) {
        if (!(error instanceof BatchFormatError)) throw error;
        // With an intact head the broken batch's extent is known, and a head is never searched for inside it.
        // Without a key nothing found by searching could be trusted.
        const next = table || !segment.key ? undefined : await findIntactBatch(handle, file, offset + 1, size, segment.key);
        if (next === undefined) {
          // Bodies failing their checksums under an intact, complete head may be a tear or damage: keep a copy either way.
          const copy = checkingBodies ? await keepDamaged(context, file, bucket.name) : undefined;
          logger?.warn({ file, offset, size, copy, err: error }, 'spool: torn batch at the end of a segment ignored (a write a crash interrupted; none of it had been acknowledged)');
          break;
        }
        const copy = await keepDamaged(context, file, bucket.name);
        logger?.error({ file, offset, resumedAt: next, copy, err: error }, 'spool: damaged batch in a segment; its messages cannot be read, the batches after it are recovered');
        offset = next;
        continue;
      }
      const batch: Batch = { offset, ids: table.entries.map((entry) => entry.id) };
      segment.batches.push(batch);
      for (const entry of table.entries) {
        if (removed.has(entry.id) || index.has(entry.id)) continue;
        index.set(entry.id, messageLocation(segment, batch, offset, entry));
        segment.live++;
      }
      offset += table.length;
      segment.size = offset;
    }
  } finally {
    await handle.close();
  }
  if (segment.live > 0) {
    bucket.segments.add(segment);
    bucket.live += segment.live;
  }
  return segment;
}

/** A copy of a damaged segment under `damaged/`, for a human; the spool goes on with what it can read. */
async function keepDamaged(context: SpoolContext, file: string, bucketName: string): Promise<string> {
  const directory = path.join(context.directory, DAMAGED_DIR);
  await fsp.mkdir(directory, { recursive: true });
  const copy = path.join(directory, `${bucketName}-${path.basename(file)}`);
  await fsp.copyFile(file, copy);
  return copy;
}
