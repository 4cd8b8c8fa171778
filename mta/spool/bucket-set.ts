// The spool's buckets and their segments over their lifetime: a bucket directory created
// durably when a store first needs it, its active segment and the spare prepared to take over,
// segments retired once full and deleted once emptied, and a bucket of the past let go of and
// finally deleted whole. The journal of each bucket is compacted against the spool's index.
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { DirectorySync, JournalAppender, writeAll } from './group-commit.ts';
import { encodeTime } from './queue-id.ts';
import { compactJournal, type JournalKeep, newSegmentHeader } from './segment-format.ts';
import { type Bucket, BUCKET_SPAN_MS, bucketOf, isNotFound, JOURNAL_FILE, type OpenSegment, type Segment, SEGMENT_SUFFIX, type SpoolContext } from './spool-layout.ts';
import type { QueueId } from './types.ts';

export class BucketSet {
  readonly #context: SpoolContext;
  readonly #buckets = new Map<string, Bucket>();
  /** Bucket directories being deleted; a store into one waits for the deletion before recreating it. */
  readonly #removing = new Map<string, Promise<void>>();

  constructor(context: SpoolContext) {
    this.#context = context;
  }

  values(): IterableIterator<Bucket> {
    return this.#buckets.values();
  }

  /** Puts a bucket found at open into service. */
  add(bucket: Bucket): void {
    this.#buckets.set(bucket.name, bucket);
  }

  /** Admits one more store into the id's bucket, creating the bucket (and its directory, durably) if needed. */
  async enter(id: QueueId): Promise<Bucket> {
    const name = bucketOf(id);
    // Between here and the bucket lookup there must be no await: a deletion starting in that gap
    // would remove the directory under this store.
    for (let removal = this.#removing.get(name); removal; removal = this.#removing.get(name)) await removal;
    let bucket = this.#buckets.get(name);
    if (!bucket) {
      bucket = this.create(name);
      this.#buckets.set(name, bucket);
      // A new slice of time began: earlier buckets stop holding segments open, and go if emptied.
      for (const other of [...this.#buckets.values()]) if (other !== bucket) this.#settlePast(other);
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
  create(name: string, found?: { hasJournal: boolean }): Bucket {
    const context = this.#context;
    const directory = path.join(context.queueDir, name);
    const sync = new DirectorySync(directory, context.countFsync);
    const bucket: Bucket = {
      name,
      directory,
      ready: found ? Promise.resolve() : this.#createDirectory(directory),
      sync,
      journal: new JournalAppender(path.join(directory, JOURNAL_FILE), {
        exists: found?.hasJournal ?? false,
        onFsync: context.countFsync,
        syncDirectory: () => sync.sync(),
        compact: async (content) => {
          // Segments not on disk now were unlinked before this point; the fsync makes that durable,
          // so the removal records of their messages can go.
          const onDisk = new Set([...bucket.segments].flatMap((segment) => segment.batches.flatMap((batch) => batch.ids)));
          await sync.sync();
          const keep = (id: QueueId): JournalKeep => (context.index.has(id) ? 'live' : onDisk.has(id) ? 'removed' : undefined);
          return compactJournal(content, keep, context.now());
        },
        onCompactionError: (error) => context.logger?.error({ directory, err: error }, 'spool journal compaction failed; journal kept as it was'),
        onNoSpace: context.releaseSpace,
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

  /** The segment the bucket's next batch goes to; the spare takes over, and a new spare is started. */
  async activeSegment(bucket: Bucket): Promise<OpenSegment> {
    if (bucket.active) return bucket.active;
    const spare = bucket.spare;
    bucket.spare = undefined;
    // A spare that could not be prepared (logged then) is no reason to fail the batch: try afresh.
    const segment = (await spare?.catch(() => undefined)) ?? (await this.#createSegment(bucket));
    bucket.active = segment;
    const next = this.#context.track(this.#createSegment(bucket));
    next.catch((error: unknown) => this.#context.logger?.error({ directory: bucket.directory, err: error }, 'spool: preparing a spare segment failed; the next one is created when needed'));
    bucket.spare = next;
    return segment;
  }

  /** The segment takes no more batches; deleted now if nothing in it is left. */
  retire(segment: Segment): void {
    const { bucket, handle } = segment;
    if (bucket.active === segment) bucket.active = undefined;
    segment.handle = undefined;
    if (handle) void this.#context.track(handle.close());
    if (segment.live === 0) this.deleteSegment(segment);
  }

  /**
   * Unlinks a segment without a flush (the journal says its messages are removed). It leaves
   * `segments` only once it is gone, so compaction keeps the removal records while it may be on disk.
   */
  deleteSegment(segment: Segment): void {
    const { bucket } = segment;
    this.#context.readHandles.forget(segment.file);
    const unlinked = fsp.unlink(segment.file).then(
      () => true,
      (error: unknown) => {
        if (isNotFound(error)) return true;
        this.#context.logger?.error({ file: segment.file, err: error }, 'spool: deleting an emptied segment failed; the next open deletes it');
        return false;
      },
    );
    const settled = unlinked.then((gone) => {
      if (!gone) return;
      bucket.segments.delete(segment);
      this.dropIfDone(bucket);
    });
    void this.#context.track(settled);
  }

  /** Deletes the directory of a bucket of the past once nothing is stored or being stored in it. */
  dropIfDone(bucket: Bucket): void {
    if (bucket.live > 0 || bucket.storing > 0 || bucket.writing || bucket.waiting.length > 0) return;
    if (bucket.name >= bucketOf(encodeTime(this.#context.now())) || this.#buckets.get(bucket.name) !== bucket) return;
    this.#buckets.delete(bucket.name);
    const removal = this.#deleteFiles(bucket)
      .catch((error: unknown) => this.#context.logger?.warn({ directory: bucket.directory, err: error }, 'spool: deleting an emptied bucket failed; the next open deletes it'))
      .finally(() => {
        if (this.#removing.get(bucket.name) === removal) this.#removing.delete(bucket.name);
      });
    this.#removing.set(bucket.name, removal);
    void this.#context.track(removal);
  }

  /** Closes every open segment file (close() of the spool, once no work is in flight). */
  async closeFiles(): Promise<void> {
    await Promise.allSettled([...this.#buckets.values()].map((bucket) => bucket.journal.release()));
    const handles: (fsp.FileHandle | undefined)[] = [];
    for (const bucket of this.#buckets.values()) {
      handles.push(bucket.active?.handle, (await bucket.spare?.catch(() => undefined))?.handle);
    }
    await Promise.allSettled([...handles.map((handle) => handle?.close()), this.#context.readHandles.closeAll()]);
  }

  /** A new segment, its header written and its name durable, open for O_DSYNC writes. */
  async #createSegment(bucket: Bucket): Promise<OpenSegment> {
    await bucket.ready;
    const name = this.#context.ids.next();
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

  /**
   * A bucket of the past rarely takes another store (only one whose id was allocated before its
   * slice ended): its active segment is retired and its spare deleted, so file handles do not pile
   * up with the buckets a long queue spans. A late store creates a segment again.
   */
  #settlePast(bucket: Bucket): void {
    // The bucket just ended still takes the stores whose ids were allocated before it ended.
    if (bucket.name >= bucketOf(encodeTime(this.#context.now() - BUCKET_SPAN_MS)) || bucket.writing || bucket.waiting.length > 0) return;
    if (bucket.active) this.retire(bucket.active);
    void this.#context.track(this.#discardSpare(bucket));
    this.dropIfDone(bucket);
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

  /** Segments first, made durable by a directory fsync, then the journal that says their messages are removed. */
  async #deleteFiles(bucket: Bucket): Promise<void> {
    await bucket.journal.release(); // a compaction must not rename a journal back after it is deleted
    const active = bucket.active;
    bucket.active = undefined;
    await Promise.all([active?.handle?.close(), this.#discardSpare(bucket)]);
    for (const name of await fsp.readdir(bucket.directory)) {
      if (!name.endsWith(SEGMENT_SUFFIX)) continue;
      this.#context.readHandles.forget(path.join(bucket.directory, name));
      await fsp.rm(path.join(bucket.directory, name), { force: true });
    }
    await bucket.sync.sync();
    await fsp.rm(path.join(bucket.directory, JOURNAL_FILE), { force: true });
    await fsp.rmdir(bucket.directory);
  }

  async #createDirectory(directory: string): Promise<void> {
    try {
      await fsp.mkdir(directory);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'EEXIST') return;
      throw error;
    }
    await this.#context.queueDirSync.sync();
  }
}
