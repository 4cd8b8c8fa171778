// Group commit: operations that arrive while an fsync is running wait together for the next one,
// so N concurrent callers cost one or two fsyncs instead of N. Two forms: DirectorySync (make
// entries created, linked or removed in a directory durable) and JournalAppender (append records
// to a file and make them durable).
import fs from 'node:fs/promises';

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

interface PendingAppend {
  record: Buffer;
  resolve: () => void;
  reject: (error: unknown) => void;
}

/** Appends records to one file; a record is durable (fdatasynced, and the file's directory entry too) when append() resolves. */
export class JournalAppender {
  readonly #path: string;
  readonly #onFsync: () => void;
  readonly #syncDirectory: () => Promise<void>;
  #exists: boolean;
  #waiting: PendingAppend[] = [];
  #writing = false;

  /** `syncDirectory` makes the file's creation durable; it is called once, after the first append creates the file. */
  constructor(path: string, options: { exists: boolean; onFsync: () => void; syncDirectory: () => Promise<void> }) {
    this.#path = path;
    this.#exists = options.exists;
    this.#onFsync = options.onFsync;
    this.#syncDirectory = options.syncDirectory;
  }

  append(record: Buffer): Promise<void> {
    return new Promise((resolve, reject) => {
      this.#waiting.push({ record, resolve, reject });
      if (!this.#writing) void this.#writeAll();
    });
  }

  async #writeAll(): Promise<void> {
    this.#writing = true;
    while (this.#waiting.length > 0) {
      const group = this.#waiting;
      this.#waiting = [];
      try {
        const handle = await fs.open(this.#path, 'a');
        try {
          await writeAll(handle, group.map((pending) => pending.record));
          await handle.datasync();
          this.#onFsync();
        } finally {
          await handle.close();
        }
        if (!this.#exists) {
          await this.#syncDirectory();
          this.#exists = true;
        }
        for (const pending of group) pending.resolve();
      } catch (error) {
        for (const pending of group) pending.reject(error);
      }
    }
    this.#writing = false;
  }
}

/** Writes every byte of the buffers, in order, at the file position (vectored; short writes continued). */
export async function writeAll(handle: fs.FileHandle, chunks: readonly Buffer[]): Promise<void> {
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
