// Group commit: operations that arrive while an fsync is running wait together for the next one,
// so N concurrent callers cost one or two fsyncs instead of N. Two forms: DirectorySync (make
// entries created, linked or removed in a directory durable) and JournalAppender (append records
// to a file and make them durable).
import fs from 'node:fs/promises';
import { isNoSpace } from './disk-space.ts';

export class DirectorySync {
  readonly #path: string;
  readonly #onFsync: () => void;
  #running: Promise<void> | undefined;
  #next: Promise<void> | undefined;

  constructor(path: string, onFsync: () => void) {
    this.#path = path;
    this.#onFsync = onFsync;
  }

  /** Resolves once every entry created, renamed or removed in the directory before this call is durable. */
  sync(): Promise<void> {
    if (!this.#running) {
      this.#running = this.#fsync().finally(() => {
        this.#running = undefined;
      });
      return this.#running;
    }
    // An fsync is in flight but may have started before our change: join the one after it.
    this.#next ??= this.#running.then(
      () => this.#startQueued(),
      () => this.#startQueued(),
    );
    return this.#next;
  }

  #startQueued(): Promise<void> {
    this.#next = undefined;
    return this.sync();
  }

  async #fsync(): Promise<void> {
    const handle = await fs.open(this.#path, 'r');
    try {
      await handle.sync();
      this.#onFsync();
    } finally {
      await handle.close();
    }
  }
}

/** The journal open for appending ('a': every write goes to the end) and its size. */
interface OpenJournal {
  handle: fs.FileHandle;
  size: number;
}

interface PendingAppend {
  record: Buffer;
  resolve: () => void;
  reject: (error: unknown) => void;
}

/**
 * How long the journal stays open after its last append: a spool appending a few groups a second
 * (low concurrency) paid an open, a stat and a close for each one otherwise.
 */
const KEEP_OPEN_MS = 2_000;

/** A journal is compacted once it is larger than this and than COMPACT_GROWTH times its last compacted size. */
const COMPACT_MIN_BYTES = 1024 * 1024;
const COMPACT_GROWTH = 4;

export interface JournalAppenderOptions {
  exists: boolean;
  onFsync: () => void;
  /** Makes the file's creation or replacement durable (fsync of its directory). */
  syncDirectory: () => Promise<void>;
  /** The journal's content rewritten to what still matters; appends wait while it runs. */
  compact: (journal: Buffer) => Promise<Buffer>;
  /** A failed compaction leaves the journal as it was; this reports why. */
  onCompactionError: (error: unknown) => void;
  /** The disk is full under an append: free some space (the spool's reserve); false when there is none left to free. */
  onNoSpace?: () => Promise<boolean>;
}

/**
 * Appends records to one file; a record is durable (fdatasynced, and the file's directory entry
 * too) when append() resolves. When the file has grown well past its last compacted size, it is
 * replaced by its compacted form (temp file, fdatasync, rename, directory fsync) between appends.
 */
export class JournalAppender {
  readonly #path: string;
  readonly #options: JournalAppenderOptions;
  #exists: boolean;
  #compactedSize = 0;
  #waiting: PendingAppend[] = [];
  #writing = false;
  /** The writer loop, while #writing (settled afterwards). */
  #running: Promise<void> = Promise.resolve();
  /** Kept open between writer loops for KEEP_OPEN_MS. */
  #file: OpenJournal | undefined;
  #closeTimer: NodeJS.Timeout | undefined;

  constructor(path: string, options: JournalAppenderOptions) {
    this.#path = path;
    this.#options = options;
    this.#exists = options.exists;
  }

  append(record: Buffer): Promise<void> {
    return new Promise((resolve, reject) => {
      this.#waiting.push({ record, resolve, reject });
      if (!this.#writing) {
        this.#writing = true;
        this.#running = this.#writeAll();
      }
    });
  }

  /** Waits for the appends and compaction running, then closes the file (the spool's close, or before the journal is deleted). */
  async release(): Promise<void> {
    await this.#running;
    clearTimeout(this.#closeTimer);
    const file = this.#file;
    this.#file = undefined;
    await file?.handle.close().catch(() => undefined);
  }

  /**
   * Writes the waiting groups one after the other. The file stays open, and its size known, for as
   * long as groups keep arriving and KEEP_OPEN_MS after (a busy spool appends many groups per
   * opening); it is closed after a failure, before a compaction replaces it, and by release().
   */
  async #writeAll(): Promise<void> {
    clearTimeout(this.#closeTimer);
    let file = this.#file;
    this.#file = undefined;
    try {
      while (this.#waiting.length > 0) {
        const group = this.#waiting;
        this.#waiting = [];
        try {
          file ??= await this.#open();
          await this.#appendGroup(file, group.map((pending) => pending.record));
          if (!this.#exists) {
            await this.#options.syncDirectory();
            this.#exists = true;
          }
          for (const pending of group) pending.resolve();
        } catch (error) {
          await file?.handle.close().catch(() => undefined);
          file = undefined;
          for (const pending of group) pending.reject(error);
          continue;
        }
        const size = file.size;
        if (size > Math.max(COMPACT_MIN_BYTES, COMPACT_GROWTH * this.#compactedSize)) {
          await file.handle.close();
          file = undefined;
          await this.#compact().catch((error: unknown) => {
            this.#compactedSize = size; // the next try waits until the journal has grown again (no retry on every append)
            this.#options.onCompactionError(error);
          });
        }
      }
    } finally {
      this.#writing = false;
      this.#file = file;
      const kept = file;
      if (kept) this.#closeTimer = setTimeout(() => void this.#closeIdle(kept), KEEP_OPEN_MS).unref();
    }
  }

  async #closeIdle(file: OpenJournal): Promise<void> {
    if (this.#writing || this.#file !== file) return;
    this.#file = undefined;
    await file.handle.close().catch(() => undefined);
  }

  async #open(): Promise<OpenJournal> {
    const handle = await fs.open(this.#path, 'a');
    try {
      return { handle, size: (await handle.stat()).size };
    } catch (error) {
      await handle.close();
      throw error;
    }
  }

  /**
   * Appends the records and flushes them; `file.size` follows. On a failure the file is cut back
   * to where it was (a record retried must never count twice: attempt counts add up); when the
   * disk was full and `onNoSpace` freed some space, the append is tried again.
   */
  async #appendGroup(file: OpenJournal, records: readonly Buffer[]): Promise<void> {
    const start = file.size;
    const length = records.reduce((total, record) => total + record.length, 0);
    for (;;) {
      try {
        await writeAll(file.handle, records);
        await file.handle.datasync();
        this.#options.onFsync();
        file.size = start + length;
        return;
      } catch (error) {
        const cutBack = await file.handle.truncate(start).then(() => file.handle.datasync()).then(() => true, () => false);
        if (!cutBack || !isNoSpace(error) || !this.#options.onNoSpace || !(await this.#options.onNoSpace())) throw error;
      }
    }
  }

  /** Until the rename, the old journal stays in force; a temp file left by a crash is deleted at the next open. */
  async #compact(): Promise<void> {
    const compacted = await this.#options.compact(await fs.readFile(this.#path));
    const temp = `${this.#path}.tmp`;
    const handle = await fs.open(temp, 'w');
    try {
      await writeAll(handle, [compacted]);
      await handle.datasync();
      this.#options.onFsync();
    } finally {
      await handle.close();
    }
    await fs.rename(temp, this.#path);
    this.#compactedSize = compacted.length;
    try {
      await this.#options.syncDirectory();
    } catch (error) {
      this.#exists = false; // the rename may not be durable: the next append syncs the directory before it resolves
      throw error;
    }
  }
}

/** Writes every byte of the buffers, in order (vectored; short writes continued), at `position` or else at the file position. */
export async function writeAll(handle: fs.FileHandle, chunks: readonly Buffer[], position?: number): Promise<void> {
  let remaining = chunks.filter((chunk) => chunk.length > 0);
  let at = position;
  while (remaining.length > 0) {
    let { bytesWritten } = await handle.writev(remaining, at);
    if (at !== undefined) at += bytesWritten;
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
