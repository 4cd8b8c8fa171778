// The on-disk formats of one spooled message, kept apart from the file handling:
//
// Message file `<id>` — written once, never modified:
//   "VMTA1 " + envelope length (10 decimal digits) + "\n"     (PREFIX_LENGTH bytes, fixed)
//   envelope JSON (as stored at accept time) + "\n"
//   message bytes (headers + body, CRLF line ends)
// The fixed prefix lets scan() read the envelope with one bounded read and readMessage() skip it
// without parsing; `head -c 2000 <file>` shows a human the envelope.
//
// Recipient journal `<id>.j` — append-only, one record per recordRecipientResults() call:
//   "\n" + JSON {"t": unix ms, "r": [[recipient index, status, nextAttemptAt, attempts | null, lastResult?], ...]}
// attempts null means "one more attempt than before" (the usual result of a delivery attempt).
// Each record starts with a newline, so a record torn by a crash ends up on a line of its own
// and is skipped, and every later record still parses. The latest record for a recipient wins.
import type { Envelope, RecipientResult, RecipientStatus } from './types.ts';

const MAGIC = 'VMTA1 ';
const LENGTH_DIGITS = 10;
export const PREFIX_LENGTH = MAGIC.length + LENGTH_DIGITS + 1;
/** First read of scan(): enough for the prefix and the envelope of a message with a few dozen recipients. */
export const ENVELOPE_PROBE_BYTES = 4096;

export function encodeEnvelopeHeader(envelope: Envelope): Buffer {
  const json = Buffer.from(JSON.stringify(envelope) + '\n');
  const prefix = `${MAGIC}${String(json.length).padStart(LENGTH_DIGITS, '0')}\n`;
  return Buffer.concat([Buffer.from(prefix, 'latin1'), json]);
}

/** Length in bytes of the envelope JSON (with its newline) that follows the prefix; throws when the file is not a spool file. */
export function envelopeLength(prefix: Buffer): number {
  const text = prefix.toString('latin1', 0, PREFIX_LENGTH);
  if (text.length < PREFIX_LENGTH || !text.startsWith(MAGIC) || !text.endsWith('\n')) {
    throw new Error(`not a spool message file (prefix ${JSON.stringify(text)})`);
  }
  const digits = text.slice(MAGIC.length, MAGIC.length + LENGTH_DIGITS);
  if (!/^\d+$/.test(digits)) throw new Error(`not a spool message file (length ${JSON.stringify(digits)})`);
  return Number(digits);
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
