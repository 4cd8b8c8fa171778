// The queue pauses set through the admin API, kept on the spool volume so they survive a restart
// (<spool>/state/queue-pauses.json): each change is written to a temporary name, fsynced, renamed
// over the file and the directory fsynced before the API answers, so a pause that was answered
// is never lost, and a crash mid-write leaves the previous list whole. The relay reads the list at
// start and hands it to the delivery engine before the spool is recovered, so a paused queue
// sends nothing in between. A file that cannot be read or parsed is set aside (".unreadable")
// with an error line, and the relay starts with no pause rather than not at all. On a full disk
// a save draws on the spool's reserve (withReserve), so a resume answered there still holds.
import { mkdir, open, readFile, rename } from 'node:fs/promises';
import path from 'node:path';
import { z } from 'zod';
import type { QueueSelector } from '../delivery/delivery-engine.ts';
import type { Logger } from '../observe/log.ts';
import { QueueSelectorBody } from './queue-api.ts';

export const QUEUE_PAUSES_FILE = 'queue-pauses.json';

const PauseFileBody = z.strictObject({
  version: z.literal(1),
  pauses: z.array(QueueSelectorBody.omit({ all: true })).max(10_000),
});

/** Runs a state write, giving it the spool's reserve while the disk is full (FileSpool.withReserve). */
export type ReserveWriter = <T>(write: () => Promise<T>) => Promise<T>;

export class QueuePauseFile {
  readonly file: string;
  readonly #logger: Logger;
  readonly #withReserve: ReserveWriter;
  /** Saves run one after another, so the last answer's list is the one on disk. */
  #saving: Promise<void> = Promise.resolve();

  constructor(stateDir: string, logger: Logger, withReserve: ReserveWriter = (write) => write()) {
    this.file = path.join(stateDir, QUEUE_PAUSES_FILE);
    this.#logger = logger;
    this.#withReserve = withReserve;
  }

  /** The pauses last saved; none when there is no file (or it is unreadable: then it is set aside). */
  async load(): Promise<QueueSelector[]> {
    let text: string;
    try {
      text = await readFile(this.file, 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
      return this.#setAside(error as Error);
    }
    let parsed;
    try {
      parsed = PauseFileBody.safeParse(JSON.parse(text));
    } catch (error) {
      return this.#setAside(error as Error);
    }
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      return this.#setAside(new Error(`${issue?.path.join('.') || '(root)'}: ${issue?.message ?? 'invalid'}`));
    }
    const pauses = parsed.data.pauses.map(({ virtualMta, domain }) => ({ ...(virtualMta ? { virtualMta } : {}), ...(domain ? { domain: domain.toLowerCase() } : {}) }));
    if (pauses.length > 0) this.#logger.info({ file: this.file, pauses }, `queue pauses restored: ${pauses.map(describePause).join(', ')}`);
    return pauses;
  }

  /** Replaces the saved list; resolves once it is durable. */
  save(pauses: QueueSelector[]): Promise<void> {
    const body = JSON.stringify({ version: 1, pauses }, null, 1);
    const next = this.#saving.catch(() => undefined).then(() => this.#withReserve(() => this.#write(body)));
    this.#saving = next;
    return next;
  }

  async #write(body: string): Promise<void> {
    const directory = path.dirname(this.file);
    await mkdir(directory, { recursive: true });
    const temporary = `${this.file}.tmp`;
    const handle = await open(temporary, 'w');
    try {
      await handle.writeFile(body);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(temporary, this.file);
    const directoryHandle = await open(directory, 'r');
    try {
      await directoryHandle.sync();
    } finally {
      await directoryHandle.close();
    }
  }

  async #setAside(error: Error): Promise<QueueSelector[]> {
    const aside = `${this.file}.unreadable`;
    await rename(this.file, aside).catch(() => undefined);
    this.#logger.error({ file: this.file, setAside: aside, err: error }, `queue pauses file unreadable (${error.message}); set aside as ${path.basename(aside)}, starting with no queue paused`);
    return [];
  }
}

export function describePause(pause: QueueSelector): string {
  if (pause.virtualMta && pause.domain) return `${pause.virtualMta}/${pause.domain}`;
  return pause.virtualMta ?? pause.domain ?? 'every queue';
}
