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
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import type { Logger } from '../observe/log.ts';
import type { RelayMetrics } from '../observe/metrics.ts';
import { DirectorySync, JournalAppender, writeAll } from './group-commit.ts';
import {
  applyJournal,
  BatchFormatError,
  type BatchMessage,
  type BatchTable,
  compactJournal,
  decodeEnvelope,
  encodeBatch,
  encodeJournalRecord,
  encodeRemovalRecord,
  type JournalKeep,
  newSegmentHeader,
  parseJournal,
  SEGMENT_HEADER_LENGTH,
  segmentKey,
} from './segment-format.ts';
import { findIntactBatch, readAt, readBatchHead, streamMessage, verifyBodies } from './segment-reader.ts';
import { encodeTime, isQueueId, QueueIdGenerator } from './queue-id.ts';
import type { Envelope, QueueId, RecipientResult, Spool, SpooledMessage } from './types.ts';

const QUEUE_DIR = 'queue';
/** Copies of segments found damaged at open, kept for inspection. */
const DAMAGED_DIR = 'damaged';
const BUCKET_CHARS = 7;
/** Time one bucket spans: the last 3 of a queue id's 10 time characters (base 32, in ms) are below it. */
const BUCKET_SPAN_MS = 32 ** 3;
const SEGMENT_SUFFIX = '.seg';
/** Left by an interrupted journal compaction; deleted at open. */
const TEMP_SUFFIX = '.tmp';
const JOURNAL_FILE = 'results.j';
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
/** Batch heads scan() reads at the same time (enough to keep a network volume busy). */
const SCAN_PARALLELISM = 16;

export interface FileSpoolOptions {
  metrics?: RelayMetrics;
  logger?: Logger;
  /** Clock for queue ids and journal records (tests). */
  now?: () => number;
}

interface PendingStore extends BatchMessage {
  resolve: () => void;
  reject: (error: unknown) => void;
}

/** One group commit's messages, where they start in their segment. */
interface Batch {
  offset: number;
  ids: QueueId[];
}

interface Segment {
  file: string;
  name: string;
  bucket: Bucket;
  batches: Batch[];
  /** Authenticates its batch heads (in its header); undefined for a segment found with its header damaged. */
  key: Buffer | undefined;
  /** Bytes of the header and complete batches; the next batch is written here. */
  size: number;
  /** Messages in it that are not removed. */
  live: number;
  /** Open (O_DSYNC) while the segment takes batches. */
  handle: fsp.FileHandle | undefined;
}

/** A segment taking batches: created by this process, so it has its key and an open handle. */
interface OpenSegment extends Segment {
  key: Buffer;
  handle: fsp.FileHandle;
}

interface MessageLocation {
  segment: Segment;
  batch: Batch;
  /** Byte offset of the message in the segment file. */
  offset: number;
  length: number;
  crc: number;
  removing?: Promise<void>;
}

interface Bucket {
  name: string;
  directory: string;
  /** Resolves once the bucket directory exists durably. */
  ready: Promise<void>;
  sync: DirectorySync;
  journal: JournalAppender;
  /** Segment files on disk that hold at least one batch. */
  segments: Set<Segment>;
  active: OpenSegment | undefined;
  /** An empty segment, durably created, to take over from the active one. */
  spare: Promise<OpenSegment> | undefined;
  /** Messages stored and not removed. */
  live: number;
  /** Stores admitted and not finished. */
  storing: number;
  /** Stores waiting for the next batch of this bucket. */
  waiting: PendingStore[];
  writing: boolean;
}

export class FileSpool implements Spool {
  readonly directory: string;
  readonly #queueDir: string;
  readonly #metrics: RelayMetrics | undefined;
  readonly #logger: Logger | undefined;
  readonly #now: () => number;
  readonly #ids: QueueIdGenerator;
  readonly #queueDirSync: DirectorySync;
  readonly #buckets = new Map<string, Bucket>();
  readonly #index = new Map<QueueId, MessageLocation>();
  /** Ids of stores not finished yet (a second store of one of them is refused). */
  readonly #storing = new Set<QueueId>();
  /** Bucket directories being deleted; a store into one waits for the deletion before recreating it. */
  readonly #removingBuckets = new Map<string, Promise<void>>();
  readonly #inFlight = new Set<Promise<unknown>>();
  #closed = false;

  private constructor(directory: string, options: FileSpoolOptions) {
    this.directory = directory;
    this.#queueDir = path.join(directory, QUEUE_DIR);
    this.#metrics = options.metrics;
    this.#logger = options.logger;
    this.#now = options.now ?? Date.now;
    this.#ids = new QueueIdGenerator(this.#now);
    this.#queueDirSync = new DirectorySync(this.#queueDir, () => this.#countFsync());
  }

  /** Opens (creating if needed) the spool in `directory`: finds every message, drops torn batches and what was removed. */
  static async open(directory: string, options: FileSpoolOptions = {}): Promise<FileSpool> {
    const spool = new FileSpool(path.resolve(directory), options);
    await spool.#recover();
    return spool;
  }

  allocateId(): QueueId {
    return this.#ids.next();
  }

  store(envelope: Omit<Envelope, 'size'>, message: Buffer | readonly Buffer[], id?: QueueId): Promise<SpooledMessage> {
    return this.#track(this.#store(envelope, Buffer.isBuffer(message) ? [message] : message, id ?? this.allocateId()));
  }

  readMessage(id: QueueId): Readable {
    assertQueueId(id);
    const location = this.#index.get(id);
    if (!location) return Readable.from(noSuchMessage(id));
    return Readable.from(streamMessage(location.segment.file, location, id));
  }

  /** Rejects for an id that is not in the spool (never stored, or removed). */
  async recordRecipientResults(id: QueueId, results: ReadonlyMap<number, RecipientResult>): Promise<void> {
    const location = this.#locate(id);
    if (!location) throw new Error(`no message ${id} in spool ${this.directory}`);
    return this.#track(location.segment.bucket.journal.append(encodeJournalRecord(id, results, this.#now())));
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
  async *scan(): AsyncIterable<SpooledMessage> {
    this.#assertOpen();
    const snapshot = [...this.#buckets.values()].sort(byName).map((bucket) => ({
      bucket,
      segments: [...bucket.segments].sort(byName).map((segment) => ({ segment, batches: segment.batches.slice() })),
    }));
    for (const { bucket, segments } of snapshot) {
      const journal = segments.length > 0 ? parseJournal(await readJournal(bucket)).results : new Map();
      for (const { segment, batches: all } of segments) {
        const batches = all.filter((batch) => batch.ids.some((id) => this.#index.get(id)?.batch === batch));
        if (batches.length === 0) continue;
        const handle = await fsp.open(segment.file, 'r');
        try {
          // Heads are read SCAN_PARALLELISM at a time and yielded in order.
          const reading: Promise<SpooledMessage[]>[] = [];
          for (const batch of batches) {
            const read = readBatchHead(handle, segment.file, batch.offset, segment.size, segment.key).then(({ head, table }) =>
              table.entries
                .filter((entry) => this.#index.get(entry.id)?.batch === batch)
                .flatMap((entry) => {
                  const envelope = this.#decodeEnvelope(head.subarray(entry.envelopeOffset, entry.envelopeOffset + entry.envelopeLength), entry.id, segment.file);
                  if (!envelope) return [];
                  applyJournal(envelope, journal.get(entry.id) ?? []);
                  return [{ id: entry.id, envelope }];
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

  async close(): Promise<void> {
    this.#closed = true;
    // Work in flight can start more (an unlink, then a bucket deletion): wait until none is left.
    while (this.#inFlight.size > 0) await Promise.allSettled([...this.#inFlight]);
    await Promise.allSettled([...this.#buckets.values()].map((bucket) => bucket.journal.idle()));
    const handles: (fsp.FileHandle | undefined)[] = [];
    for (const bucket of this.#buckets.values()) {
      handles.push(bucket.active?.handle, (await bucket.spare?.catch(() => undefined))?.handle);
    }
    await Promise.allSettled(handles.map((handle) => handle?.close()));
  }

  async #store(envelope: Omit<Envelope, 'size'>, chunks: readonly Buffer[], id: QueueId): Promise<SpooledMessage> {
    this.#assertOpen();
    assertQueueId(id);
    if (this.#index.has(id) || this.#storing.has(id)) throw new Error(`queue id ${id} is already in spool ${this.directory}`);
    this.#storing.add(id);
    const started = performance.now();
    const stored: Envelope = { ...envelope, size: chunks.reduce((total, chunk) => total + chunk.length, 0) };
    try {
      const bucket = await this.#enterBucket(id);
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
    this.#metrics?.spoolWriteSeconds.observe((performance.now() - started) / 1000);
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
    const segment = await this.#activeSegment(bucket);
    const { buffers, table } = encodeBatch(stores, segment.key);
    const offset = segment.size;
    try {
      await writeAll(segment.handle, buffers, offset);
    } catch (error) {
      // What reached the file is unknown. Cut it back (so a batch whose flush failed cannot come
      // back at the next open, to be delivered beside the client's retry); the segment takes no
      // more batches.
      await segment.handle.truncate(offset).then(() => segment.handle.datasync()).catch(() => undefined);
      this.#retire(segment);
      throw error;
    }
    this.#countFsync();
    segment.size += table.length;
    const batch: Batch = { offset, ids: table.entries.map((entry) => entry.id) };
    segment.batches.push(batch);
    bucket.segments.add(segment);
    for (const entry of table.entries) {
      this.#index.set(entry.id, { segment, batch, offset: offset + entry.messageOffset, length: entry.messageLength, crc: entry.messageCrc });
    }
    segment.live += table.entries.length;
    bucket.live += table.entries.length;
    this.#metrics?.spoolMessages.set(this.#index.size);
    if (segment.size >= SEGMENT_TARGET_BYTES) this.#retire(segment);
  }

  /** The segment the bucket's next batch goes to; the spare takes over, and a new spare is started. */
  async #activeSegment(bucket: Bucket): Promise<OpenSegment> {
    if (bucket.active) return bucket.active;
    const spare = bucket.spare;
    bucket.spare = undefined;
    // A spare that could not be prepared (logged then) is no reason to fail the batch: try afresh.
    const segment = (await spare?.catch(() => undefined)) ?? (await this.#createSegment(bucket));
    bucket.active = segment;
    const next = this.#track(this.#createSegment(bucket));
    next.catch((error: unknown) => this.#logger?.error({ directory: bucket.directory, err: error }, 'spool: preparing a spare segment failed; the next one is created when needed'));
    bucket.spare = next;
    return segment;
  }

  /** A new segment, its header written and its name durable, open for O_DSYNC writes. */
  async #createSegment(bucket: Bucket): Promise<OpenSegment> {
    await bucket.ready;
    const name = this.#ids.next();
    const file = path.join(bucket.directory, name + SEGMENT_SUFFIX);
    const { O_RDWR, O_CREAT, O_EXCL, O_DSYNC } = fs.constants;
    const handle = await fsp.open(file, O_RDWR | O_CREAT | O_EXCL | O_DSYNC, 0o600);
    const { header, key } = newSegmentHeader();
    try {
      await writeAll(handle, [header], 0);
      await bucket.sync.sync();
    } catch (error) {
      await handle.close();
      await fsp.rm(file, { force: true });
      throw error;
    }
    return { file, name, bucket, batches: [], key, size: header.length, live: 0, handle };
  }

  /** The segment takes no more batches; deleted now if nothing in it is left. */
  #retire(segment: Segment): void {
    const { bucket, handle } = segment;
    if (bucket.active === segment) bucket.active = undefined;
    segment.handle = undefined;
    if (handle) void this.#track(handle.close());
    if (segment.live === 0) this.#deleteSegment(segment);
  }

  async #remove(id: QueueId, location: MessageLocation): Promise<void> {
    const { segment } = location;
    const { bucket } = segment;
    await bucket.journal.append(encodeRemovalRecord(id, this.#now()));
    this.#index.delete(id);
    this.#metrics?.spoolMessages.set(this.#index.size);
    segment.live--;
    bucket.live--;
    if (segment.live === 0 && segment !== bucket.active) this.#deleteSegment(segment);
    else this.#dropBucketIfDone(bucket);
  }

  /**
   * Unlinks a segment without a flush (the journal says its messages are removed). It leaves
   * `segments` only once it is gone, so compaction keeps the removal records while it may be on disk.
   */
  #deleteSegment(segment: Segment): void {
    const { bucket } = segment;
    const unlinked = fsp.unlink(segment.file).then(
      () => true,
      (error: unknown) => {
        if (isNotFound(error)) return true;
        this.#logger?.error({ file: segment.file, err: error }, 'spool: deleting an emptied segment failed; the next open deletes it');
        return false;
      },
    );
    const settled = unlinked.then((gone) => {
      if (!gone) return;
      bucket.segments.delete(segment);
      this.#dropBucketIfDone(bucket);
    });
    void this.#track(settled);
  }

  /**
   * A bucket of the past rarely takes another store (only one whose id was allocated before its
   * slice ended): its active segment is retired and its spare deleted, so file handles do not pile
   * up with the buckets a long queue spans. A late store creates a segment again.
   */
  #settlePastBucket(bucket: Bucket): void {
    // The bucket just ended still takes the stores whose ids were allocated before it ended.
    if (bucket.name >= bucketOf(encodeTime(this.#now() - BUCKET_SPAN_MS)) || bucket.writing || bucket.waiting.length > 0) return;
    if (bucket.active) this.#retire(bucket.active);
    void this.#track(this.#discardSpare(bucket));
    this.#dropBucketIfDone(bucket);
  }

  /** Closes and deletes the bucket's spare segment, once it is ready (nothing, if preparing it failed). */
  async #discardSpare(bucket: Bucket): Promise<void> {
    const preparing = bucket.spare;
    bucket.spare = undefined; // at once, so no batch takes it meanwhile
    const spare = await preparing?.catch(() => undefined);
    if (!spare) return;
    await spare.handle.close();
    await fsp.rm(spare.file, { force: true });
  }

  /** Deletes the directory of a bucket of the past once nothing is stored or being stored in it. */
  #dropBucketIfDone(bucket: Bucket): void {
    if (bucket.live > 0 || bucket.storing > 0 || bucket.writing || bucket.waiting.length > 0) return;
    if (bucket.name >= bucketOf(encodeTime(this.#now())) || this.#buckets.get(bucket.name) !== bucket) return;
    this.#buckets.delete(bucket.name);
    const removal = this.#deleteBucketFiles(bucket)
      .catch((error: unknown) => this.#logger?.warn({ directory: bucket.directory, err: error }, 'spool: deleting an emptied bucket failed; the next open deletes it'))
      .finally(() => {
        if (this.#removingBuckets.get(bucket.name) === removal) this.#removingBuckets.delete(bucket.name);
      });
    this.#removingBuckets.set(bucket.name, removal);
    void this.#track(removal);
  }

  /** Segments first, made durable by a directory fsync, then the journal that says their messages are removed. */
  async #deleteBucketFiles(bucket: Bucket): Promise<void> {
    await bucket.journal.idle(); // a compaction must not rename a journal back after it is deleted
    const active = bucket.active;
    bucket.active = undefined;
    await Promise.all([active?.handle?.close(), this.#discardSpare(bucket)]);
    for (const name of await fsp.readdir(bucket.directory)) {
      if (name.endsWith(SEGMENT_SUFFIX)) await fsp.rm(path.join(bucket.directory, name), { force: true });
    }
    await bucket.sync.sync();
    await fsp.rm(path.join(bucket.directory, JOURNAL_FILE), { force: true });
    await fsp.rmdir(bucket.directory);
  }

  /** Admits one more store into the id's bucket, creating the bucket (and its directory, durably) if needed. */
  async #enterBucket(id: QueueId): Promise<Bucket> {
    const name = bucketOf(id);
    // Between here and the bucket lookup there must be no await: a deletion starting in that gap
    // would remove the directory under this store.
    for (let removal = this.#removingBuckets.get(name); removal; removal = this.#removingBuckets.get(name)) await removal;
    let bucket = this.#buckets.get(name);
    if (!bucket) {
      bucket = this.#newBucket(name);
      this.#buckets.set(name, bucket);
      // A new slice of time began: earlier buckets stop holding segments open, and go if emptied.
      for (const other of [...this.#buckets.values()]) if (other !== bucket) this.#settlePastBucket(other);
    }
    bucket.storing++;
    try {
      await bucket.ready;
    } catch (error) {
      bucket.storing--;
      if (this.#buckets.get(name) === bucket) this.#buckets.delete(name);
      throw error;
    }
    return bucket;
  }

  /** A bucket found at open (`found`) or a new one, whose directory is created now. */
  #newBucket(name: string, found?: { hasJournal: boolean }): Bucket {
    const directory = path.join(this.#queueDir, name);
    const sync = new DirectorySync(directory, () => this.#countFsync());
    const bucket: Bucket = {
      name,
      directory,
      ready: found ? Promise.resolve() : this.#createDirectory(directory),
      sync,
      journal: new JournalAppender(path.join(directory, JOURNAL_FILE), {
        exists: found?.hasJournal ?? false,
        onFsync: () => this.#countFsync(),
        syncDirectory: () => sync.sync(),
        compact: async (content) => {
          // Segments not on disk now were unlinked before this point; the fsync makes that durable,
          // so the removal records of their messages can go.
          const onDisk = new Set([...bucket.segments].flatMap((segment) => segment.batches.flatMap((batch) => batch.ids)));
          await sync.sync();
          const keep = (id: QueueId): JournalKeep => (this.#index.has(id) ? 'live' : onDisk.has(id) ? 'removed' : undefined);
          return compactJournal(content, keep, this.#now());
        },
        onCompactionError: (error) => this.#logger?.error({ directory, err: error }, 'spool journal compaction failed; journal kept as it was'),
      }),
      segments: new Set(),
      active: undefined,
      spare: undefined,
      live: 0,
      storing: 0,
      waiting: [],
      writing: false,
    };
    return bucket;
  }

  async #createDirectory(directory: string): Promise<void> {
    try {
      await fsp.mkdir(directory);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'EEXIST') return;
      throw error;
    }
    await this.#queueDirSync.sync();
  }

  /** Startup: create the layout, index every message not removed, delete what no longer holds one. */
  async #recover(): Promise<void> {
    await fsp.mkdir(this.#queueDir, { recursive: true });
    // Also when it exists: a process killed right after creating it may not have synced it.
    await new DirectorySync(this.directory, () => this.#countFsync()).sync();
    for (const name of await listBuckets(this.#queueDir)) {
      const entries = await fsp.readdir(path.join(this.#queueDir, name));
      const bucket = this.#newBucket(name, { hasJournal: entries.includes(JOURNAL_FILE) });
      const { removed } = parseJournal(await readJournal(bucket));
      let unknown = 0;
      for (const entry of entries) {
        if (entry.endsWith(TEMP_SUFFIX)) await fsp.rm(path.join(bucket.directory, entry), { force: true });
        else if (entry !== JOURNAL_FILE && !entry.endsWith(SEGMENT_SUFFIX)) {
          unknown++;
          this.#logger?.warn({ file: path.join(bucket.directory, entry) }, 'spool: unknown file left alone (not written by this version of the spool)');
        }
      }
      const segments = entries.filter((entry) => entry.endsWith(SEGMENT_SUFFIX));
      await forEachConcurrently(segments, SCAN_PARALLELISM, async (entry) => {
        const segment = await this.#loadSegment(bucket, entry, removed);
        if (segment.live === 0) await fsp.rm(segment.file, { force: true }); // a spare, every message removed, or only a torn batch
      });
      if (bucket.live > 0) {
        this.#buckets.set(name, bucket);
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
    await forEachConcurrently([...this.#buckets.values()], SCAN_PARALLELISM, (bucket) => bucket.sync.sync());
    await this.#queueDirSync.sync();
    this.#metrics?.spoolMessages.set(this.#index.size);
  }

  /**
   * Reads the batches of one segment and indexes their messages that the journal does not say are
   * removed. A batch that is not intact ends the segment when nothing intact follows it: that is the
   * last write, torn by a crash, and none of it had been acknowledged (the bodies of the last batch
   * are checked too, as a crash can tear them under an intact head). An intact batch after it means
   * damage (a bad sector, an edit): the segment is copied to `damaged/` for inspection, logged as an
   * error, and read on from there. Read errors (EIO) are thrown: open() fails rather than guess.
   */
  async #loadSegment(bucket: Bucket, name: string, removed: ReadonlySet<QueueId>): Promise<Segment> {
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
        const copy = await this.#keepDamaged(file, bucket.name);
        this.#logger?.error({ file, size, copy }, 'spool: segment header damaged; its batches are read with every body checked, up to the first that fails');
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
            const copy = checkingBodies ? await this.#keepDamaged(file, bucket.name) : undefined;
            this.#logger?.warn({ file, offset, size, copy, err: error }, 'spool: torn batch at the end of a segment ignored (a write a crash interrupted; none of it had been acknowledged)');
            break;
          }
          const copy = await this.#keepDamaged(file, bucket.name);
          this.#logger?.error({ file, offset, resumedAt: next, copy, err: error }, 'spool: damaged batch in a segment; its messages cannot be read, the batches after it are recovered');
          offset = next;
          continue;
        }
        const batch: Batch = { offset, ids: table.entries.map((entry) => entry.id) };
        segment.batches.push(batch);
        for (const entry of table.entries) {
          if (removed.has(entry.id) || this.#index.has(entry.id)) continue;
          this.#index.set(entry.id, { segment, batch, offset: offset + entry.messageOffset, length: entry.messageLength, crc: entry.messageCrc });
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
  async #keepDamaged(file: string, bucketName: string): Promise<string> {
    const directory = path.join(this.directory, DAMAGED_DIR);
    await fsp.mkdir(directory, { recursive: true });
    const copy = path.join(directory, `${bucketName}-${path.basename(file)}`);
    await fsp.copyFile(file, copy);
    return copy;
  }

  /** An envelope as stored; one that does not parse (which its head MAC makes all but impossible) is logged and skipped, not a failed scan. */
  #decodeEnvelope(json: Buffer, id: QueueId, file: string): Envelope | undefined {
    try {
      return decodeEnvelope(json);
    } catch (error) {
      this.#logger?.error({ queueId: id, file, err: error }, 'spool: envelope unreadable; message skipped');
      return undefined;
    }
  }

  /** Where the message is; throws for a closed spool or a malformed id. */
  #locate(id: QueueId): MessageLocation | undefined {
    this.#assertOpen();
    assertQueueId(id);
    return this.#index.get(id);
  }

  #countFsync(): void {
    this.#metrics?.spoolFsyncs.inc();
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

/** The bucket directory of a queue id (or of the time part of one). */
function bucketOf(id: string): string {
  return id.slice(0, BUCKET_CHARS);
}

function byName(a: { name: string }, b: { name: string }): number {
  return a.name < b.name ? -1 : a.name > b.name ? 1 : 0;
}

function assertQueueId(id: string): void {
  if (!isQueueId(id)) throw new Error(`not a queue id: ${JSON.stringify(id)}`);
}

async function listBuckets(queueDir: string): Promise<string[]> {
  const entries = await fsp.readdir(queueDir, { withFileTypes: true });
  return entries
    .filter((entry) => entry.isDirectory() && entry.name.length === BUCKET_CHARS)
    .map((entry) => entry.name)
    .sort();
}

async function readJournal(bucket: Bucket): Promise<Buffer> {
  return fsp.readFile(path.join(bucket.directory, JOURNAL_FILE)).catch((error: unknown) => {
    if (isNotFound(error)) return Buffer.alloc(0);
    throw error;
  });
}

/** Runs fn over every item, at most `limit` at a time. */
async function forEachConcurrently<T>(items: readonly T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) await fn(items[next++]!);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
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

function isNotFound(error: unknown): boolean {
  return (error as NodeJS.ErrnoException | null)?.code === 'ENOENT';
}
