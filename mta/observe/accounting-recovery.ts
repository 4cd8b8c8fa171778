// After a crash: the final accounting records (d, b) the spool proves were made but the last
// unsynced batch of a file may have lost. A final recipient in the spool keeps the time its
// record was made (its nextAttemptAt; 0 when this pod wrote none), and the spool removes a
// finished message only once its final records are synced (outcome-recorder.ts). The tail of
// each file (its last TAIL_BYTES, reaching into the newest rotated files when the current one is
// shorter) holds every record made since its oldest attempt record: a recipient finalised after that
// (with RECORD_ORDER_SLACK_MS for records appended out of time order) whose record is not there
// lost it, and gets one rebuilt from what the spool keeps (recipient, status, attempts, the last
// reply, as its diagnostic and status code, the time), written to that file only; the MX host,
// TLS and duration the spool does not keep are null or 0. A file with no record restores nothing.
import { stat } from 'node:fs/promises';
import type { Envelope, QueueId } from '../spool/types.ts';
import { readFileEnd, rotatedFiles } from './accounting-file.ts';
import { CSV_COLUMN_NAMES, messageFields, type AccountingRecord, type AccountingScope } from './accounting-record.ts';
import type { AccountingOutput } from './accounting.ts';

const TAIL_BYTES = 32 * 1024 * 1024;
/** Records reach a file in the order they are made to within this (a spool write, a DSN between). */
const RECORD_ORDER_SLACK_MS = 5_000;
/** A CSV row's start: the record type, then PowerMTA's timeLogged. */
const CSV_ROW_START = /\r\n(?=[rdbt],\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\+0000,)/g;

/** A file's tail: the (queue id, recipient) pairs with a final record there, and the time of its oldest attempt record. */
export interface AccountingTail {
  keys: Set<string>;
  oldest: number | undefined;
}

const keyOf = (queueId: string, recipient: string): string => `${queueId}\t${recipient}`;

/** Reads the tail of an output (and of its newest rotated files, up to `tailBytes` in all). */
export async function accountingTail(output: AccountingOutput, tailBytes = TAIL_BYTES): Promise<AccountingTail> {
  const keys = new Set<string>();
  let oldest: number | undefined;
  const files = [...(await rotatedFiles(output.path).catch(() => [])).map((file) => file.path), output.path].reverse();
  let budget = tailBytes;
  for (const file of files) {
    if (budget <= 0) break;
    const read = await readEnd(file, budget);
    if (!read) continue;
    budget -= read.bytes;
    for (const [type, queueId, recipient, time] of output.format === 'json' ? jsonRecords(read.text, read.cut) : csvRecords(read.text, read.cut)) {
      if (type === 'd' || type === 'b') keys.add(keyOf(queueId, recipient));
      // A receipt's time is its message's acceptance, which may precede its writing by a long upload: attempts only.
      if (type !== 'r' && Number.isFinite(time) && (oldest === undefined || time < oldest)) oldest = time;
    }
  }
  return { keys, oldest };
}

/** The final records a message's recipients should have in a file (finalised since its tail's oldest record) and do not. */
export function missingFinalRecords(tail: AccountingTail, message: { id: QueueId; envelope: Envelope }, scope: AccountingScope): AccountingRecord[] {
  const { envelope } = message;
  if (tail.oldest === undefined) return [];
  const since = tail.oldest + RECORD_ORDER_SLACK_MS;
  return envelope.recipients.flatMap((recipient, index) => {
    if (recipient.status === 'pending' || recipient.nextAttemptAt <= since || tail.keys.has(keyOf(message.id, recipient.address))) return [];
    const delivered = recipient.status === 'delivered';
    const diagnostic = recipient.lastResult ?? '';
    return [{
      type: delivered ? 'd' : 'b',
      time: new Date(recipient.nextAttemptAt).toISOString(),
      ...messageFields(message.id, envelope, index, scope),
      virtualMta: envelope.virtualMta,
      sourceAddress: null,
      mxHost: null,
      mxIp: null,
      result: delivered ? 'delivered' : 'bounced',
      dsnAction: delivered ? 'relayed' : 'failed',
      dsnStatus: /^\d{3}[ -]([245]\.\d{1,3}\.\d{1,3})\b/.exec(diagnostic)?.[1] ?? (delivered ? '2.0.0' : '5.0.0'),
      diagnostic,
      bounceCategory: null,
      attempt: recipient.attempts,
      tlsVersion: null,
      tlsCipher: null,
      durationMs: 0,
    } satisfies AccountingRecord];
  });
}

/** The last `bytes` of a file; `cut` when it starts inside the file (its first line may be partial). */
async function readEnd(file: string, bytes: number): Promise<{ text: string; bytes: number; cut: boolean } | undefined> {
  const size = await stat(file).then((stats) => stats.size, () => undefined);
  if (!size) return undefined;
  const end = await readFileEnd(file, size, bytes);
  return { text: end.toString('utf8'), bytes: end.length, cut: end.length < size };
}

type RecordKey = [type: string, queueId: string, recipient: string, time: number];

function* jsonRecords(text: string, cut: boolean): Generator<RecordKey> {
  const lines = text.split('\n');
  for (const line of cut ? lines.slice(1) : lines) {
    if (line === '') continue;
    try {
      const record = JSON.parse(line) as Partial<AccountingRecord>;
      if (typeof record.type === 'string' && typeof record.queueId === 'string' && typeof record.recipient === 'string') yield [record.type, record.queueId, record.recipient, Date.parse(String(record.time))];
    } catch {
      // a line torn by the crash
    }
  }
}

const TYPE = CSV_COLUMN_NAMES.indexOf('type');
const RCPT = CSV_COLUMN_NAMES.indexOf('rcpt');
const QUEUE_ID = CSV_COLUMN_NAMES.indexOf('queueId');
const TIME_LOGGED = CSV_COLUMN_NAMES.indexOf('timeLogged');

/** PowerMTA's "2026-01-15 14:23:11+0000" as unix ms. */
const csvTime = (text: string): number => Date.parse(`${text.slice(0, 10)}T${text.slice(11, 19)}Z`);

function* csvRecords(text: string, cut: boolean): Generator<RecordKey> {
  let start = 0;
  if (cut) {
    CSV_ROW_START.lastIndex = 0;
    const found = CSV_ROW_START.exec(text);
    if (!found) return;
    start = found.index + 2;
  }
  for (const row of csvRows(text, start)) {
    if (row.length === CSV_COLUMN_NAMES.length) yield [row[TYPE]!, row[QUEUE_ID]!, row[RCPT]!, csvTime(row[TIME_LOGGED]!)];
  }
}

/** RFC 4180 rows from `start` (fields quoted when they hold a comma, a quote or a line break). */
function* csvRows(text: string, start: number): Generator<string[]> {
  let row: string[] = [];
  let field = '';
  let quoted = false;
  for (let index = start; index < text.length; index += 1) {
    const char = text[index]!;
    if (quoted) {
      if (char !== '"') field += char;
      else if (text[index + 1] === '"') {
        field += '"';
        index += 1;
      } else quoted = false;
    } else if (char === '"') quoted = true;
    else if (char === ',') {
      row.push(field);
      field = '';
    } else if (char === '\r' && text[index + 1] === '\n') {
      row.push(field);
      yield row;
      row = [];
      field = '';
      index += 1;
    } else field += char;
  }
}
