// Listing the spool's messages with their latest recipient state: the envelopes of every batch
// that still holds a message, read SCAN_PARALLELISM heads at a time and yielded in store order,
// each with its bucket's journal applied. Bodies are never read.
import fsp from 'node:fs/promises';
import type { BucketSet } from './bucket-set.ts';
import { applyJournal, decodeEnvelope, type JournalEntry, parseJournal } from './segment-format.ts';
import { readBatchHead } from './segment-reader.ts';
import { type Batch, type Bucket, byName, readJournal, SCAN_PARALLELISM, type Segment, type SpoolContext } from './spool-layout.ts';
import type { Envelope, QueueId, SpooledMessage } from './types.ts';

interface ScanSnapshot {
  bucket: Bucket;
  segments: { segment: Segment; batches: Batch[] }[];
}

/**
 * Messages stored before the call (what is listed is fixed when scanSpool is called, not when the
 * iteration starts); one stored after it (a DSN, new mail) is the caller's to know of.
 */
export function scanSpool(context: SpoolContext, buckets: BucketSet): AsyncGenerator<SpooledMessage> {
  const snapshot = [...buckets.values()].sort(byName).map((bucket) => ({
    bucket,
    segments: [...bucket.segments].sort(byName).map((segment) => ({ segment, batches: segment.batches.slice() })),
  }));
  return readSnapshot(context, snapshot);
}

async function* readSnapshot(context: SpoolContext, snapshot: readonly ScanSnapshot[]): AsyncGenerator<SpooledMessage> {
  const { index } = context;
  for (const { bucket, segments } of snapshot) {
    const journal: Map<QueueId, JournalEntry[]> = segments.length > 0 ? parseJournal(await readJournal(bucket)).results : new Map();
    for (const { segment, batches: all } of segments) {
      const batches = all.filter((batch) => batch.ids.some((id) => index.get(id)?.batch === batch));
      if (batches.length === 0) continue;
      const handle = await fsp.open(segment.file, 'r');
      try {
        // Heads are read SCAN_PARALLELISM at a time and yielded in order.
        const reading: Promise<SpooledMessage[]>[] = [];
        for (const batch of batches) {
          // The batch's ids are the index's own strings, in table order: the message takes those rather than a second copy each.
          const read = readBatchHead(handle, segment.file, batch.offset, segment.size, segment.key).then(({ head, table }) =>
            table.entries.flatMap((entry, position) => {
              const id = batch.ids[position] === entry.id ? batch.ids[position]! : entry.id;
              if (index.get(id)?.batch !== batch) return [];
              const envelope = readEnvelope(context, head.subarray(entry.envelopeOffset, entry.envelopeOffset + entry.envelopeLength), id, segment.file);
              if (!envelope) return [];
              applyJournal(envelope, journal.get(id) ?? []);
              return [{ id, envelope }];
            }),
          );
          read.catch(() => undefined); // rejects when awaited below, not as an unhandled rejection meanwhile
          reading.push(read);
          if (reading.length >= SCAN_PARALLELISM) yield* await reading.shift()!;
        }
        for (const read of reading) yield* await read;
      } finally {
        await handle.close();
      }
    }
  }
}

/** An envelope as stored; one that does not parse (which its head MAC makes all but impossible) is logged and skipped, not a failed scan. */
function readEnvelope(context: SpoolContext, json: Buffer, id: QueueId, file: string): Envelope | undefined {
  try {
    return decodeEnvelope(json);
  } catch (error) {
    context.logger?.error({ queueId: id, file, err: error }, 'spool: envelope unreadable; message skipped');
    return undefined;
  }
}
