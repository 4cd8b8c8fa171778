// Which DSNs a recorded attempt calls for, per recipient, from what the sender asked (NOTIFY,
// mta/delivery/dsn-request.ts) and what happened: `failed` for a bounce or expiry unless NOTIFY
// leaves FAILURE out (NEVER included); `relayed` for a delivery to a next hop that does not do
// DSN when NOTIFY has SUCCESS (RFC 3461 §5.2.2; a next hop that does DSN was given NOTIFY and
// reports itself); `delayed` once per recipient when it is still queued `delayWarningAfter`
// after arrival and NOTIFY has DELAY or was not given (like Postfix's delay_warning_time).
// "Once" holds across restarts: the recipients warned are kept in `<state>/delay-notices.log`
// (one "queueId index" line each, fsynced), pruned at open of messages older than any queue keeps.
import { mkdir, open, readFile, rename, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import type { Envelope } from '../spool/types.ts';
import { queueIdTime } from '../spool/queue-id.ts';
import type { FailedRecipient } from './dsn.ts';
import { wantsNotice } from './dsn-request.ts';
import type { Classification } from './reply-classification.ts';

export interface NoticeInput {
  queueId: string;
  envelope: Envelope;
  /** Final classification of each recipient recorded by the attempt, by recipient index. */
  outcomes: ReadonlyMap<number, Classification>;
  /** The attempt reached a next hop that advertised DSN and was given NOTIFY. */
  nextHopDsn: boolean;
  remoteMta?: string;
  now: number;
  /** delivery.delayWarningAfter in ms; undefined: no delay notices. */
  delayWarningAfter?: number;
  /** When the relay gives up on the recipients (arrival + bounceAfter), for Will-Retry-Until. */
  giveUpAt: number;
}

export interface Notices {
  failed: FailedRecipient[];
  relayed: FailedRecipient[];
  delayed: FailedRecipient[];
  /** Recipient indexes the delayed notice covers, to record as warned. */
  delayedIndexes: number[];
}

/** The notices to send for one attempt's outcomes; `warned` says which recipients had their delay notice. */
export function noticesFor(input: NoticeInput, warned: (index: number) => boolean): Notices {
  const notices: Notices = { failed: [], relayed: [], delayed: [], delayedIndexes: [] };
  if (input.envelope.mailFrom === '') return notices;
  for (const [index, classification] of input.outcomes) {
    const recipient = input.envelope.recipients[index]!;
    const report = (): FailedRecipient => ({
      address: recipient.address,
      status: classification.status,
      diagnostic: classification.diagnostic,
      ...(input.remoteMta ? { remoteMta: input.remoteMta } : {}),
      lastAttemptAt: input.now,
      ...(recipient.orcpt ? { orcpt: recipient.orcpt } : {}),
    });
    if (classification.result === 'bounced') {
      if (wantsNotice(recipient, 'FAILURE')) notices.failed.push(report());
    } else if (classification.result === 'delivered') {
      if (!input.nextHopDsn && wantsNotice(recipient, 'SUCCESS')) notices.relayed.push({ ...report(), action: 'relayed' });
    } else if (input.delayWarningAfter !== undefined && input.now - input.envelope.receivedAt >= input.delayWarningAfter && wantsNotice(recipient, 'DELAY') && !warned(index)) {
      notices.delayed.push({ ...report(), status: classification.status.startsWith('4.') ? classification.status : '4.0.0', action: 'delayed', willRetryUntil: input.giveUpAt });
      notices.delayedIndexes.push(index);
    }
  }
  return notices;
}

export const DELAY_NOTICES_FILE = 'delay-notices.log';
/** Entries of messages older than this are dropped at open: no queue keeps mail that long. */
const KEEP_MS = 90 * 24 * 3600 * 1000;

/** The recipients that had their delay notice, durable when a state folder is given. */
export class DelayNoticeLedger {
  readonly #sent = new Set<string>();
  #handle: FileHandle | undefined;
  #writing: Promise<void> = Promise.resolve();

  static async open(stateDir: string | undefined, now: number): Promise<DelayNoticeLedger> {
    const ledger = new DelayNoticeLedger();
    if (!stateDir) return ledger;
    await mkdir(stateDir, { recursive: true });
    const file = path.join(stateDir, DELAY_NOTICES_FILE);
    const text = await readFile(file, 'utf8').catch((error: NodeJS.ErrnoException) => (error.code === 'ENOENT' ? '' : Promise.reject(error)));
    const lines = text.split('\n').filter((line) => /^[0-9a-z]{18} \d+$/.test(line));
    const kept = lines.filter((line) => queueIdTime(line.slice(0, 18)) > now - KEEP_MS);
    if (kept.length < lines.length) {
      const temporary = `${file}.tmp`;
      const handle = await open(temporary, 'w');
      await handle.writeFile(kept.map((line) => `${line}\n`).join(''));
      await handle.sync();
      await handle.close();
      await rename(temporary, file);
    }
    for (const line of kept) ledger.#sent.add(line);
    ledger.#handle = await open(file, 'a');
    return ledger;
  }

  has(queueId: string, index: number): boolean {
    return this.#sent.has(`${queueId} ${index}`);
  }

  /** Record recipients as warned; resolves once durable. */
  async record(queueId: string, indexes: readonly number[]): Promise<void> {
    const keys = indexes.map((index) => `${queueId} ${index}`);
    for (const key of keys) this.#sent.add(key);
    const handle = this.#handle;
    if (!handle || keys.length === 0) return;
    const write = this.#writing.then(async () => {
      // A torn line (crash) fails the pattern at open and is skipped; the newline first keeps it off the next record.
      await handle.appendFile(`\n${keys.join('\n')}\n`);
      await handle.sync();
    });
    this.#writing = write.catch(() => undefined);
    await write;
  }

  async close(): Promise<void> {
    await this.#writing;
    await this.#handle?.close();
  }
}
