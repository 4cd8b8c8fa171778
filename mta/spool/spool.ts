// FileSpool: the durable message store on a local file system.
//
// Layout under the spool directory:
//   queue/<bucket>/<segment>.seg  segments: batches of messages appended by group commit
//                                 (format: mta/spool/segment-format.ts)
//   queue/<bucket>/results.j      journal of the bucket's recipient results and removals
//   damaged/<bucket>-<segment>.seg copies of segments found damaged at open, for a human
// <bucket> is the first 7 characters of a queue id (mta/spool/queue-id.ts), a ~33 s slice of time:
// a message is stored and journalled in the bucket of its id, so no directory grows without bound
// and an emptied bucket of the past is deleted whole. <segment> is a fresh queue id as well (unique
// and sortable; it says nothing about the messages inside).
//
// One device flush per batch: stores that arrive while a batch is being written wait for the next
// one, which is appended to the bucket's active segment by one O_DSYNC write (the data, and the
// file size that makes it readable, are on stable storage when the write returns); only then do
// they resolve. A segment's name was made durable (created, directory fsynced) before it took its
// first batch, and a spare is prepared in the background while the active one fills, so no
// directory fsync waits in front of a 250. A crash mid-write tears only the last batch of a
// segment; its checksums reveal that at the next open, and none of its messages had been
// acknowledged. Once written, a segment is never modified; after a restart new batches go to new
// segments.
//
// Results and removals are records in the bucket's journal, group-committed the same way (one
// append + fdatasync for every record written meanwhile). A segment is deleted once every message in
// it is removed, without a flush: if the deletion is lost in a crash, the journal still says its
// messages are gone. The journal forgets a removed message only after a directory fsync made its
// segment's deletion durable (compaction, bucket deletion).
//
// Batch heads carry a MAC under a random key in their segment's header: message bodies are stored
// as sent, and recovery, which searches for the next intact batch after a damaged one, must never
// take a batch a client wrote into a body for one of the spool's own.
//
// Where each message is (segment, offset, length, checksum) is kept in memory. open() rebuilds it
// from each batch's table and envelopes, reading no body except those of the last batch of each
// segment (the only one a crash can have torn); readMessage() verifies a body's checksum as it
// streams it.
import path from 'node:path';
import { Readable } from 'node:stream';
import type { Logger } from '../observe/log.ts';
import type { RelayMetrics } from '../observe/metrics.ts';
import { BucketSet } from './bucket-set.ts';
import { retryOnNoSpace, type SpaceLimits, SpoolDiskSpace } from './disk-space.ts';
import { DirectorySync, writeAll } from './group-commit.ts';
import { encodeBatch, encodeJournalRecord, encodeRemovalRecord } from './segment-format.ts';
import { SegmentReadHandles } from './segment-handles.ts';
import { streamMessage } from './segment-reader.ts';
import { isQueueId, QueueIdGenerator } from './queue-id.ts';
import { type Batch, type Bucket, type MessageLocation, messageLocation, type PendingStore, QUEUE_DIR, type SpoolContext } from './spool-layout.ts';
import type { RecoveryProgress } from './recovery-progress.ts';
import { recoverSpool } from './spool-recovery.ts';
import { scanSpool } from './spool-scan.ts';
import type { Envelope, QueueId, RecipientResult, Spool, SpooledMessage } from './types.ts';

/**
 * A segment takes no more batches once it is this large. It is deleted when its last message is
 * removed, so this bounds the disk a long-deferred message can keep from being reused.
 */
const SEGMENT_TARGET_BYTES = 1024 * 1024;
/** Bounds of one batch: a store beyond them waits for the next one. */
const BATCH_MAX_MESSAGES = 256;
const BATCH_MAX_BYTES = 32 * 1024 * 1024;
/** Buffers of one batch's write, its head included: one vectored write takes at most IOV_MAX (1024). */
const BATCH_MAX_BUFFERS = 1024;

export interface FileSpoolOptions {
  metrics?: RelayMetrics;
  logger?: Logger;
  /** Clock for queue ids and journal records (tests). */
  now?: () => number;
  /** Watch free space: refuse mail below a floor, keep a reserve for recording results (omitted: neither). */
  space?: SpaceLimits;
  /** Told how many messages recovery (open) finds as it indexes them. */
  recovery?: RecoveryProgress;
}

export class FileSpool implements Spool {
  readonly directory: string;
  readonly #context: SpoolContext;
  readonly #buckets: BucketSet;
  readonly #index = new Map<QueueId, MessageLocation>();
  /** Ids of stores not finished yet (a second store of one of them is refused). */
  readonly #storing = new Set<QueueId>();
  readonly #inFlight = new Set<Promise<unknown>>();
  readonly #options: FileSpoolOptions;
  #space: SpoolDiskSpace | undefined;
  readonly #onResume = new Set<() => void>();
  #closed = false;

  private constructor(directory: string, options: FileSpoolOptions) {
    this.directory = directory;
    this.#options = options;
    const queueDir = path.join(directory, QUEUE_DIR);
    const now = options.now ?? Date.now;
    const countFsync = (): void => options.metrics?.spoolFsyncs.inc();
    this.#context = {
      directory,
      queueDir,
      metrics: options.metrics,
      logger: options.logger,
      now,
      ids: new QueueIdGenerator(now),
      queueDirSync: new DirectorySync(queueDir, countFsync),
      index: this.#index,
      countFsync,
      track: (operation) => this.#track(operation),
      releaseSpace: async () => (await this.#space?.release()) ?? false,
      readHandles: new SegmentReadHandles(),
    };
    this.#buckets = new BucketSet(this.#context);
  }

  /** Opens (creating if needed) the spool in `directory` and recovers it. */
  static async open(directory: string, options: FileSpoolOptions = {}): Promise<FileSpool> {
    const spool = FileSpool.unopened(directory, options);
    await spool.recover();
    return spool;
  }

  /**
   * A spool whose recovery has not run: only onDeliveryResume() and recover() may be called before
   * recover() resolves (the relay builds delivery and its admin API meanwhile, to report progress).
   */
  static unopened(directory: string, options: FileSpoolOptions = {}): FileSpool {
    return new FileSpool(path.resolve(directory), options);
  }

  /** Finds every message, drops torn batches and what was removed; then starts watching free space. */
  async recover(): Promise<void> {
    const options = this.#options;
    await recoverSpool(this.#context, this.#buckets, options.recovery);
    if (!options.space) return;
    this.#space = await SpoolDiskSpace.open({ directory: this.directory, limits: options.space, metrics: options.metrics, logger: options.logger });
    this.#space.onResume(() => {
      for (const listener of this.#onResume) listener();
    });
  }

  /** Whether free space allows accepting new mail (always, for a spool opened without `space`). */
  hasRoomForMail(): boolean {
    return this.#space?.hasRoomForMail() ?? true;
  }

  deliveryHold(): string | undefined {
    return this.#space?.deliveryHold();
  }

  onDeliveryResume(listener: () => void): void {
    this.#onResume.add(listener);
  }

  /**
   * Runs a write of the relay's own state (queue pauses: an operator's resume on a full disk must
   * hold) and, while it fails for want of space, gives back a slice of the reserve and tries again.
   */
  withReserve<T>(write: () => Promise<T>): Promise<T> {
    return retryOnNoSpace(write, async () => (await this.#space?.release()) ?? false);
  }

  /** Floor and reserve from a reloaded config (a spool opened without `space` ignores them). */
  setSpaceLimits(limits: SpaceLimits): void {
    this.#space?.setLimits(limits);
  }

  allocateId(): QueueId {
    return this.#context.ids.next();
  }

  store(envelope: Omit<Envelope, 'size'>, message: Buffer | readonly Buffer[], id?: QueueId): Promise<SpooledMessage> {
    return this.#track(this.#store(envelope, Buffer.isBuffer(message) ? [message] : message, id ?? this.allocateId()));
  }

  readMessage(id: QueueId): Readable {
    assertQueueId(id);
    const location = this.#index.get(id);
    if (!location) return Readable.from(noSuchMessage(id));
    return Readable.from(streamMessage(this.#context.readHandles, location.segment.file, location, id));
  }

  /** Rejects for an id that is not in the spool (never stored, or removed). */
  async recordRecipientResults(id: QueueId, results: ReadonlyMap<number, RecipientResult>): Promise<void> {
    const location = this.#locate(id);
    if (!location) throw new Error(`no message ${id} in spool ${this.directory}`);
    return this.#track(location.segment.bucket.journal.append(encodeJournalRecord(id, results, this.#context.now())));
  }

  async remove(id: QueueId): Promise<void> {
    const location = this.#locate(id);
    if (!location) return; // never stored, or already removed
    location.removing ??= this.#track(this.#remove(id, location)).catch((error: unknown) => {
      location.removing = undefined;
      throw error;
    });
    return location.removing;
  }

  /** Messages stored before the call; one stored while it runs (a DSN, say) is the caller's to know of. */
  scan(): AsyncIterable<SpooledMessage> {
    this.#assertOpen();
    return scanSpool(this.#context, this.#buckets);
  }

  async close(): Promise<void> {
    this.#closed = true;
    // Work in flight can start more (an unlink, then a bucket deletion): wait until none is left.
    while (this.#inFlight.size > 0) await Promise.allSettled([...this.#inFlight]);
    this.#space?.close();
    await this.#buckets.closeFiles();
  }

  async #store(envelope: Omit<Envelope, 'size'>, chunks: readonly Buffer[], id: QueueId): Promise<SpooledMessage> {
    this.#assertOpen();
    assertQueueId(id);
    if (this.#index.has(id) || this.#storing.has(id)) throw new Error(`queue id ${id} is already in spool ${this.directory}`);
    this.#storing.add(id);
    const started = performance.now();
    const stored: Envelope = { ...envelope, size: chunks.reduce((total, chunk) => total + chunk.length, 0) };
    try {
      const bucket = await this.#buckets.enter(id);
      try {
        await new Promise<void>((resolve, reject) => {
          bucket.waiting.push({ id, envelope: stored, chunks, resolve, reject });
          if (!bucket.writing) void this.#writeBatches(bucket);
        });
      } finally {
        bucket.storing--;
      }
    } finally {
      this.#storing.delete(id);
    }
    this.#context.metrics?.spoolWriteSeconds.observe((performance.now() - started) / 1000);
    return { id, envelope: stored };
  }

  /** Writes the bucket's waiting stores, one batch after another, until none is left. */
  async #writeBatches(bucket: Bucket): Promise<void> {
    bucket.writing = true;
    while (bucket.waiting.length > 0) {
      const batch = takeBatch(bucket.waiting);
      try {
        await this.#writeBatch(bucket, batch);
        for (const store of batch) store.resolve();
      } catch (error) {
        for (const store of batch) store.reject(error);
      }
    }
    bucket.writing = false;
  }

  async #writeBatch(bucket: Bucket, stores: readonly PendingStore[]): Promise<void> {
    const segment = await this.#buckets.activeSegment(bucket);
    const { buffers, table } = encodeBatch(stores, segment.key);
    const offset = segment.size;
    try {
      await writeAll(segment.handle, buffers, offset);
    } catch (error) {
      // What reached the file is unknown. Cut it back (so a batch whose flush failed cannot come
      // back at the next open, to be delivered beside the client's retry); the segment takes no
      // more batches.
      await segment.handle.truncate(offset).then(() => segment.handle.datasync()).catch(() => undefined);
      this.#buckets.retire(segment);
      throw error;
    }
    this.#context.countFsync();
    segment.size += table.length;
    const batch: Batch = { offset, ids: table.entries.map((entry) => entry.id) };
    segment.batches.push(batch);
    bucket.segments.add(segment);
    for (const entry of table.entries) {
      this.#index.set(entry.id, messageLocation(segment, batch, offset, entry));
    }
    segment.live += table.entries.length;
    bucket.live += table.entries.length;
    this.#context.metrics?.spoolMessages.set(this.#index.size);
    if (segment.size >= SEGMENT_TARGET_BYTES) this.#buckets.retire(segment);
  }

  async #remove(id: QueueId, location: MessageLocation): Promise<void> {
    const { segment } = location;
    const { bucket } = segment;
    await bucket.journal.append(encodeRemovalRecord(id, this.#context.now()));
    this.#index.delete(id);
    this.#context.metrics?.spoolMessages.set(this.#index.size);
    segment.live--;
    bucket.live--;
    if (segment.live === 0 && segment !== bucket.active) this.#buckets.deleteSegment(segment);
    else this.#buckets.dropIfDone(bucket);
  }

  /** Where the message is; throws for a closed spool or a malformed id. */
  #locate(id: QueueId): MessageLocation | undefined {
    this.#assertOpen();
    assertQueueId(id);
    return this.#index.get(id);
  }

  #assertOpen(): void {
    if (this.#closed) throw new Error(`spool ${this.directory} is closed`);
  }

  #track<T>(operation: Promise<T>): Promise<T> {
    this.#inFlight.add(operation);
    const forget = (): void => {
      this.#inFlight.delete(operation);
    };
    operation.then(forget, forget);
    return operation;
  }
}

function assertQueueId(id: string): void {
  if (!isQueueId(id)) throw new Error(`not a queue id: ${JSON.stringify(id)}`);
}

/** The next batch: waiting stores in arrival order, within the batch bounds (at least one). */
function takeBatch(waiting: PendingStore[]): PendingStore[] {
  let bytes = 0;
  let buffers = 1; // the head
  let count = 0;
  for (const store of waiting) {
    if (count > 0 && (count >= BATCH_MAX_MESSAGES || bytes + store.envelope.size > BATCH_MAX_BYTES || buffers + store.chunks.length > BATCH_MAX_BUFFERS)) break;
    bytes += store.envelope.size;
    buffers += store.chunks.length;
    count++;
  }
  return waiting.splice(0, count);
}

/** A stream that fails as soon as it is read. */
async function* noSuchMessage(id: QueueId): AsyncGenerator<Buffer> {
  throw Object.assign(new Error(`no message ${id} in the spool`), { code: 'ENOENT' });
}
