// The on-disk formats of the spool, kept apart from the file handling:
//
// Batch file — messages stored together by one group commit share one file, written once and
// never modified; every message of it has its own hard link `<id>` in the bucket directory:
//   "VMTB1 " + table length (10 decimal digits) + "\n"                  (PREFIX_LENGTH bytes)
//   table JSON + "\n": {"m": [[id, envelope length, message length], ...]}
//   the envelope JSONs, one after the other, in table order
//   the messages (headers + body, CRLF line ends), one after the other, in table order
// Envelopes come before the bodies, so one bounded read at the start of the file gives every
// envelope of a typical batch (scan() never reads a body) and readMessage() seeks to its body.
// `head -c 4000 <file>` shows a human the table and the envelopes.
//
// Recipient journal `results.j`, one per bucket directory — append-only, one record per
// recordRecipientResults() call (group commit: records of concurrent calls share one append):
//   "\n" + JSON {"id": queue id, "t": unix ms, "r": [[recipient index, status, nextAttemptAt, attempts, lastResult?], ...]}
// attempts >= 0 sets the count; a negative value -k adds k to it (-1: the result of one more
// delivery attempt, the usual record, written without knowing the count so far).
// When the journal has grown well past what its live messages need, it is compacted: rewritten
// with one folded record per live message (compactJournal), via temp file + rename.
// Each record starts with a newline, so a record torn by a crash ends up on a line of its own
// and is skipped, and every later record still parses. The latest record for a recipient wins.
import type { Envelope, QueueId, RecipientResult, RecipientStatus } from './types.ts';

const MAGIC = 'VMTB1 ';
const LENGTH_DIGITS = 10;
export const PREFIX_LENGTH = MAGIC.length + LENGTH_DIGITS + 1;
/** First read of scan() and readMessage(): the table and envelopes of a typical batch. */
export const HEAD_PROBE_BYTES = 16 * 1024;

export interface BatchMessage {
  id: QueueId;
  envelope: Envelope;
  chunks: readonly Buffer[];
}

export interface BatchEntry {
  id: QueueId;
  envelopeOffset: number;
  envelopeLength: number;
  messageOffset: number;
  messageLength: number;
}

export interface BatchTable {
  entries: BatchEntry[];
  /** Bytes from the start of the file that hold the table and every envelope. */
  envelopesEnd: number;
}

/** The buffers of a batch file, in write order (message chunks are not copied). */
export function encodeBatch(messages: readonly BatchMessage[]): Buffer[] {
  const envelopes = messages.map((message) => Buffer.from(JSON.stringify(message.envelope)));
  const table = Buffer.from(
    JSON.stringify({ m: messages.map((message, index) => [message.id, envelopes[index]?.length ?? 0, message.envelope.size]) }) + '\n',
  );
  const prefix = Buffer.from(`${MAGIC}${String(table.length).padStart(LENGTH_DIGITS, '0')}\n`, 'latin1');
  return [prefix, table, ...envelopes, ...messages.flatMap((message) => message.chunks)];
}

/** Length of the table after the prefix; throws when the file is not a spool batch file. */
export function tableLength(head: Buffer): number {
  const text = head.toString('latin1', 0, PREFIX_LENGTH);
  const digits = text.slice(MAGIC.length, MAGIC.length + LENGTH_DIGITS);
  if (text.length < PREFIX_LENGTH || !text.startsWith(MAGIC) || !text.endsWith('\n') || !/^\d+$/.test(digits)) {
    throw new Error(`not a spool batch file (prefix ${JSON.stringify(text)})`);
  }
  return Number(digits);
}

/** Parses the table; `head` must hold at least PREFIX_LENGTH + tableLength(head) bytes. */
export function decodeBatchTable(head: Buffer): BatchTable {
  const tableEnd = PREFIX_LENGTH + tableLength(head);
  if (head.length < tableEnd) throw new Error(`spool batch table is truncated (${head.length} of ${tableEnd} bytes)`);
  const table = JSON.parse(head.toString('utf8', PREFIX_LENGTH, tableEnd)) as { m?: unknown };
  if (!Array.isArray(table.m)) throw new Error('spool batch table has no message list');
  const rows = table.m as [QueueId, number, number][];
  let envelopeOffset = tableEnd;
  let messageOffset = tableEnd + rows.reduce((total, row) => total + row[1], 0);
  const envelopesEnd = messageOffset;
  const entries = rows.map(([id, envelopeLength, messageLength]) => {
    const entry = { id, envelopeOffset, envelopeLength, messageOffset, messageLength };
    envelopeOffset += envelopeLength;
    messageOffset += messageLength;
    return entry;
  });
  return { entries, envelopesEnd };
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
  return Buffer.from('\n' + JSON.stringify({ id, t: now, r: entries }));
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

/** The entries of every complete record of a journal, per queue id, in append order; torn records are skipped. */
export function parseJournal(journal: Buffer): Map<QueueId, JournalEntry[]> {
  const byId = new Map<QueueId, JournalEntry[]>();
  for (const line of journal.toString('utf8').split('\n')) {
    if (line === '') continue;
    let record: unknown;
    try {
      record = JSON.parse(line);
    } catch {
      continue;
    }
    const { id, r: entries } = (record ?? {}) as { id?: unknown; r?: unknown };
    if (typeof id !== 'string' || !Array.isArray(entries)) continue;
    let list = byId.get(id);
    if (!list) byId.set(id, (list = []));
    for (const entry of entries) if (isJournalEntry(entry)) list.push(entry);
  }
  return byId;
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

/** The journal rewritten with one folded record per message in `live`; records of other messages are dropped. */
export function compactJournal(journal: Buffer, live: ReadonlySet<string>, now: number): Buffer {
  const records: string[] = [];
  for (const [id, entries] of parseJournal(journal)) {
    if (live.has(id) && entries.length > 0) records.push('\n' + JSON.stringify({ id, t: now, r: foldEntries(entries) }));
  }
  return Buffer.from(records.join(''));
}
