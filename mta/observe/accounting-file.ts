// One accounting file on disk: lines are buffered and written in batches, each batch followed by
// fdatasync (group commit: a line waits at most `syncIntervalMs`), so a record is durable once
// its batch has synced. The file rotates by size and at each UTC multiple of an interval: the
// current file is renamed `<name>-<start time>.<ext>` (names that sort by time, before the
// current file's own name) and a fresh one started; rotated files past the retention bound (count
// or age) are deleted. A file with a header (CSV) starts with it, and one whose first line is not
// the current header (the columns changed) is rotated away before anything is appended. A last
// line a crash tore (a batch written in part) is cut off before appending (dropTornEnd), so the
// next record starts on a line of its own.
import { mkdir, open, readdir, rename, rm, stat, type FileHandle } from 'node:fs/promises';
import path from 'node:path';

export interface AccountingFileOptions {
  /** First line of every new file (CSV header), with its line end. */
  header?: string;
  maxBytes?: number;
  intervalMs?: number;
  maxFiles?: number;
  maxAgeMs?: number;
  syncIntervalMs: number;
  onError: (error: Error) => void;
  /** Told after each batch is synced, with the lines it held. */
  onSynced?: (lines: number) => void;
  now?: () => number;
}

/** Lines a batch holds before it is written without waiting for the timer. */
const BATCH_BYTES = 1024 * 1024;
const STAMP_PATTERN = '\\d{8}T\\d{9}Z';

export class AccountingFile {
  readonly #path: string;
  readonly #options: AccountingFileOptions;
  readonly #now: () => number;
  #pending: string[] = [];
  #pendingBytes = 0;
  #timer: NodeJS.Timeout | undefined;
  /** Told when the batch holding the lines pending now has been written (synced()). */
  #waiting: (() => void)[] = [];
  #chain: Promise<void> = Promise.resolve();
  #handle: FileHandle | undefined;
  #size = 0;
  #startedAt = 0;
  #lastStamp = 0;
  #closed = false;

  constructor(file: string, options: AccountingFileOptions) {
    this.#path = file;
    this.#options = options;
    this.#now = options.now ?? Date.now;
  }

  append(line: string): void {
    if (this.#closed) return;
    this.#pending.push(line);
    this.#pendingBytes += Buffer.byteLength(line);
    if (this.#pendingBytes >= BATCH_BYTES) void this.flush();
    else this.#timer ??= setTimeout(() => void this.flush(), this.#options.syncIntervalMs);
  }

  get path(): string {
    return this.#path;
  }

  /** Write and sync every line appended so far; resolves once they are durable (or their failure was reported). */
  flush(): Promise<void> {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    const lines = this.#pending;
    const waiting = this.#waiting;
    this.#pending = [];
    this.#pendingBytes = 0;
    this.#waiting = [];
    this.#chain = this.#chain.then(() => this.#writeBatch(lines)).catch((error: Error) => this.#options.onError(error));
    void this.#chain.then(() => waiting.forEach((resolve) => resolve()));
    return this.#chain;
  }

  /** Resolves once every line appended so far is durable (or its failure reported), in the batch it is in: no batch is written early. */
  synced(): Promise<void> {
    if (this.#pending.length === 0) return this.#chain;
    return new Promise((resolve) => this.#waiting.push(resolve));
  }

  async close(): Promise<void> {
    await this.flush();
    this.#closed = true;
    await this.#handle?.close().catch((error: Error) => this.#options.onError(error));
    this.#handle = undefined;
  }

  async #writeBatch(lines: readonly string[]): Promise<void> {
    if (lines.length === 0) return;
    await this.#open();
    const { maxBytes, intervalMs } = this.#options;
    if (intervalMs && this.#size > 0 && Math.floor(this.#startedAt / intervalMs) !== Math.floor(this.#now() / intervalMs)) await this.#rotate();
    let chunk: string[] = [];
    let chunkBytes = 0;
    for (const line of lines) {
      const bytes = Buffer.byteLength(line);
      if (maxBytes && this.#size + chunkBytes > this.#headerBytes() && this.#size + chunkBytes + bytes > maxBytes) {
        await this.#write(chunk);
        await this.#rotate();
        chunk = [];
        chunkBytes = 0;
      }
      chunk.push(line);
      chunkBytes += bytes;
    }
    await this.#write(chunk);
    this.#options.onSynced?.(lines.length);
  }

  async #write(lines: readonly string[]): Promise<void> {
    if (lines.length === 0) return;
    const text = lines.join('');
    const handle = await this.#open();
    await handle.write(text);
    await handle.datasync();
    this.#size += Buffer.byteLength(text);
  }

  #headerBytes(): number {
    return this.#options.header ? Buffer.byteLength(this.#options.header) : 0;
  }

  async #open(): Promise<FileHandle> {
    if (this.#handle) return this.#handle;
    await mkdir(path.dirname(this.#path), { recursive: true });
    const existing = await stat(this.#path).catch(() => undefined);
    let kept = 0;
    if (existing && existing.size > 0) {
      const startedAt = existing.birthtimeMs || existing.mtimeMs;
      if (await this.#startsWithHeader()) {
        kept = await dropTornEnd(this.#path, existing.size, this.#options.header !== undefined);
        this.#startedAt = startedAt;
      } else {
        await this.#renameCurrent(startedAt);
      }
    }
    await this.#create(kept);
    return this.#handle!;
  }

  async #startsWithHeader(): Promise<boolean> {
    const header = this.#options.header;
    if (!header) return true;
    const handle = await open(this.#path, 'r');
    try {
      const { bytesRead, buffer } = await handle.read(Buffer.alloc(Buffer.byteLength(header)), 0, Buffer.byteLength(header), 0);
      return buffer.subarray(0, bytesRead).toString('utf8') === header;
    } finally {
      await handle.close();
    }
  }

  /** Open the current file for appending; `size` is what it holds already (0 for a new one, which gets the header). */
  async #create(size: number): Promise<void> {
    this.#handle = await open(this.#path, 'a');
    this.#size = size;
    if (size > 0) return;
    this.#startedAt = this.#now();
    if (this.#options.header) {
      await this.#handle.write(this.#options.header);
      this.#size = this.#headerBytes();
    }
    await syncDirectory(path.dirname(this.#path));
  }

  async #rotate(): Promise<void> {
    await this.#handle?.close();
    this.#handle = undefined;
    await this.#renameCurrent(this.#startedAt);
    await this.#create(0);
    await this.#applyRetention().catch((error: Error) => this.#options.onError(error));
  }

  /** Rename the current file after its start time, made unique and increasing so names sort in rotation order. */
  async #renameCurrent(startedAt: number): Promise<void> {
    let stamp = Math.max(Math.floor(startedAt), this.#lastStamp + 1);
    while (await stat(this.#rotatedName(stamp)).then(() => true, () => false)) stamp += 1;
    this.#lastStamp = stamp;
    await rename(this.#path, this.#rotatedName(stamp));
  }

  #rotatedName(stamp: number): string {
    const { dir, name, ext } = path.parse(this.#path);
    return path.join(dir, `${name}-${formatStamp(stamp)}${ext}`);
  }

  /** Delete rotated files beyond maxFiles (oldest first) and those started before now - maxAge. */
  async #applyRetention(): Promise<void> {
    const { maxFiles, maxAgeMs } = this.#options;
    if (maxFiles === undefined && maxAgeMs === undefined) return;
    const rotated = await rotatedFiles(this.#path);
    const cutoff = maxAgeMs === undefined ? -Infinity : this.#now() - maxAgeMs;
    const keepFrom = maxFiles === undefined ? 0 : Math.max(0, rotated.length - maxFiles);
    for (const [index, file] of rotated.entries()) {
      if (index < keepFrom || file.startedAt < cutoff) await rm(file.path, { force: true });
    }
  }
}

/** The rotated files of `file`, oldest first. */
export async function rotatedFiles(file: string): Promise<{ path: string; startedAt: number }[]> {
  const { dir, name, ext } = path.parse(file);
  const pattern = new RegExp(`^${escapeRegExp(name)}-(${STAMP_PATTERN})${escapeRegExp(ext)}$`);
  const found: { path: string; startedAt: number }[] = [];
  for (const entry of (await readdir(dir)).sort()) {
    const match = pattern.exec(entry);
    if (match) found.push({ path: path.join(dir, entry), startedAt: parseStamp(match[1]!) });
  }
  return found;
}

/** Bytes read from a file's end to find its last line end. */
const TORN_WINDOW_BYTES = 256 * 1024;

/**
 * Cuts a torn last line off `file` (durably) and returns its size after: every batch ends with
 * a line end (LF for JSON, CRLF for CSV), so a file that does not was cut inside a batch, and
 * what follows its last line end is the part of a record that was written. A whole file, or a
 * longer one with no line end within the last TORN_WINDOW_BYTES, is left as is.
 */
export async function dropTornEnd(file: string, size: number, csv: boolean): Promise<number> {
  const lineEnd = csv ? '\r\n' : '\n';
  const end = await readFileEnd(file, size, TORN_WINDOW_BYTES);
  const text = end.toString('latin1'); // byte offsets: line ends are ASCII
  if (text.endsWith(lineEnd)) return size;
  const lastEnd = text.lastIndexOf(lineEnd);
  if (lastEnd < 0 && end.length < size) return size;
  const kept = lastEnd < 0 ? 0 : size - end.length + lastEnd + lineEnd.length; // no line end at all: a first line torn
  const handle = await open(file, 'r+');
  try {
    await handle.truncate(kept);
    await handle.datasync();
  } finally {
    await handle.close();
  }
  return kept;
}

/** The last `bytes` (at most) of a file of `size` bytes. */
export async function readFileEnd(file: string, size: number, bytes: number): Promise<Buffer> {
  const length = Math.min(size, bytes);
  const handle = await open(file, 'r');
  try {
    const buffer = Buffer.alloc(length);
    await handle.read(buffer, 0, length, size - length);
    return buffer;
  } finally {
    await handle.close();
  }
}

/** Makes a created or renamed entry of the directory durable. */
async function syncDirectory(directory: string): Promise<void> {
  const handle = await open(directory, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** 20261203T164800123Z: UTC to the millisecond, fixed width so names sort by time. */
function formatStamp(ms: number): string {
  return new Date(ms).toISOString().replace(/[-:.]/g, '');
}

function parseStamp(stamp: string): number {
  return Date.parse(`${stamp.slice(0, 4)}-${stamp.slice(4, 6)}-${stamp.slice(6, 8)}T${stamp.slice(9, 11)}:${stamp.slice(11, 13)}:${stamp.slice(13, 15)}.${stamp.slice(15, 18)}Z`);
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
