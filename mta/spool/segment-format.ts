// The on-disk formats of the spool, kept apart from the file handling (mta/spool/spool.ts):
//
// Segment file `<name>.seg` — a header, then batches appended one after another, each one the
// stores of one group commit, written by a single O_DSYNC write and never modified afterwards:
//   header: "VMTSEG1 " + the segment's key (32 hex digits, random) + "\n"        (SEGMENT_HEADER_LENGTH bytes)
//   batch:  "VMTS1 " + table length (10 decimal digits) + " " + head MAC (16 hex digits) + "\n"
//           table JSON + "\n": {"m": [[id, envelope length, message length, message CRC-32], ...]}
//           the envelope JSONs, one after the other, in table order
//           the messages (headers + body, CRLF line ends), one after the other, in table order
// The head MAC is SHA-256 of the segment's key, the table and the envelopes, cut to 64 bits:
// a message body is stored as sent, so a client could put a well-formed batch in one; without the
// key it cannot make one that recovery accepts. A batch's length follows from its table, so the
// next batch starts where one ends. Envelopes come before the bodies, so one bounded read per batch
// gives every envelope of it (recovery and scan() do not read bodies) and a message is read by
// offset. A crash can tear only the last batch of a segment (a write starts only once the one
// before it is durable); the MAC and the CRC-32s reveal it.
// `head -c 4000 <file>` shows a human the header and the first batch's table and envelopes.
//
// Journal `results.j`, one per bucket directory — append-only; one record per
// recordRecipientResults() or remove() call (group commit: records of concurrent calls share one
// append):
//   "\n" + JSON {"id": queue id, "t": unix ms, "r": [[recipient index, status, nextAttemptAt, attempts, lastResult?], ...]} + "\n"
//   "\n" + JSON {"id": queue id, "t": unix ms, "x": 1} + "\n"            the message is removed
// attempts >= 0 sets the count; a negative value -k adds k to it (-1: the result of one more
// delivery attempt, the usual record, written without knowing the count so far).
// When the journal has grown well past what its messages need, it is compacted: rewritten with
// one folded record per live message and one removal record per removed message whose segment
// is still on disk (compactJournal), via temp file + rename.
// Each record starts and ends with a newline, so a record torn by a crash ends up on a line of
// its own and is skipped, every later record still parses, and nothing a torn append leaves
// behind can join a complete record's line. The latest record for a recipient wins.
import { createHash, randomBytes } from 'node:crypto';
import { crc32 } from 'node:zlib';
import { isQueueId } from './queue-id.ts';
import type { Envelope, QueueId, RecipientResult, RecipientStatus } from './types.ts';

const SEGMENT_MAGIC = 'VMTSEG1 ';
const KEY_BYTES = 16;
const SEGMENT_HEADER_PATTERN = new RegExp(`^${SEGMENT_MAGIC}([0-9a-f]{${2 * KEY_BYTES}})\\n$`);
export const SEGMENT_HEADER_LENGTH = SEGMENT_MAGIC.length + 2 * KEY_BYTES + 1;
export const MAGIC = 'VMTS1 ';
const LENGTH_DIGITS = 10;
const MAC_BYTES = 8;
const PREFIX_PATTERN = new RegExp(`^${MAGIC}(\\d{${LENGTH_DIGITS}}) ([0-9a-f]{${2 * MAC_BYTES}})\\n$`);
export const PREFIX_LENGTH = MAGIC.length + LENGTH_DIGITS + 1 + 2 * MAC_BYTES + 1;

/** A new segment's header and the key its batch heads are authenticated with. */
export function newSegmentHeader(): { header: Buffer; key: Buffer } {
  const key = randomBytes(KEY_BYTES);
  return { header: Buffer.from(`${SEGMENT_MAGIC}${key.toString('hex')}\n`, 'latin1'), key };
}

/** The key in a segment's header; throws when the bytes are not a segment header. */
export function segmentKey(header: Buffer): Buffer {
  const match = SEGMENT_HEADER_PATTERN.exec(header.toString('latin1', 0, SEGMENT_HEADER_LENGTH));
  if (!match) throw new BatchFormatError('not a spool segment header');
  return Buffer.from(match[1]!, 'hex');
}
/** First read of a batch: the table and envelopes of a typical batch. */
export const HEAD_PROBE_BYTES = 16 * 1024;

/** Bytes that are not a complete, intact batch: torn by a crash, or damaged. */
export class BatchFormatError extends Error {
  override name = 'BatchFormatError';
}

export interface BatchMessage {
  id: QueueId;
  envelope: Envelope;
  chunks: readonly Buffer[];
}

export interface BatchEntry {
  id: QueueId;
  /** Offsets from the start of the batch. */
  envelopeOffset: number;
  envelopeLength: number;
  messageOffset: number;
  messageLength: number;
  messageCrc: number;
}

export interface BatchTable {
  entries: BatchEntry[];
  /** Bytes from the start of the batch that hold the prefix, the table and every envelope. */
  envelopesEnd: number;
  /** Bytes of the whole batch. */
  length: number;
}

/** A batch ready to be written: its buffers in write order (message chunks are not copied) and its table. */
export function encodeBatch(messages: readonly BatchMessage[], key: Buffer): { buffers: Buffer[]; table: BatchTable } {
  const envelopes = messages.map((message) => JSON.stringify(message.envelope));
  const rows = messages.map((message, index): TableRow => [message.id, Buffer.byteLength(envelopes[index]!), message.envelope.size, message.chunks.reduce((crc, chunk) => crc32(chunk, crc), 0)]);
  const table = JSON.stringify({ m: rows }) + '\n';
  // Prefix, table and envelopes in one buffer: a batch stays within the vectored write's buffer limit.
  const tableLength = Buffer.byteLength(table);
  const head = Buffer.from(`${MAGIC}${String(tableLength).padStart(LENGTH_DIGITS, '0')} ${'0'.repeat(2 * MAC_BYTES)}\n${table}${envelopes.join('')}`);
  head.write(headMac(key, head.subarray(PREFIX_LENGTH)), PREFIX_LENGTH - 1 - 2 * MAC_BYTES, 'latin1');
  return { buffers: [head, ...messages.flatMap((message) => message.chunks)], table: layOut(rows, PREFIX_LENGTH + tableLength) };
}

/**
 * SHA-256 of key and data, cut to 64 bits: a secret-prefix MAC, five times cheaper than HMAC here.
 * Length extension, its known weakness, needs a valid tag to start from, and no tag ever leaves the
 * spool's files.
 */
function headMac(key: Buffer, tableAndEnvelopes: Buffer): string {
  return createHash('sha256').update(key).update(tableAndEnvelopes).digest().subarray(0, MAC_BYTES).toString('hex');
}

/** Length of the table after the prefix; throws when `head` does not start with a batch prefix. */
export function tableLength(head: Buffer): number {
  return parsePrefix(head).tableLength;
}

/** Parses the table; `head` (from the start of the batch) must hold at least PREFIX_LENGTH + tableLength(head) bytes. */
export function decodeBatchTable(head: Buffer): BatchTable {
  const tableEnd = PREFIX_LENGTH + tableLength(head);
  if (head.length < tableEnd) throw new BatchFormatError(`spool batch table is truncated (${head.length} of ${tableEnd} bytes)`);
  let table: { m?: unknown };
  try {
    table = JSON.parse(head.toString('utf8', PREFIX_LENGTH, tableEnd)) as { m?: unknown };
  } catch (error) {
    throw new BatchFormatError(`spool batch table is not JSON: ${(error as Error).message}`);
  }
  if (!Array.isArray(table.m) || !table.m.every(isTableRow)) throw new BatchFormatError('spool batch table is malformed');
  return layOut(table.m, tableEnd);
}

/**
 * Throws unless the table and envelopes in `head` (at least `table.envelopesEnd` bytes) match the
 * prefix MAC under the segment's key. Without a key (its header is damaged) nothing is checked here.
 */
export function verifyBatchHead(head: Buffer, table: BatchTable, key: Buffer | undefined): void {
  if (!key) return;
  const expected = parsePrefix(head).headMac;
  const actual = headMac(key, head.subarray(PREFIX_LENGTH, table.envelopesEnd));
  if (actual !== expected) throw new BatchFormatError(`spool batch head MAC mismatch (${actual}, expected ${expected})`);
}

type TableRow = [id: QueueId, envelopeLength: number, messageLength: number, messageCrc: number];

function isTableRow(row: unknown): row is TableRow {
  return Array.isArray(row) && typeof row[0] === 'string' && isQueueId(row[0]) && [row[1], row[2], row[3]].every((value) => Number.isSafeInteger(value) && (value as number) >= 0);
}

function layOut(rows: readonly TableRow[], tableEnd: number): BatchTable {
  let envelopeOffset = tableEnd;
  let messageOffset = tableEnd + rows.reduce((total, row) => total + row[1], 0);
  const envelopesEnd = messageOffset;
  const entries = rows.map(([id, envelopeLength, messageLength, messageCrc]) => {
    const entry = { id, envelopeOffset, envelopeLength, messageOffset, messageLength, messageCrc };
    envelopeOffset += envelopeLength;
    messageOffset += messageLength;
    return entry;
  });
  return { entries, envelopesEnd, length: messageOffset };
}

function parsePrefix(head: Buffer): { tableLength: number; headMac: string } {
  const text = head.toString('latin1', 0, PREFIX_LENGTH);
  const match = PREFIX_PATTERN.exec(text);
  if (!match) throw new BatchFormatError(`not a spool batch (prefix ${JSON.stringify(text)})`);
  return { tableLength: Number(match[1]), headMac: match[2]! };
}

/** Whether the bytes at `at` look like a batch prefix (before anything is read to check it). */
export function looksLikePrefix(bytes: Buffer, at: number): boolean {
  return PREFIX_PATTERN.test(bytes.toString('latin1', at, at + PREFIX_LENGTH));
}

export function decodeEnvelope(json: Buffer): Envelope {
  return JSON.parse(json.toString('utf8')) as Envelope;
}

export type JournalEntry = [index: number, status: RecipientStatus, nextAttemptAt: number, attempts: number, lastResult?: string];

const STATUSES: ReadonlySet<string> = new Set<RecipientStatus>(['pending', 'delivered', 'bounced']);

export function encodeJournalRecord(id: QueueId, results: ReadonlyMap<number, RecipientResult>, now: number): Buffer {
  const entries: JournalEntry[] = [];
  for (const [index, result] of results) {
    const entry: JournalEntry = [index, result.status, result.nextAttemptAt, result.attempts ?? -1];
    if (result.lastResult !== undefined) entry.push(result.lastResult);
    entries.push(entry);
  }
  return journalRecord({ id, t: now, r: entries });
}

/** A record on a line of its own: a newline before (ends a record torn by a crash) and after (so bytes a torn later append leaves cannot join it). */
function journalRecord(record: object): Buffer {
  return Buffer.from('\n' + JSON.stringify(record) + '\n');
}

export function encodeRemovalRecord(id: QueueId, now: number): Buffer {
  return journalRecord({ id, t: now, x: 1 });
}

function isJournalEntry(value: unknown): value is JournalEntry {
  return (
    Array.isArray(value) &&
    Number.isInteger(value[0]) &&
    typeof value[1] === 'string' &&
    STATUSES.has(value[1]) &&
    typeof value[2] === 'number' &&
    Number.isInteger(value[3]) &&
    (value[4] === undefined || typeof value[4] === 'string')
  );
}

export interface ParsedJournal {
  /** Recipient entries per queue id, in append order. */
  results: Map<QueueId, JournalEntry[]>;
  removed: Set<QueueId>;
}

/** Every complete record of a journal; torn records are skipped. */
export function parseJournal(journal: Buffer): ParsedJournal {
  const parsed: ParsedJournal = { results: new Map(), removed: new Set() };
  for (const line of journal.toString('utf8').split('\n')) {
    if (line === '') continue;
    let record: unknown;
    try {
      record = JSON.parse(line);
    } catch {
      continue;
    }
    const { id, r: entries, x: removed } = (record ?? {}) as { id?: unknown; r?: unknown; x?: unknown };
    if (typeof id !== 'string') continue;
    if (removed === 1) parsed.removed.add(id);
    if (!Array.isArray(entries)) continue;
    let list = parsed.results.get(id);
    if (!list) parsed.results.set(id, (list = []));
    for (const entry of entries) if (isJournalEntry(entry)) list.push(entry);
  }
  return parsed;
}

/** Applies journal entries (in order) to the envelope's recipients. */
export function applyJournal(envelope: Envelope, entries: readonly JournalEntry[]): void {
  for (const entry of entries) {
    const recipient = envelope.recipients[entry[0]];
    if (!recipient) continue;
    recipient.status = entry[1];
    recipient.nextAttemptAt = entry[2];
    recipient.attempts = entry[3] >= 0 ? entry[3] : recipient.attempts - entry[3];
    if (entry[4] === undefined) delete recipient.lastResult;
    else recipient.lastResult = entry[4];
  }
}

/** One entry per recipient with the same effect as all of the given entries applied in order. */
function foldEntries(entries: readonly JournalEntry[]): JournalEntry[] {
  const folded = new Map<number, JournalEntry>();
  for (const entry of entries) {
    const previous = folded.get(entry[0]);
    const attempts = entry[3] >= 0 || !previous ? entry[3] : previous[3] >= 0 ? previous[3] - entry[3] : previous[3] + entry[3];
    const next: JournalEntry = [entry[0], entry[1], entry[2], attempts];
    if (entry[4] !== undefined) next.push(entry[4]);
    folded.set(entry[0], next);
  }
  return [...folded.values()];
}

/** What a compacted journal must still say about a message: its results ('live'), that it is removed ('removed'), or nothing. */
export type JournalKeep = 'live' | 'removed' | undefined;

/** The journal rewritten as one folded record per live message and one removal record per message `keep` says is 'removed'. */
export function compactJournal(journal: Buffer, keep: (id: QueueId) => JournalKeep, now: number): Buffer {
  const { results, removed } = parseJournal(journal);
  const records: Buffer[] = [];
  for (const id of new Set([...results.keys(), ...removed])) {
    const wanted = keep(id);
    const entries = results.get(id) ?? [];
    if (wanted === 'live' && entries.length > 0) records.push(journalRecord({ id, t: now, r: foldEntries(entries) }));
    else if (wanted === 'removed') records.push(encodeRemovalRecord(id, now));
  }
  return Buffer.concat(records);
}
