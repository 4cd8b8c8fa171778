// Queue-wide deferrals made durable, one record per destination and round rather than one per
// message: when a destination's DNS lookup or connection fails, every waiting message of its
// queue gets one more attempt and the queue's retry time in memory (outcome-recorder.ts), and
// this appends one line to `<state>/destination-deferrals.log` saying so (when, until when, the
// queue's consecutive failures, the reason). After a restart each recovered recipient replays
// the rounds of its destination that it took part in (applyDeferralRounds): it keeps its attempt
// count and waits for its retry instead of being tried at once with its count started over.
// A recipient took part in a round when it was pending, queued then (accepted no later than the
// newest message the round deferred: acceptance stamps come before queueing, so "before the
// round" would count a message still being queued) and due (its next attempt at or before the
// round): a newer per-recipient result in the spool's journal
// carries the count so far (absolute) and a next attempt after its own time, so the rounds
// before it never count twice. Lines torn by a crash are skipped; the file is compacted (temp
// file, fsync, rename) to the rounds of destinations that still hold mail once it has grown.
import { mkdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from '../observe/log.ts';
import { DirectorySync, JournalAppender } from '../spool/group-commit.ts';
import type { RecipientState } from '../spool/types.ts';

export const DESTINATION_DEFERRALS_FILE = 'destination-deferrals.log';

/** One queue-wide deferral of a destination. */
export interface DeferralRound {
  /** Unix ms when the destination failed. */
  at: number;
  /** Unix ms of the queue's next try. */
  retryAt: number;
  /** The newest receivedAt among the messages deferred: later ones were not in the queue yet. */
  acceptedUpTo: number;
  /** Consecutive queue-wide failures of the destination, this one included. */
  failures: number;
  reason: string;
}

interface RoundLine {
  v: string;
  d: string;
  t: number;
  r: number;
  u: number;
  f: number;
  m: string;
}

function destinationKey(virtualMta: string, domain: string): string {
  return `${virtualMta}\u0000${domain}`;
}

function parseLine(line: string): RoundLine | undefined {
  if (!line.startsWith('{')) return undefined;
  try {
    const value = JSON.parse(line) as Partial<RoundLine>;
    const ok = typeof value.v === 'string' && typeof value.d === 'string' && Number.isFinite(value.t) && Number.isFinite(value.r) && Number.isFinite(value.u) && Number.isInteger(value.f) && typeof value.m === 'string';
    return ok ? (value as RoundLine) : undefined;
  } catch {
    return undefined; // torn by a crash
  }
}

function encodeLine(virtualMta: string, domain: string, round: DeferralRound): string {
  return `\n${JSON.stringify({ v: virtualMta, d: domain, t: round.at, r: round.retryAt, u: round.acceptedUpTo, f: round.failures, m: round.reason } satisfies RoundLine)}\n`;
}

/**
 * Replay the rounds a recovered recipient took part in: one attempt each, its next attempt the
 * round's retry time (capped at its bounceAfter deadline, as the queue caps it), the round's reason.
 */
export function applyDeferralRounds(recipient: RecipientState, receivedAt: number, deadline: number, rounds: readonly DeferralRound[]): void {
  for (const round of rounds) {
    if (recipient.status !== 'pending' || receivedAt > round.acceptedUpTo || round.at < recipient.nextAttemptAt) continue;
    recipient.attempts += 1;
    recipient.nextAttemptAt = Math.min(round.retryAt, deadline);
    recipient.lastResult = round.reason;
  }
}

/** The rounds of every destination: loaded at start for recovery, appended at each deferral. */
export class DestinationDeferrals {
  readonly #file: string | undefined;
  readonly #logger: Logger;
  /** Rounds read at start, per "virtualMta\0domain", until recovery is over. */
  #recovered = new Map<string, DeferralRound[]>();
  #appender: JournalAppender | undefined;
  /** Whether a destination still holds mail (its rounds survive a compaction). */
  #holdsMail: (virtualMta: string, domain: string) => boolean = () => true;

  /** Without a state folder the rounds are kept in memory only (engine tests). */
  constructor(stateDir: string | undefined, logger: Logger) {
    this.#file = stateDir ? path.join(stateDir, DESTINATION_DEFERRALS_FILE) : undefined;
    this.#logger = logger;
  }

  set holdsMail(predicate: (virtualMta: string, domain: string) => boolean) {
    this.#holdsMail = predicate;
  }

  /** Read the rounds recorded before this start. */
  async load(): Promise<void> {
    const file = this.#file;
    if (!file) return;
    const directory = path.dirname(file);
    await mkdir(directory, { recursive: true });
    const text = await readFile(file, 'utf8').catch((error: NodeJS.ErrnoException) => (error.code === 'ENOENT' ? undefined : Promise.reject(error)));
    for (const line of text?.split('\n') ?? []) {
      const parsed = parseLine(line);
      if (!parsed) continue;
      const key = destinationKey(parsed.v, parsed.d);
      const rounds = this.#recovered.get(key) ?? [];
      rounds.push({ at: parsed.t, retryAt: parsed.r, acceptedUpTo: parsed.u, failures: parsed.f, reason: parsed.m });
      this.#recovered.set(key, rounds);
    }
    const sync = new DirectorySync(directory, () => {});
    this.#appender = new JournalAppender(file, {
      exists: text !== undefined,
      onFsync: () => {},
      syncDirectory: () => sync.sync(),
      compact: async (journal) => Buffer.from(this.#compacted(journal.toString('utf8'))),
      onCompactionError: (error) => this.#logger.warn({ err: error, file }, 'compacting the destination deferrals failed; the file is kept as it is'),
    });
  }

  /** The rounds recorded before this start for a destination, oldest first (until recoveryFinished()). */
  recovered(virtualMta: string, domain: string): readonly DeferralRound[] | undefined {
    return this.#recovered.size === 0 ? undefined : this.#recovered.get(destinationKey(virtualMta, domain));
  }

  /** Every recovered message is queued: the rounds read at start are no longer needed in memory. */
  recoveryFinished(): void {
    this.#recovered = new Map();
  }

  /** Make one round durable. Not fatal when it fails: the deferral holds in memory; only a restart would retry early. */
  async record(virtualMta: string, domain: string, round: DeferralRound, messages: number): Promise<void> {
    if (!this.#appender) return;
    try {
      await this.#appender.append(Buffer.from(encodeLine(virtualMta, domain, round)));
      this.#logger.debug({ virtualMta, domain, messages }, 'destination deferral recorded');
    } catch (error) {
      this.#logger.warn({ virtualMta, domain, messages, err: error }, 'recording a destination deferral failed; after a restart its messages are retried at once');
    }
  }

  async close(): Promise<void> {
    await this.#appender?.release();
  }

  /** The lines of destinations that still hold mail (or whose messages are not all recovered yet). */
  #compacted(text: string): string {
    return text
      .split('\n')
      .flatMap((line) => {
        const parsed = parseLine(line);
        if (!parsed) return [];
        const keep = this.#recovered.has(destinationKey(parsed.v, parsed.d)) || this.#holdsMail(parsed.v, parsed.d);
        return keep ? [`\n${line}\n`] : [];
      })
      .join('');
  }
}
