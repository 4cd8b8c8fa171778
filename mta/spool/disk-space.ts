// Free space on the spool's file system, and the reserve that lets the relay record what it
// delivered when that space runs out.
//
// - The floor (spool.minFreeBytes, like Postfix's queue_minfree): below it, MAIL FROM is answered
//   452 4.3.1 so clients take their mail elsewhere before a store could fail.
// - The reserve (spool.reserveBytes): a file `reserve` beside queue/ holding written (allocated,
//   not sparse) bytes. When a journal append finds the disk full, the reserve gives back a slice
//   (truncated) and the append is tried again, so a delivery's result and its message's removal are
//   recorded even on a full disk, and a delivered message is never sent again for want of space.
//   It grows back once space returns. It survives restarts: a relay started on a full disk still has it.
// - The hold: while the reserve has given back more than half and there is no free space to make
//   up for it, no delivery attempt starts (one in flight still records), so delivery stops before a
//   result could not be recorded; it starts again when space returns.
// Free space is read with statfs once a second (and after every release), into vmta_spool_free_bytes;
// a file system that reports no size at all (some FUSE ones) is not watched, and says so once.
import { randomBytes } from 'node:crypto';
import fsp from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from '../observe/log.ts';
import type { RelayMetrics } from '../observe/metrics.ts';

export const RESERVE_FILE = 'reserve';
/** The most the reserve gives back or takes again at a time. */
const STEP_BYTES = 256 * 1024;
const POLL_MS = 1000;

export interface SpaceLimits {
  /** Below this many free bytes, new mail is refused (452 at MAIL FROM). */
  minFreeBytes: number;
  /** Size of the reserve file kept for recording results on a full disk; 0 keeps none. */
  reserveBytes: number;
}

export interface DiskSpaceOptions {
  /** The spool directory (the reserve file lives in it). */
  directory: string;
  limits: SpaceLimits;
  metrics?: RelayMetrics;
  logger?: Logger;
  pollMs?: number;
}

export class SpoolDiskSpace {
  readonly #directory: string;
  readonly #file: string;
  readonly #metrics: RelayMetrics | undefined;
  readonly #logger: Logger | undefined;
  readonly #onResume = new Set<() => void>();
  #limits: SpaceLimits;
  #free = Number.POSITIVE_INFINITY;
  /** Bytes the reserve file holds now. */
  #reserve = 0;
  #held = false;
  /** The file system gives no size (statfs all zeros): nothing is refused or held for space. */
  #unmeasured = false;
  /** Serializes changes of the reserve file. */
  #busy: Promise<void> = Promise.resolve();
  #timer: NodeJS.Timeout | undefined;

  private constructor(options: DiskSpaceOptions) {
    this.#directory = options.directory;
    this.#file = path.join(options.directory, RESERVE_FILE);
    this.#metrics = options.metrics;
    this.#logger = options.logger;
    this.#limits = options.limits;
  }

  /** Reads free space, creates or completes the reserve (as far as space allows) and starts watching. */
  static async open(options: DiskSpaceOptions): Promise<SpoolDiskSpace> {
    const space = new SpoolDiskSpace(options);
    space.#reserve = await fsp.stat(space.#file).then((stat) => stat.size, () => 0);
    await space.refresh();
    space.#timer = setInterval(() => void space.refresh().catch((error: unknown) => space.#logger?.warn({ err: error }, 'spool: reading free space failed')), options.pollMs ?? POLL_MS);
    space.#timer.unref();
    return space;
  }

  get freeBytes(): number {
    return this.#free;
  }

  get reserveBytes(): number {
    return this.#reserve;
  }

  /** New limits from a reloaded config; the reserve follows at the next refresh. */
  setLimits(limits: SpaceLimits): void {
    this.#limits = limits;
  }

  /** Whether new mail may be accepted: free space at or above the floor. */
  hasRoomForMail(): boolean {
    return this.#free >= this.#limits.minFreeBytes;
  }

  /** Why no delivery attempt should start now (its result might not be recordable), or undefined. */
  deliveryHold(): string | undefined {
    return this.#held ? `the spool's disk is full (${this.#free} bytes free, reserve down to ${this.#reserve} of ${this.#limits.reserveBytes}); delivery waits until space returns` : undefined;
  }

  /** Called each time a hold ends, so waiting deliveries start. */
  onResume(listener: () => void): void {
    this.#onResume.add(listener);
  }

  /**
   * The disk is full under a journal append: give back a slice of the reserve. Resolves true when
   * space was freed (the append is worth trying again), false when the reserve is empty.
   */
  release(): Promise<boolean> {
    return this.#exclusive(async () => {
      if (this.#reserve === 0) return false;
      const size = Math.max(0, this.#reserve - STEP_BYTES);
      await fsp.truncate(this.#file, size);
      this.#logger?.warn({ reserveBytes: size, freedBytes: this.#reserve - size }, 'spool: disk full; reserve released to record delivery results');
      this.#reserve = size;
      await this.#readFree();
      return true;
    });
  }

  /** Reads free space, takes back what the reserve lacks when there is room for it, and updates the hold. */
  refresh(): Promise<void> {
    return this.#exclusive(async () => {
      await this.#readFree();
      await this.#restore();
    });
  }

  close(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
  }

  async #readFree(): Promise<void> {
    const stats = await fsp.statfs(this.#directory);
    if (stats.blocks === 0) {
      // Some FUSE file systems answer statfs with zeros: their free space is unknown, not none.
      if (!this.#unmeasured) this.#logger?.warn({ directory: this.#directory }, 'spool: its file system reports no size (statfs); free space is not watched');
      this.#unmeasured = true;
      this.#free = Number.POSITIVE_INFINITY;
      return;
    }
    this.#unmeasured = false;
    this.#free = stats.bavail * stats.bsize;
    this.#metrics?.spoolFreeBytes.set(this.#free);
    this.#metrics?.spoolReserveBytes.set(this.#reserve);
    const wanted = this.#limits.reserveBytes;
    const held = wanted > 0 && this.#reserve + this.#free < wanted / 2;
    if (held !== this.#held) {
      this.#held = held;
      if (held) this.#logger?.error({ freeBytes: this.#free, reserveBytes: this.#reserve }, 'spool: disk full and reserve spent; no delivery attempt starts until space returns');
      else {
        this.#logger?.info({ freeBytes: this.#free, reserveBytes: this.#reserve }, 'spool: space is back; delivery resumes');
        for (const listener of this.#onResume) listener();
      }
    }
  }

  /** Grows the reserve back a step at a time while twice that step is free; shrinks it to a smaller configured size. */
  async #restore(): Promise<void> {
    const wanted = this.#limits.reserveBytes;
    if (this.#reserve > wanted) {
      await fsp.truncate(this.#file, wanted);
      this.#reserve = wanted;
    }
    if (this.#reserve >= wanted || this.#free < 2 * Math.min(STEP_BYTES, wanted - this.#reserve)) return;
    const handle = await fsp.open(this.#file, 'a');
    try {
      while (this.#reserve < wanted && this.#free >= 2 * Math.min(STEP_BYTES, wanted - this.#reserve)) {
        const step = Math.min(STEP_BYTES, wanted - this.#reserve);
        // Random bytes: a compressing file system keeps zeros in no space at all.
        const { bytesWritten } = await handle.write(randomBytes(step)).catch(async (error: unknown) => {
          if ((error as NodeJS.ErrnoException).code !== 'ENOSPC') throw error;
          return { bytesWritten: -1 };
        });
        if (bytesWritten !== step) {
          await handle.truncate(this.#reserve); // a short write keeps no partial step
          break;
        }
        await handle.datasync();
        this.#reserve += step;
        await this.#readFree();
      }
    } finally {
      await handle.close();
    }
    this.#metrics?.spoolReserveBytes.set(this.#reserve);
  }

  #exclusive<T>(work: () => Promise<T>): Promise<T> {
    const run = this.#busy.then(work);
    this.#busy = run.then(
      () => undefined,
      () => undefined,
    );
    return run;
  }
}

export function isNoSpace(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException | null)?.code;
  return code === 'ENOSPC' || code === 'EDQUOT';
}

/** Runs `write`; while it fails with no space and `release` frees some, runs it again. */
export async function retryOnNoSpace<T>(write: () => Promise<T>, release: () => Promise<boolean>): Promise<T> {
  for (;;) {
    try {
      return await write();
    } catch (error) {
      if (!isNoSpace(error) || !(await release())) throw error;
    }
  }
}
