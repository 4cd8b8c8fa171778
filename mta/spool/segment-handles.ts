// Read handles of segment files, kept open between the messages read from them: a delivery used to
// open its message's segment, read it and close it again, and at a few hundred messages a second
// the open and close cost the event loop more than the read (a CPU profile of `npm run bench`). A
// handle is shared by every read of its segment at once (positional reads), closed when its segment
// is deleted (at once, or after the last read of it ends), and the least recently used idle ones
// are closed beyond a bound, so a long queue over many segments holds few descriptors.
import fsp from 'node:fs/promises';

/** Idle read handles kept open at most (handles in use are never closed under a read). */
const MAX_IDLE_HANDLES = 64;

interface Entry {
  handle: Promise<fsp.FileHandle>;
  readers: number;
  /** Its segment was deleted: close after the last reader. */
  forgotten: boolean;
}

export interface SegmentRead {
  handle: fsp.FileHandle;
  /** Ends this read's use of the handle. */
  release(): void;
}

export class SegmentReadHandles {
  /** By file, least recently used first. */
  readonly #entries = new Map<string, Entry>();
  readonly #maxIdle: number;

  constructor(maxIdle = MAX_IDLE_HANDLES) {
    this.#maxIdle = maxIdle;
  }

  async acquire(file: string): Promise<SegmentRead> {
    let entry = this.#entries.get(file);
    if (entry) this.#entries.delete(file);
    else entry = { handle: fsp.open(file, 'r'), readers: 0, forgotten: false };
    this.#entries.set(file, entry);
    entry.readers++;
    const used = entry;
    let handle: fsp.FileHandle;
    try {
      handle = await used.handle;
    } catch (error) {
      used.readers--;
      if (this.#entries.get(file) === used) this.#entries.delete(file);
      throw error;
    }
    this.#closeIdleBeyondBound();
    let released = false;
    return {
      handle,
      release: () => {
        if (released) return;
        released = true;
        used.readers--;
        if (used.readers === 0 && used.forgotten) void close(used);
        else this.#closeIdleBeyondBound();
      },
    };
  }

  /** The segment is being deleted: its handle closes now, or when its last read ends. */
  forget(file: string): void {
    const entry = this.#entries.get(file);
    if (!entry) return;
    this.#entries.delete(file);
    entry.forgotten = true;
    if (entry.readers === 0) void close(entry);
  }

  /** Closes every handle (the spool's close, once no read is in flight). */
  async closeAll(): Promise<void> {
    const entries = [...this.#entries.values()];
    this.#entries.clear();
    await Promise.all(entries.map(close));
  }

  get open(): number {
    return this.#entries.size;
  }

  #closeIdleBeyondBound(): void {
    let idle = 0;
    for (const entry of this.#entries.values()) if (entry.readers === 0) idle++;
    for (const [file, entry] of this.#entries) {
      if (idle <= this.#maxIdle) return;
      if (entry.readers > 0) continue;
      this.#entries.delete(file);
      idle--;
      void close(entry);
    }
  }
}

function close(entry: Entry): Promise<void> {
  return entry.handle.then((handle) => handle.close()).catch(() => undefined);
}
