// What the spool's modules share: the names of its directories and files (layout described in
// mta/spool/spool.ts), the in-memory picture of them (buckets, segments, batches, where each
// message is) and the handful of file helpers every part of the spool uses.
import fsp from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from '../observe/log.ts';
import type { RelayMetrics } from '../observe/metrics.ts';
import type { DirectorySync, JournalAppender } from './group-commit.ts';
import type { SegmentReadHandles } from './segment-handles.ts';
import type { QueueIdGenerator } from './queue-id.ts';
import type { BatchMessage } from './segment-format.ts';
import type { QueueId } from './types.ts';

export const QUEUE_DIR = 'queue';
/** Copies of segments found damaged at open, kept for inspection. */
export const DAMAGED_DIR = 'damaged';
export const BUCKET_CHARS = 7;
/** Time one bucket spans: the last 3 of a queue id's 10 time characters (base 32, in ms) are below it. */
export const BUCKET_SPAN_MS = 32 ** 3;
export const SEGMENT_SUFFIX = '.seg';
/** Left by an interrupted journal compaction; deleted at open. */
export const TEMP_SUFFIX = '.tmp';
export const JOURNAL_FILE = 'results.j';
/** Batch heads scan() and open() read at the same time (enough to keep a network volume busy). */
export const SCAN_PARALLELISM = 16;

/** A store waiting for the next batch of its bucket. */
export interface PendingStore extends BatchMessage {
  resolve: () => void;
  reject: (error: unknown) => void;
}

/** One group commit's messages, where they start in their segment. */
export interface Batch {
  offset: number;
  ids: QueueId[];
}

export interface Segment {
  file: string;
  name: string;
  bucket: Bucket;
  batches: Batch[];
  /** Authenticates its batch heads (in its header); undefined for a segment found with its header damaged. */
  key: Buffer | undefined;
  /** Bytes of the header and complete batches; the next batch is written here. */
  size: number;
  /** Messages in it that are not removed. */
  live: number;
  /** Open (O_DSYNC) while the segment takes batches. */
  handle: fsp.FileHandle | undefined;
}

/** A segment taking batches: created by this process, so it has its key and an open handle. */
export interface OpenSegment extends Segment {
  key: Buffer;
  handle: fsp.FileHandle;
}

export interface MessageLocation {
  segment: Segment;
  batch: Batch;
  /** Byte offset of the message in the segment file. */
  offset: number;
  length: number;
  /** The message's CRC-32 as a signed 32-bit integer: a small integer to V8, not a boxed number per message. */
  crc: number;
  removing?: Promise<void>;
}

/** Where a batch table entry's message lies (the batch at `batchOffset` in `segment`). */
export function messageLocation(segment: Segment, batch: Batch, batchOffset: number, entry: { messageOffset: number; messageLength: number; messageCrc: number }): MessageLocation {
  return { segment, batch, offset: batchOffset + entry.messageOffset, length: entry.messageLength, crc: entry.messageCrc | 0 };
}

export interface Bucket {
  name: string;
  directory: string;
  /** Resolves once the bucket directory exists durably. */
  ready: Promise<void>;
  sync: DirectorySync;
  journal: JournalAppender;
  /** Segment files on disk that hold at least one batch. */
  segments: Set<Segment>;
  active: OpenSegment | undefined;
  /** An empty segment, durably created, to take over from the active one. */
  spare: Promise<OpenSegment> | undefined;
  /** Messages stored and not removed. */
  live: number;
  /** Stores admitted and not finished. */
  storing: number;
  /** Stores waiting for the next batch of this bucket. */
  waiting: PendingStore[];
  writing: boolean;
}

/** What the parts of one FileSpool share: where it is, its index of messages, and its services. */
export interface SpoolContext {
  directory: string;
  queueDir: string;
  metrics: RelayMetrics | undefined;
  logger: Logger | undefined;
  now: () => number;
  ids: QueueIdGenerator;
  queueDirSync: DirectorySync;
  /** Where every message not removed is. */
  index: Map<QueueId, MessageLocation>;
  countFsync: () => void;
  /** Registers work that close() waits for. */
  track: <T>(operation: Promise<T>) => Promise<T>;
  /** The disk is full under a journal append: free space from the reserve (mta/spool/disk-space.ts); false when none is left. */
  releaseSpace: () => Promise<boolean>;
  /** Segment files open for reading messages, shared and kept between reads. */
  readHandles: SegmentReadHandles;
}

/** The bucket directory of a queue id (or of the time part of one). */
export function bucketOf(id: string): string {
  return id.slice(0, BUCKET_CHARS);
}

export function byName(a: { name: string }, b: { name: string }): number {
  return a.name < b.name ? -1 : a.name > b.name ? 1 : 0;
}

export async function listBuckets(queueDir: string): Promise<string[]> {
  const entries = await fsp.readdir(queueDir, { withFileTypes: true });
  return entries
    .filter((entry) => entry.isDirectory() && entry.name.length === BUCKET_CHARS)
    .map((entry) => entry.name)
    .sort();
}

export async function readJournal(bucket: Bucket): Promise<Buffer> {
  return fsp.readFile(path.join(bucket.directory, JOURNAL_FILE)).catch((error: unknown) => {
    if (isNotFound(error)) return Buffer.alloc(0);
    throw error;
  });
}

/** Runs fn over every item, at most `limit` at a time. */
export async function forEachConcurrently<T>(items: readonly T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) await fn(items[next++]!);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

export function isNotFound(error: unknown): boolean {
  return (error as NodeJS.ErrnoException | null)?.code === 'ENOENT';
}
