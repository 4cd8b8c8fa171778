// FileSpool: the durable message store on a local file system (Haraka-style discipline).
//
// Layout under the spool directory:
//   queue/<bucket>/<id>       the message: a hard link to the batch file it was written in
//                             (envelopes + messages of one group commit, mta/spool/message-file.ts)
//   queue/<bucket>/<id>.j     append-only recipient journal (created by the first recorded result)
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
// complete, synced batch. A recorded result is fdatasynced into the journal (plus a directory
// fsync when the journal is created) before the call resolves.
// remove() unlinks the message and syncs the directory BEFORE unlinking the journal, so a message
// can never come back without the journal that says which recipients are done.
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import type { Logger } from '../observe/log.ts';
import type { RelayMetrics } from '../observe/metrics.ts';
import { DirectorySync } from './group-sync.ts';
import { applyJournal, type BatchMessage, type BatchTable, decodeBatchTable, decodeEnvelope, encodeBatch, encodeJournalRecord, HEAD_PROBE_BYTES, PREFIX_LENGTH, tableLength } from './message-file.ts';
import { encodeTime, isQueueId, QueueIdGenerator } from './queue-id.ts';
import type { Envelope, QueueId, RecipientResult, Spool, SpooledMessage } from './types.ts';

const QUEUE_DIR = 'queue';
const BUCKET_CHARS = 7;
const TEMP_SUFFIX = '.tmp';
const JOURNAL_SUFFIX = '.j';
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
  /** Per message, the tail of its chain of journal appends (they must not interleave). */
  readonly #journalWrites = new Map<QueueId, Promise<void>>();
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

  recordRecipientResults(id: QueueId, results: ReadonlyMap<number, RecipientResult>): Promise<void> {
    this.#assertOpen();
    const file = this.#messagePath(id);
    const previous = this.#journalWrites.get(id) ?? Promise.resolve();
    const write = previous.catch(() => undefined).then(() => this.#appendJournal(id, file + JOURNAL_SUFFIX, results));
    this.#journalWrites.set(id, write);
    const cleanup = (): void => {
      if (this.#journalWrites.get(id) === write) this.#journalWrites.delete(id);
    };
    write.then(cleanup, cleanup);
    return this.#track(write);
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
      const journals = new Set(names.filter((name) => name.endsWith(JOURNAL_SUFFIX)));
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
            this.#readBatchEnvelopes(bucketDir, id, present, journals, claimed).then((batch) => {
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
    const started = performance.now();
    this.#messagePath(id);
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

  async #appendJournal(id: QueueId, journal: string, results: ReadonlyMap<number, RecipientResult>): Promise<void> {
    const record = encodeJournalRecord(results, this.#now());
    let created = true;
    let handle: fsp.FileHandle;
    try {
      handle = await fsp.open(journal, 'ax');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
      created = false;
      handle = await fsp.open(journal, 'a');
    }
    try {
      await writeAll(handle, [record]);
      await handle.datasync();
      this.#countFsync();
    } finally {
      await handle.close();
    }
    if (created) await this.#bucketFor(id).sync.sync();
  }

  async #remove(id: QueueId): Promise<void> {
    this.#assertOpen();
    await this.#journalWrites.get(id)?.catch(() => undefined);
    const file = this.#messagePath(id);
    const bucketName = id.slice(0, BUCKET_CHARS);
    const bucket = this.#bucketFor(id);
    let existed = true;
    try {
      await fsp.unlink(file);
    } catch (error) {
      if (!isNotFound(error)) throw error;
      existed = false;
    }
    await bucket.sync.sync();
    await fsp.rm(file + JOURNAL_SUFFIX, { force: true });
    if (existed) bucket.files--;
    if (bucket.files <= 0 && bucketName < encodeTime(this.#now()).slice(0, BUCKET_CHARS)) this.#dropBucket(bucketName);
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
    journals: ReadonlySet<string>,
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
        if (journals.has(entry.id + JOURNAL_SUFFIX)) applyJournal(envelope, await fsp.readFile(path.join(bucketDir, entry.id + JOURNAL_SUFFIX)));
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
    const name = id.slice(0, BUCKET_CHARS);
    await this.#removingBuckets.get(name);
    const bucket = this.#bucketFor(id);
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

  #bucketFor(id: QueueId): Bucket {
    const name = id.slice(0, BUCKET_CHARS);
    let bucket = this.#buckets.get(name);
    if (!bucket) {
      const directory = path.join(this.#queueDir, name);
      bucket = { name, files: 0, ready: this.#createDirectory(directory), sync: new DirectorySync(directory, () => this.#countFsync()), waiting: [], writing: false };
      this.#buckets.set(name, bucket);
    }
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

  /** Deletes an emptied bucket of the past; a failure (e.g. a stray file) only leaves it for the next open. */
  #dropBucket(name: string): void {
    this.#buckets.delete(name);
    const removal = fsp
      .rmdir(path.join(this.#queueDir, name))
      .catch(() => undefined)
      .finally(() => this.#removingBuckets.delete(name));
    this.#removingBuckets.set(name, removal);
  }

  /** Startup: create the layout, delete temp files, orphaned journals and empty buckets, count messages per bucket. */
  async #recover(): Promise<void> {
    const created = !fs.existsSync(this.#queueDir);
    await fsp.mkdir(this.#queueDir, { recursive: true });
    if (created) await new DirectorySync(this.directory, () => this.#countFsync()).sync();
    let temps = 0;
    let orphans = 0;
    for (const name of await listBuckets(this.#queueDir)) {
      const bucketDir = path.join(this.#queueDir, name);
      const entries = await fsp.readdir(bucketDir);
      const ids = new Set(entries.filter(isQueueId));
      for (const entry of entries) {
        const isTemp = entry.endsWith(TEMP_SUFFIX);
        const isOrphan = entry.endsWith(JOURNAL_SUFFIX) && !ids.has(entry.slice(0, -JOURNAL_SUFFIX.length));
        if (isTemp || isOrphan) {
          await fsp.rm(path.join(bucketDir, entry), { force: true });
          if (isTemp) temps++;
          else orphans++;
        }
      }
      if (ids.size === 0) {
        await fsp.rmdir(bucketDir).catch(() => undefined);
        continue;
      }
      this.#buckets.set(name, { name, files: ids.size, ready: Promise.resolve(), sync: new DirectorySync(bucketDir, () => this.#countFsync()), waiting: [], writing: false });
    }
    if (temps || orphans) this.#logger?.info({ directory: this.directory, temps, orphans }, 'spool: removed leftovers of interrupted writes');
  }

  #messagePath(id: QueueId): string {
    if (!isQueueId(id)) throw new Error(`not a queue id: ${JSON.stringify(id)}`);
    return path.join(this.#queueDir, id.slice(0, BUCKET_CHARS), id);
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

async function listBuckets(queueDir: string): Promise<string[]> {
  const entries = await fsp.readdir(queueDir, { withFileTypes: true });
  return entries
    .filter((entry) => entry.isDirectory() && entry.name.length === BUCKET_CHARS)
    .map((entry) => entry.name)
    .sort();
}

async function writeAll(handle: fsp.FileHandle, chunks: readonly Buffer[]): Promise<void> {
  let remaining = chunks.filter((chunk) => chunk.length > 0);
  while (remaining.length > 0) {
    let { bytesWritten } = await handle.writev(remaining);
    const rest: Buffer[] = [];
    for (const chunk of remaining) {
      if (bytesWritten >= chunk.length) bytesWritten -= chunk.length;
      else {
        rest.push(chunk.subarray(bytesWritten));
        bytesWritten = 0;
      }
    }
    remaining = rest;
  }
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
