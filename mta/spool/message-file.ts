// The on-disk formats of one spooled message, kept apart from the file handling:
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
// Recipient journal `<id>.j` — append-only, one record per recordRecipientResults() call:
//   "\n" + JSON {"t": unix ms, "r": [[recipient index, status, nextAttemptAt, attempts | null, lastResult?], ...]}
// attempts null means "one more attempt than before" (the usual result of a delivery attempt).
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

type JournalEntry = [index: number, status: RecipientStatus, nextAttemptAt: number, attempts: number | null, lastResult?: string];

const STATUSES: ReadonlySet<string> = new Set<RecipientStatus>(['pending', 'delivered', 'bounced']);

export function encodeJournalRecord(results: ReadonlyMap<number, RecipientResult>, now: number): Buffer {
  const entries: JournalEntry[] = [];
  for (const [index, result] of results) {
    const entry: JournalEntry = [index, result.status, result.nextAttemptAt, result.attempts ?? null];
    if (result.lastResult !== undefined) entry.push(result.lastResult);
    entries.push(entry);
  }
  return Buffer.from('\n' + JSON.stringify({ t: now, r: entries }));
}

function isJournalEntry(value: unknown): value is JournalEntry {
  return (
    Array.isArray(value) &&
    Number.isInteger(value[0]) &&
    typeof value[1] === 'string' &&
    STATUSES.has(value[1]) &&
    typeof value[2] === 'number' &&
    (value[3] === null || typeof value[3] === 'number') &&
    (value[4] === undefined || typeof value[4] === 'string')
  );
}

/** Applies every complete record of a journal to the envelope's recipients, in order; torn records are skipped. */
export function applyJournal(envelope: Envelope, journal: Buffer): void {
  for (const line of journal.toString('utf8').split('\n')) {
    if (line === '') continue;
    let record: unknown;
    try {
      record = JSON.parse(line);
    } catch {
      continue;
    }
    const entries = (record as { r?: unknown } | null)?.r;
    if (!Array.isArray(entries)) continue;
    for (const entry of entries) {
      if (!isJournalEntry(entry)) continue;
      const recipient = envelope.recipients[entry[0]];
      if (!recipient) continue;
      recipient.status = entry[1];
      recipient.nextAttemptAt = entry[2];
      recipient.attempts = entry[3] ?? recipient.attempts + 1;
      if (entry[4] === undefined) delete recipient.lastResult;
      else recipient.lastResult = entry[4];
    }
  }
}
