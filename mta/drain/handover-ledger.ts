// The receiving side's memory of hand-overs it took: one line per hand-over key ("id#hop" and
// the Unix ms it was stored), appended and fsynced before the peer's 200, in
// `handover-received.log` beside the spool's queue directory. A sender that crashed after our
// 200 but before recording it sends the same key again; the ledger lets us answer "duplicate"
// even when the message was delivered and removed here since. Entries older than the retention
// are dropped when the ledger is opened (the file is rewritten then, atomically).
import { open, readFile, rename, type FileHandle } from 'node:fs/promises';
import path from 'node:path';

export const LEDGER_FILE = 'handover-received.log';
const DEFAULT_RETENTION_MS = 30 * 24 * 3600 * 1000;

export class HandoverLedger {
  readonly #keys: Map<string, number>;
  readonly #handle: FileHandle;
  #appending: Promise<void> = Promise.resolve();

  private constructor(keys: Map<string, number>, handle: FileHandle) {
    this.#keys = keys;
    this.#handle = handle;
  }

  static async open(spoolDirectory: string, options: { now?: number; retentionMs?: number } = {}): Promise<HandoverLedger> {
    const file = path.join(spoolDirectory, LEDGER_FILE);
    const oldest = (options.now ?? Date.now()) - (options.retentionMs ?? DEFAULT_RETENTION_MS);
    const keys = new Map<string, number>();
    let lines = 0;
    try {
      for (const line of (await readFile(file, 'utf8')).split('\n')) {
        // A line torn by a crash has no time (or a partial one): its hand-over was never answered.
        const match = /^(\S+) (\d+)$/.exec(line);
        if (!match) continue;
        lines += 1;
        const at = Number(match[2]);
        if (at >= oldest) keys.set(match[1]!, at);
      }
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
    }
    if (lines > keys.size) {
      const temporary = `${file}.tmp`;
      const rewrite = await open(temporary, 'w');
      try {
        await rewrite.writeFile([...keys].map(([key, at]) => `${key} ${at}\n`).join(''));
        await rewrite.sync();
      } finally {
        await rewrite.close();
      }
      await rename(temporary, file);
    }
    const handle = await open(file, 'a');
    // The file's name must be durable before a 200 relies on its content.
    const directory = await open(spoolDirectory, 'r');
    try {
      await directory.sync();
    } finally {
      await directory.close();
    }
    return new HandoverLedger(keys, handle);
  }

  has(key: string): boolean {
    return this.#keys.has(key);
  }

  /** Durably remember a key (resolves after fsync). */
  record(key: string, now = Date.now()): Promise<void> {
    if (this.#keys.has(key)) return Promise.resolve();
    this.#keys.set(key, now);
    const line = `${key} ${now}\n`;
    const appended = this.#appending.then(async () => {
      await this.#handle.appendFile(line);
      await this.#handle.datasync();
    });
    this.#appending = appended.catch(() => undefined);
    return appended.catch((error: unknown) => {
      this.#keys.delete(key);
      throw error;
    });
  }

  async close(): Promise<void> {
    await this.#appending;
    await this.#handle.close();
  }
}
