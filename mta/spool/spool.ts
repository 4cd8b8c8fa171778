// FileSpool: the durable message store on a local file system (Haraka-style discipline).
//
// Layout under the spool directory:
//   queue/<bucket>/<id>       the message: a hard link to the batch file it was written in
//                             (envelopes + messages of one group commit, mta/spool/message-file.ts)
//   queue/<bucket>/results.j  append-only journal of recipient results of the bucket's messages
//   queue/<bucket>/<id>.tmp   a batch being written; never read, deleted at open
// <id> is the queue id (mta/spool/queue-id.ts): it sorts by accept time, and <bucket> is its first
// 7 characters (a ~33 s slice of time), so an id alone locates its files, concurrent stores land
// in the same directory and share its fsyncs, and no directory grows without bound. A batch
// file's space is freed by the file system when the last of its messages is removed.
//
// Durability (group commit): stores that arrive while a batch is being written wait for the next
// batch, which writes all of them into one `<first id>.tmp`, fdatasyncs it once, links it as
// `<id>` for each of them, drops the temp name and fsyncs the directory once; only then do they
// resolve. On this kind of disk an fsync costs about the same for 10 KiB or 1 MiB, so N
// concurrent stores cost 2 fsyncs instead of 2N. A crash leaves either no link or a link to a
// complete, synced batch. Recorded results are group-committed the same way into the bucket's
// journal (one append + fdatasync for every result recorded meanwhile) before the calls resolve.
// remove() unlinks the message and syncs the directory; the journal keeps its records until the
// bucket's last message is gone, so a message can never come back without the records that say
// which recipients are done.
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import type { Logger } from '../observe/log.ts';
import type { RelayMetrics } from '../observe/metrics.ts';
import { DirectorySync, JournalAppender, writeAll } from './group-commit.ts';
import { applyJournal, type BatchMessage, compactJournal, type BatchTable, decodeBatchTable, decodeEnvelope, encodeBatch, encodeJournalRecord, HEAD_PROBE_BYTES, type JournalEntry, parseJournal, PREFIX_LENGTH, tableLength } from './message-file.ts';
import { encodeTime, isQueueId, QueueIdGenerator } from './queue-id.ts';
import type { Envelope, QueueId, RecipientResult, Spool, SpooledMessage } from './types.ts';

const QUEUE_DIR = 'queue';
const BUCKET_CHARS = 7;
const TEMP_SUFFIX = '.tmp';
const JOURNAL_FILE = 'results.j';
/** Batch files scan() reads at the same time (enough to keep a network volume busy). */
const SCAN_PARALLELISM = 16;
/** Bounds of one batch: a store beyond them waits for the next one. */
const BATCH_MAX_MESSAGES = 256;
const BATCH_MAX_BYTES = 32 * 1024 * 1024;
const READ_CHUNK_BYTES = 64 * 1024;

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

interface Bucket {
  name: string;
  /** Message files present or being stored. */
  files: number;
  /** Resolves once the bucket directory exists durably. */
  ready: Promise<void>;
  sync: DirectorySync;
  journal: JournalAppender;
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

  /** Opens (creating if needed) the spool in `directory`: deletes leftovers of interrupted stores and removes. */
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
    const file = this.#messagePath(id);
    return Readable.from(readMessageBytes(file, id));
  }

  /** Rejects for an id whose bucket holds no message (never stored, or removed with the rest of its bucket). */
  recordRecipientResults(id: QueueId, results: ReadonlyMap<number, RecipientResult>): Promise<void> {
    try {
      this.#assertOpen();
      assertQueueId(id);
    } catch (error) {
      return Promise.reject(error);
    }
    const bucket = this.#buckets.get(bucketOf(id));
    if (!bucket) return Promise.reject(new Error(`no message ${id} in spool ${this.directory}`));
    return this.#track(bucket.journal.append(encodeJournalRecord(id, results, this.#now())));
  }

  remove(id: QueueId): Promise<void> {
    return this.#track(this.#remove(id));
  }

  async *scan(): AsyncIterable<SpooledMessage> {
    this.#assertOpen();
    for (const bucket of await listBuckets(this.#queueDir)) {
      const bucketDir = path.join(this.#queueDir, bucket);
      let names: string[];
      try {
        names = await fsp.readdir(bucketDir);
      } catch (error) {
        if (isNotFound(error)) continue;
        throw error;
      }
      const journal = names.includes(JOURNAL_FILE) ? parseJournal(await fsp.readFile(path.join(bucketDir, JOURNAL_FILE))) : new Map<QueueId, JournalEntry[]>();
      const present = new Set(names.filter(isQueueId));
      const ids = [...present].sort();
      // One read returns every message of one batch file that is still present, and claims them,
      // so messages stored together cost one read. Messages of a batch have neighbouring ids, so
      // reads are started one batch length apart (the length of the last table seen); ids that
      // stride skips and no read claimed are picked up by a later pass.
      const claimed = new Set<QueueId>();
      let stride = 1;
      while (claimed.size < ids.length) {
        const reading: Promise<SpooledMessage[]>[] = [];
        const before = claimed.size;
        for (let index = 0; index < ids.length; ) {
          const id = ids[index] as QueueId;
          if (claimed.has(id)) {
            index++;
            continue;
          }
          reading.push(
            this.#readBatchEnvelopes(bucketDir, id, present, journal, claimed).then((batch) => {
              stride = Math.max(1, batch.tableSize);
              return batch.messages;
            }),
          );
          index += stride;
          if (reading.length >= SCAN_PARALLELISM) yield* (await reading.shift()) ?? [];
        }
        for (const read of reading) yield* await read;
        if (claimed.size === before) break; // nothing left that a read can claim
      }
    }
  }

  async close(): Promise<void> {
    this.#closed = true;
    await Promise.allSettled([...this.#inFlight]);
  }

  async #store(envelope: Omit<Envelope, 'size'>, chunks: readonly Buffer[], id: QueueId): Promise<SpooledMessage> {
    this.#assertOpen();
    assertQueueId(id);
    const started = performance.now();
    const stored: Envelope = { ...envelope, size: chunks.reduce((total, chunk) => total + chunk.length, 0) };
    const bucket = await this.#enterBucket(id);
    try {
      await new Promise<void>((resolve, reject) => {
        bucket.waiting.push({ id, envelope: stored, chunks, resolve, reject });
        if (!bucket.writing) void this.#writeBatches(bucket);
      });
    } catch (error) {
      bucket.files--;
      throw error;
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

  async #writeBatch(bucket: Bucket, batch: readonly PendingStore[]): Promise<void> {
    const first = batch[0];
    if (!first) return;
    const bucketDir = path.join(this.#queueDir, bucket.name);
    const temp = path.join(bucketDir, first.id + TEMP_SUFFIX);
    const linked: string[] = [];
    try {
      const handle = await fsp.open(temp, 'wx');
      try {
        await writeAll(handle, encodeBatch(batch));
        await handle.datasync();
        this.#countFsync();
      } finally {
        await handle.close();
      }
      await Promise.all(
        batch.map(async (store) => {
          const file = path.join(bucketDir, store.id);
          await fsp.link(temp, file);
          linked.push(file);
        }),
      );
      await fsp.unlink(temp);
      await bucket.sync.sync();
    } catch (error) {
      await Promise.all([temp, ...linked].map((file) => fsp.rm(file, { force: true }).catch(() => undefined)));
      throw error;
    }
  }

  async #remove(id: QueueId): Promise<void> {
    this.#assertOpen();
    const file = this.#messagePath(id);
    const bucketName = bucketOf(id);
    const bucket = this.#buckets.get(bucketName);
    if (!bucket) return; // its bucket is gone, so is the message
    let existed = true;
    try {
      await fsp.unlink(file);
    } catch (error) {
      if (!isNotFound(error)) throw error;
      existed = false;
    }
    await bucket.sync.sync();
    if (existed) bucket.files--;
    if (bucket.files <= 0 && bucketName < bucketOf(encodeTime(this.#now()))) this.#dropBucket(bucketName);
  }

  /**
   * The envelopes (with journal applied) of the messages present in the batch file `id` links to
   * that no other read has claimed yet; claims them. Unreadable files are logged and skipped,
   * claiming the id, so a scan never stops on one bad file.
   */
  async #readBatchEnvelopes(
    bucketDir: string,
    id: QueueId,
    present: ReadonlySet<string>,
    journal: ReadonlyMap<QueueId, readonly JournalEntry[]>,
    claimed: Set<QueueId>,
  ): Promise<{ messages: SpooledMessage[]; tableSize: number }> {
    const file = path.join(bucketDir, id);
    try {
      const handle = await fsp.open(file, 'r');
      const { head, table } = await readBatchHead(handle, file, 'envelopes').finally(() => handle.close());
      const messages: SpooledMessage[] = [];
      for (const entry of table.entries) {
        if (!present.has(entry.id) || claimed.has(entry.id)) continue;
        claimed.add(entry.id);
        const envelope = decodeEnvelope(head.subarray(entry.envelopeOffset, entry.envelopeOffset + entry.envelopeLength));
        applyJournal(envelope, journal.get(entry.id) ?? []);
        messages.push({ id: entry.id, envelope });
      }
      return { messages, tableSize: table.entries.length };
    } catch (error) {
      claimed.add(id);
      if (!isNotFound(error)) this.#logger?.error({ queueId: id, err: error }, 'unreadable spool message skipped');
      return { messages: [], tableSize: 1 };
    }
  }

  /** Reserves a place for one more message file in the id's bucket, creating the directory durably if needed. */
  async #enterBucket(id: QueueId): Promise<Bucket> {
    const name = bucketOf(id);
    await this.#removingBuckets.get(name);
    let bucket = this.#buckets.get(name);
    if (!bucket) {
      bucket = this.#newBucket(name, 0);
      this.#buckets.set(name, bucket);
    }
    bucket.files++;
    try {
      await bucket.ready;
    } catch (error) {
      bucket.files--;
      this.#buckets.delete(name);
      throw error;
    }
    return bucket;
  }

  /** A bucket found at open (`found`) or a new one, whose directory is created now. */
  #newBucket(name: string, files: number, found?: { hasJournal: boolean }): Bucket {
    const directory = path.join(this.#queueDir, name);
    const sync = new DirectorySync(directory, () => this.#countFsync());
    const journal = new JournalAppender(path.join(directory, JOURNAL_FILE), {
      exists: found?.hasJournal ?? false,
      onFsync: () => this.#countFsync(),
      syncDirectory: () => sync.sync(),
      compact: async (content) => {
        // Messages absent from the listing were unlinked before it; the sync makes that durable,
        // so their records can go (a message unlinked later is still listed and keeps them).
        const live = new Set((await fsp.readdir(directory)).filter(isQueueId));
        await sync.sync();
        return compactJournal(content, live, this.#now());
      },
      onCompactionError: (error) => this.#logger?.error({ directory, err: error }, 'spool journal compaction failed; journal kept as it was'),
    });
    const ready = found ? Promise.resolve() : this.#createDirectory(directory);
    return { name, files, ready, sync, journal, waiting: [], writing: false };
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

  /** Deletes an emptied bucket of the past; a failure (e.g. a stray file) only leaves it for the next open. */
  #dropBucket(name: string): void {
    this.#buckets.delete(name);
    const directory = path.join(this.#queueDir, name);
    const removal = fsp
      .rm(path.join(directory, JOURNAL_FILE), { force: true })
      .then(() => fsp.rmdir(directory))
      .catch(() => undefined)
      .finally(() => this.#removingBuckets.delete(name));
    this.#removingBuckets.set(name, removal);
    void this.#track(removal);
  }

  /** Startup: create the layout, delete temp files of interrupted batches and buckets with no message left, count messages per bucket. */
  async #recover(): Promise<void> {
    const created = !fs.existsSync(this.#queueDir);
    await fsp.mkdir(this.#queueDir, { recursive: true });
    if (created) await new DirectorySync(this.directory, () => this.#countFsync()).sync();
    let temps = 0;
    for (const name of await listBuckets(this.#queueDir)) {
      const bucketDir = path.join(this.#queueDir, name);
      const entries = await fsp.readdir(bucketDir);
      for (const entry of entries.filter((candidate) => candidate.endsWith(TEMP_SUFFIX))) {
        await fsp.rm(path.join(bucketDir, entry), { force: true });
        temps++;
      }
      const messages = entries.filter(isQueueId).length;
      if (messages === 0) {
        await fsp.rm(path.join(bucketDir, JOURNAL_FILE), { force: true });
        await fsp.rmdir(bucketDir).catch(() => undefined);
        continue;
      }
      this.#buckets.set(name, this.#newBucket(name, messages, { hasJournal: entries.includes(JOURNAL_FILE) }));
    }
    if (temps) this.#logger?.info({ directory: this.directory, temps }, 'spool: removed temp files of interrupted writes');
  }

  #messagePath(id: QueueId): string {
    assertQueueId(id);
    return path.join(this.#queueDir, bucketOf(id), id);
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

/** The next batch: waiting stores in arrival order, within the batch bounds (at least one). */
function takeBatch(waiting: PendingStore[]): PendingStore[] {
  let bytes = 0;
  let count = 0;
  for (const store of waiting) {
    if (count > 0 && (count >= BATCH_MAX_MESSAGES || bytes + store.envelope.size > BATCH_MAX_BYTES)) break;
    bytes += store.envelope.size;
    count++;
  }
  return waiting.splice(0, count);
}

/**
 * The start of a batch file and its table, with the bytes up to the end of the table ('table') or
 * of every envelope ('envelopes'): one read of HEAD_PROBE_BYTES for a typical batch, a second
 * when the table or envelopes are larger.
 */
async function readBatchHead(handle: fsp.FileHandle, file: string, upTo: 'table' | 'envelopes'): Promise<{ head: Buffer; table: BatchTable }> {
  let head = await readAt(handle, 0, HEAD_PROBE_BYTES);
  const tableEnd = PREFIX_LENGTH + tableLength(head);
  if (head.length < tableEnd) head = Buffer.concat([head, await readAt(handle, head.length, tableEnd - head.length)]);
  const table = decodeBatchTable(head);
  const needed = upTo === 'table' ? tableEnd : table.envelopesEnd;
  if (head.length < needed) head = Buffer.concat([head, await readAt(handle, head.length, needed - head.length)]);
  if (head.length < needed) throw new Error(`spool file ${file} is truncated (${head.length} of ${needed} bytes)`);
  return { head, table };
}

async function readAt(handle: fsp.FileHandle, position: number, length: number): Promise<Buffer> {
  const buffer = Buffer.allocUnsafe(length);
  const { bytesRead } = await handle.read(buffer, 0, length, position);
  return buffer.subarray(0, bytesRead);
}

async function* readMessageBytes(file: string, id: QueueId): AsyncGenerator<Buffer> {
  const handle = await fsp.open(file, 'r');
  try {
    const { table } = await readBatchHead(handle, file, 'table');
    const entry = table.entries.find((candidate) => candidate.id === id);
    if (!entry) throw new Error(`spool file ${file} does not hold message ${id}`);
    let position = entry.messageOffset;
    const end = entry.messageOffset + entry.messageLength;
    while (position < end) {
      const chunk = await readAt(handle, position, Math.min(READ_CHUNK_BYTES, end - position));
      if (chunk.length === 0) throw new Error(`spool file ${file} is truncated in message ${id}`);
      position += chunk.length;
      yield chunk;
    }
  } finally {
    await handle.close();
  }
}

function isNotFound(error: unknown): boolean {
  return (error as NodeJS.ErrnoException | null)?.code === 'ENOENT';
}
