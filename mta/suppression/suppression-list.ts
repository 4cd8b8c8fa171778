// The pool's suppression list on the spool volume: addresses that hard-bounced or that an
// operator added, each with its reason, time and source, kept in memory for lookups at RCPT and
// in an append-only log `<spool>/state/suppression.log` (one JSON record a line, each line
// fsynced before the change is reported done; a record torn by a crash sits on a line of its own
// and is skipped). Removals are records too (tombstones), so a merge with a peer's list (see
// suppression-peers.ts) can tell "removed later" from "never heard of": for each address the
// record with the latest time wins. The log is compacted at open (one record per address,
// written to a temporary name, fsynced, renamed) once it holds many superseded records.
import { open, mkdir, readFile, rename, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { BOUNCE_CATEGORIES, type BounceCategory } from '../delivery/reply-classification.ts';

/** Why an address is suppressed: the bounce category of a hard bounce, or `operator` (added by hand). */
export type SuppressionReason = BounceCategory | 'operator';
export const SUPPRESSION_REASONS: readonly SuppressionReason[] = [...BOUNCE_CATEGORIES, 'operator'];

/** delivery: a hard bounce seen by a relay of the pool; admin: the admin API or `vmta suppression`. `origin` says which relay. */
export type SuppressionSource = 'delivery' | 'admin';

export interface SuppressionEntry {
  /** The address as it was added (domain lower-cased); matched without letter case. */
  address: string;
  reason: SuppressionReason;
  source: SuppressionSource;
  /** Unix ms of the addition. */
  addedAt: number;
  /** RFC 3463 status of the bounce (e.g. "5.1.1"), when it came from one. */
  status?: string;
  /** The remote reply of the bounce, or the operator's note. */
  detail?: string;
  /** Hostname of the relay where the entry was first made. */
  origin: string;
}

/** One change as logged and as exchanged with peers: an addition, or a removal (tombstone) of `address` at `at`. */
export type SuppressionRecord =
  | ({ op: 'add' } & SuppressionEntry)
  | { op: 'remove'; address: string; at: number; source: SuppressionSource; origin: string };

export const SUPPRESSION_LOG = 'suppression.log';
/** Compact at open when the log holds more than this many records per live address (and at least COMPACT_MIN). */
const COMPACT_RATIO = 2;
const COMPACT_MIN = 1000;

export function suppressionKey(address: string): string {
  return address.toLowerCase();
}

function recordTime(record: SuppressionRecord): number {
  return record.op === 'add' ? record.addedAt : record.at;
}

/** Whether `record` replaces `current` (a later time wins; at the same time an addition wins, so merges agree everywhere). */
function supersedes(record: SuppressionRecord, current: SuppressionRecord | undefined): boolean {
  if (!current) return true;
  const [time, currentTime] = [recordTime(record), recordTime(current)];
  if (time !== currentTime) return time > currentTime;
  return record.op === 'add' && current.op === 'remove';
}

const REASONS = new Set<string>(SUPPRESSION_REASONS);
const SOURCES = new Set<string>(['delivery', 'admin']);

/** A record read from the log or sent by a peer, or null when it is not one. */
export function parseSuppressionRecord(value: unknown): SuppressionRecord | null {
  if (typeof value !== 'object' || value === null) return null;
  const record = value as Record<string, unknown>;
  const text = (field: unknown, max: number) => typeof field === 'string' && field.length > 0 && field.length <= max;
  if (!text(record.address, 320) || !text(record.origin, 253) || !SOURCES.has(record.source as string)) return null;
  const base = { address: record.address as string, source: record.source as SuppressionSource, origin: record.origin as string };
  if (record.op === 'remove') return Number.isSafeInteger(record.at) ? { op: 'remove', ...base, at: record.at as number } : null;
  if (record.op !== 'add' || !REASONS.has(record.reason as string) || !Number.isSafeInteger(record.addedAt)) return null;
  if (record.status !== undefined && !(typeof record.status === 'string' && /^[245]\.\d{1,3}\.\d{1,3}$/.test(record.status))) return null;
  if (record.detail !== undefined && !(typeof record.detail === 'string' && record.detail.length <= 1000)) return null;
  return {
    op: 'add',
    ...base,
    reason: record.reason as SuppressionReason,
    addedAt: record.addedAt as number,
    ...(record.status !== undefined ? { status: record.status as string } : {}),
    ...(record.detail !== undefined ? { detail: record.detail as string } : {}),
  };
}

export class SuppressionList {
  readonly file: string;
  /** The latest record per address key (tombstones included). */
  readonly #records = new Map<string, SuppressionRecord>();
  #live = 0;
  #handle: FileHandle;
  /** Appends are chained: one at a time, in order. */
  #writing: Promise<void> = Promise.resolve();

  private constructor(file: string, handle: FileHandle) {
    this.file = file;
    this.#handle = handle;
  }

  /** Read `<stateDir>/suppression.log` (created when missing), compacting it when it has grown. */
  static async open(stateDir: string): Promise<SuppressionList> {
    await mkdir(stateDir, { recursive: true });
    const file = path.join(stateDir, SUPPRESSION_LOG);
    let text = '';
    try {
      text = await readFile(file, 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw new Error(`suppression list ${file}: cannot read it: ${(error as Error).message}`);
    }
    const records = new Map<string, SuppressionRecord>();
    let lines = 0;
    for (const line of text.split('\n')) {
      if (line === '') continue;
      let record: SuppressionRecord | null = null;
      try {
        record = parseSuppressionRecord(JSON.parse(line));
      } catch {
        // A line torn by a crash: the change it held was never reported done.
      }
      if (!record) continue;
      lines += 1;
      const key = suppressionKey(record.address);
      if (supersedes(record, records.get(key))) records.set(key, record);
    }
    if (lines >= COMPACT_MIN && lines > COMPACT_RATIO * records.size) await rewrite(file, [...records.values()]);
    const list = new SuppressionList(file, await open(file, 'a'));
    for (const [key, record] of records) list.#set(key, record);
    return list;
  }

  /** Entries in force (not removed). */
  get size(): number {
    return this.#live;
  }

  /** The entry suppressing `address`, if any. */
  lookup(address: string): SuppressionEntry | undefined {
    const record = this.#records.get(suppressionKey(address));
    return record?.op === 'add' ? entryOf(record) : undefined;
  }

  /** Entries in force, oldest first, optionally only those of one domain or one address. */
  entries(filter: { domain?: string; address?: string } = {}): SuppressionEntry[] {
    const domain = filter.domain?.toLowerCase();
    const address = filter.address === undefined ? undefined : suppressionKey(filter.address);
    const found: SuppressionEntry[] = [];
    for (const [key, record] of this.#records) {
      if (record.op !== 'add') continue;
      if (address !== undefined && key !== address) continue;
      if (domain !== undefined && key.slice(key.lastIndexOf('@') + 1) !== domain) continue;
      found.push(entryOf(record));
    }
    return found.sort((a, b) => a.addedAt - b.addedAt);
  }

  /** Every latest record, removals included: what a peer needs to merge this list into its own. */
  records(): SuppressionRecord[] {
    return [...this.#records.values()];
  }

  /**
   * Apply records (local changes or a peer's), durably: resolves once the ones that changed the
   * list are fsynced, with those records (a record older than what the list holds changes nothing).
   */
  async apply(records: readonly SuppressionRecord[]): Promise<SuppressionRecord[]> {
    const changed: SuppressionRecord[] = [];
    const previous = new Map<string, SuppressionRecord | undefined>();
    for (const record of records) {
      const key = suppressionKey(record.address);
      const current = this.#records.get(key);
      if (!supersedes(record, current)) continue;
      if (!previous.has(key)) previous.set(key, current);
      this.#set(key, record);
      changed.push(record);
    }
    if (changed.length === 0) return changed;
    const text = changed.map((record) => `\n${JSON.stringify(record)}\n`).join('');
    const write = this.#writing.then(async () => {
      await this.#handle.appendFile(text);
      await this.#handle.sync();
    });
    this.#writing = write.catch(() => undefined);
    try {
      await write;
    } catch (error) {
      // Not durable, so not done: the list goes back to what the log holds.
      for (const [key, record] of previous) {
        if (record) this.#set(key, record);
        else this.#unset(key);
      }
      throw new Error(`suppression list ${this.file}: cannot write it: ${(error as Error).message}`);
    }
    return changed;
  }

  async close(): Promise<void> {
    await this.#writing;
    await this.#handle.close();
  }

  #unset(key: string): void {
    if (this.#records.get(key)?.op === 'add') this.#live -= 1;
    this.#records.delete(key);
  }

  #set(key: string, record: SuppressionRecord): void {
    const before = this.#records.get(key)?.op === 'add';
    this.#records.set(key, record);
    this.#live += (record.op === 'add' ? 1 : 0) - (before ? 1 : 0);
  }
}

function entryOf(record: Extract<SuppressionRecord, { op: 'add' }>): SuppressionEntry {
  const { op: _op, ...entry } = record;
  return entry;
}

/** Replace the log by `records`: temporary file, fsync, rename, fsync of the directory. */
async function rewrite(file: string, records: readonly SuppressionRecord[]): Promise<void> {
  const temporary = `${file}.tmp`;
  const handle = await open(temporary, 'w');
  try {
    await handle.writeFile(records.map((record) => `${JSON.stringify(record)}\n`).join(''));
    await handle.sync();
  } finally {
    await handle.close();
  }
  await rename(temporary, file);
  const directory = await open(path.dirname(file), 'r');
  try {
    await directory.sync();
  } finally {
    await directory.close();
  }
}
