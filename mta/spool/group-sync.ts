// Group commit for directory fsyncs: every caller that asks for a directory to be synced gets a
// promise that resolves after an fsync which STARTED after its request. While one fsync is
// running, further requests wait together for the next one, so N concurrent stores into the
// same directory cost one or two directory fsyncs instead of N.
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
    // An fsync is in flight but may have started before our rename: join the one after it.
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
