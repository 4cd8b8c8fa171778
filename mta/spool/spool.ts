// FileSpool: the durable message store on a local file system (Haraka-style discipline).
//
// Layout under the spool directory:
//   queue/<bucket>/<id>       message file: envelope header + message (mta/spool/message-file.ts)
//   queue/<bucket>/<id>.j     append-only recipient journal (created by the first recorded result)
//   queue/<bucket>/<id>.tmp   a store in progress; never read, deleted at open
// <id> is the queue id (mta/spool/queue-id.ts): it sorts by accept time, and <bucket> is its first
// 7 characters (a ~33 s slice of time), so an id alone locates its files, concurrent stores land
// in the same directory and share its fsyncs, and no directory grows without bound.
//
// Durability: store() writes `<id>.tmp`, fdatasyncs it, renames it to `<id>` and fsyncs the
// directory (group commit: one directory fsync covers every rename made before it started), so a
// crash leaves either nothing or the whole message. A recorded result is fdatasynced into the
// journal (plus a directory fsync when the journal is created) before the call resolves.
// remove() unlinks the message and syncs the directory BEFORE unlinking the journal, so a message
// can never come back without the journal that says which recipients are done.
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import type { Logger } from '../observe/log.ts';
import type { RelayMetrics } from '../observe/metrics.ts';
import { DirectorySync } from './group-sync.ts';
import { applyJournal, decodeEnvelope, encodeEnvelopeHeader, encodeJournalRecord, ENVELOPE_PROBE_BYTES, envelopeLength, PREFIX_LENGTH } from './message-file.ts';
import { encodeTime, isQueueId, QueueIdGenerator } from './queue-id.ts';
import type { Envelope, QueueId, RecipientResult, Spool, SpooledMessage } from './types.ts';

const QUEUE_DIR = 'queue';
const BUCKET_CHARS = 7;
const TEMP_SUFFIX = '.tmp';
const JOURNAL_SUFFIX = '.j';
/** Files scan() reads at the same time (enough to keep a network volume busy). */
const SCAN_PARALLELISM = 64;
const READ_CHUNK_BYTES = 64 * 1024;

export interface FileSpoolOptions {
  metrics?: RelayMetrics;
  logger?: Logger;
  /** Clock for queue ids and journal records (tests). */
  now?: () => number;
}

interface Bucket {
  /** Message files present or being stored. */
  files: number;
  /** Resolves once the bucket directory exists durably. */
  ready: Promise<void>;
  sync: DirectorySync;
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
    return Readable.from(readMessageBytes(file));
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
      const ids = names.filter(isQueueId).sort();
      const reading: Promise<SpooledMessage | undefined>[] = [];
      for (const id of ids) {
        reading.push(this.#readEnvelope(bucketDir, id, journals.has(id + JOURNAL_SUFFIX)));
        if (reading.length < SCAN_PARALLELISM) continue;
        const message = await reading.shift();
        if (message) yield message;
      }
      for (const read of reading) {
        const message = await read;
        if (message) yield message;
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
    const file = this.#messagePath(id);
    const size = chunks.reduce((total, chunk) => total + chunk.length, 0);
    const stored: Envelope = { ...envelope, size };
    const bucket = await this.#enterBucket(id);
    const temp = file + TEMP_SUFFIX;
    try {
      const handle = await fsp.open(temp, 'wx');
      try {
        await writeAll(handle, [encodeEnvelopeHeader(stored), ...chunks]);
        await handle.datasync();
        this.#countFsync();
      } finally {
        await handle.close();
      }
      await fsp.rename(temp, file);
      await bucket.sync.sync();
    } catch (error) {
      bucket.files--;
      await fsp.rm(temp, { force: true }).catch(() => undefined);
      throw error;
    }
    this.#metrics?.spoolWriteSeconds.observe((performance.now() - started) / 1000);
    return { id, envelope: stored };
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

  async #readEnvelope(bucketDir: string, id: QueueId, hasJournal: boolean): Promise<SpooledMessage | undefined> {
    const file = path.join(bucketDir, id);
    try {
      const head = await readHead(file, ENVELOPE_PROBE_BYTES);
      const length = envelopeLength(head);
      const json = head.length >= PREFIX_LENGTH + length ? head.subarray(PREFIX_LENGTH, PREFIX_LENGTH + length) : await readRange(file, PREFIX_LENGTH, length);
      const envelope = decodeEnvelope(json);
      if (hasJournal) applyJournal(envelope, await fsp.readFile(file + JOURNAL_SUFFIX));
      return { id, envelope };
    } catch (error) {
      if (isNotFound(error)) return undefined; // removed while the scan ran
      this.#logger?.error({ queueId: id, err: error }, 'unreadable spool message skipped');
      return undefined;
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
      bucket = { files: 0, ready: this.#createDirectory(directory), sync: new DirectorySync(directory, () => this.#countFsync()) };
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
      this.#buckets.set(name, { files: ids.size, ready: Promise.resolve(), sync: new DirectorySync(bucketDir, () => this.#countFsync()) });
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

async function* readMessageBytes(file: string): AsyncGenerator<Buffer> {
  const handle = await fsp.open(file, 'r');
  try {
    const prefix = Buffer.alloc(PREFIX_LENGTH);
    const { bytesRead: prefixBytes } = await handle.read(prefix, 0, PREFIX_LENGTH, 0);
    if (prefixBytes < PREFIX_LENGTH) throw new Error(`spool file ${file} is truncated`);
    let position = PREFIX_LENGTH + envelopeLength(prefix);
    for (;;) {
      const chunk = Buffer.allocUnsafe(READ_CHUNK_BYTES);
      const { bytesRead } = await handle.read(chunk, 0, READ_CHUNK_BYTES, position);
      if (bytesRead === 0) return;
      position += bytesRead;
      yield chunk.subarray(0, bytesRead);
    }
  } finally {
    await handle.close();
  }
}

/** Up to `bytes` from the start of a file, with the callback API (cheaper than FileHandle for 100 000 small reads). */
function readHead(file: string, bytes: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    fs.open(file, 'r', (openError, fd) => {
      if (openError) return reject(openError);
      const buffer = Buffer.allocUnsafe(bytes);
      fs.read(fd, buffer, 0, bytes, 0, (readError, bytesRead) => {
        fs.close(fd, () => (readError ? reject(readError) : resolve(buffer.subarray(0, bytesRead))));
      });
    });
  });
}

async function readRange(file: string, position: number, length: number): Promise<Buffer> {
  const handle = await fsp.open(file, 'r');
  try {
    const buffer = Buffer.alloc(length);
    const { bytesRead } = await handle.read(buffer, 0, length, position);
    if (bytesRead < length) throw new Error(`spool file ${file} is truncated (envelope needs ${length} bytes, ${bytesRead} present)`);
    return buffer;
  } finally {
    await handle.close();
  }
}

function isNotFound(error: unknown): boolean {
  return (error as NodeJS.ErrnoException | null)?.code === 'ENOENT';
}
