// Outcome recording: turns classified replies into durable recipient results in the spool
// (delivered, deferred with the next attempt, bounced, expired at bounceAfter), enters and
// leaves backoff, writes the accounting log and the attempt metrics, stores the DSNs the
// sender asked for (dsn-notices.ts), tells the suppression list of bounces, and removes a
// message once no recipient is pending and its final accounting records are synced (so a crash
// in between leaves the message for accounting-recovery.ts to write what the batch lost).
// Queue-wide failures (DNS, connect, TLS route) are recorded here too, as one deferral of the
// whole queue, durable per destination (deferral-record.ts). Every attempt's outcome is also one
// log line per recipient (mta/observe/delivery-log.ts).
import type { RuntimeConfig } from '../config/schema.ts';
import { AccountingLog, type AccountingRecord } from '../observe/accounting.ts';
import { messageFields, RECORD_TYPE_OF_RESULT, receiptRecords, type AccountingScope } from '../observe/accounting-record.ts';
import { accountingTail, missingFinalRecords } from '../observe/accounting-recovery.ts';
import { DeliveryLog } from '../observe/delivery-log.ts';
import type { QueueId, RecipientResult, SpooledMessage } from '../spool/types.ts';
import type { DeliveryContext } from './delivery-context.ts';
import type { DestinationBackoff } from './group-backoff.ts';
import { queueItem, type DestinationQueue, type QueuedMessage, type QueueItem } from './destination-queue.ts';
import { storeDsn, type FailedRecipient } from './dsn.ts';
import { DelayNoticeLedger, noticesFor } from './dsn-notices.ts';
import type { MxTarget, TlsOutcome } from './outbound-connection.ts';
import type { PortFallback } from './smarthost-memory.ts';
import { classifyFailure, type Classification } from './reply-classification.ts';
import { afterDeferral, retryDelay } from './retry-schedule.ts';

/** Where and when an attempt was made, for accounting and DSNs. */
export interface AttemptContext {
  target?: MxTarget;
  tls?: TlsOutcome;
  startedAt: number;
  /** The next hop advertised DSN and was given NOTIFY: success notices are its to send. */
  nextHopDsn?: boolean;
  /** Smarthost ports passed over before this session's (smarthost-memory.ts). */
  portFallbacks?: PortFallback[];
}

export interface OutcomeRecorderOptions {
  /** The spool volume's state/ folder: which recipients had their delay notice is kept there. */
  stateDir?: string;
  /** Told of every recipient that bounced, once the result is durable (the suppression list). */
  onRecipientBounced?: (address: string, classification: Classification) => void;
  /** Told of every attempt recorded for a message at one destination. */
  onMessageAttempted?: () => void;
}

/** An attempt that never reached a host (administrator's bounce or delete). */
export const NO_TARGET: AttemptContext = { startedAt: 0 };

/** What the recorder needs from the scheduler's message records. */
export interface MessageRecords {
  /** Drop a finished message; false when it was already gone. */
  forget(id: QueueId): boolean;
  /** Queue a new message (a DSN). */
  enqueue(message: SpooledMessage): void;
  /** Backoff of the queues and their provider groups (group-backoff.ts). */
  readonly limits: { readonly backoff: DestinationBackoff };
}

export class OutcomeRecorder {
  readonly #context: DeliveryContext;
  readonly #records: MessageRecords;
  #accounting: AccountingLog;
  readonly #options: OutcomeRecorderOptions;
  readonly #delayNotices: Promise<DelayNoticeLedger>;
  readonly #outcomes: DeliveryLog;
  /** Removals of finished messages waiting for their final records to be synced. */
  readonly #removals = new Set<Promise<void>>();
  #closed = false;

  constructor(context: DeliveryContext, records: MessageRecords, options: OutcomeRecorderOptions = {}) {
    this.#context = context;
    this.#records = records;
    this.#options = options;
    this.#outcomes = new DeliveryLog(context.logger);
    this.#accounting = this.#openAccounting(context.config);
    this.#delayNotices = DelayNoticeLedger.open(options.stateDir, context.clock.now());
    // A ledger that cannot be opened is reported when it is first needed.
    this.#delayNotices.catch(() => undefined);
  }

  /** Reopen the accounting log when its settings changed. */
  async reload(previous: RuntimeConfig, config: RuntimeConfig): Promise<void> {
    if (JSON.stringify(previous.delivery.accounting) === JSON.stringify(config.delivery.accounting)) return;
    const old = this.#accounting;
    this.#accounting = this.#openAccounting(config);
    await old.close();
  }

  async close(): Promise<void> {
    // From here a finished message stays in the spool (the next start completes it); the removals asked for before go once their records are synced.
    this.#closed = true;
    await this.#accounting.close();
    await Promise.all(this.#removals);
    await (await this.#delayNotices.catch(() => undefined))?.close();
  }

  /** The `r` records of a message just accepted (when receipts are on). */
  recordReceipts(message: SpooledMessage): void {
    if (!this.#context.config.delivery.accounting.receipts) return;
    for (const record of receiptRecords(message.id, message.envelope, this.#scope())) this.#accounting.write(record);
  }

  async flushAccounting(): Promise<void> {
    await this.#accounting.flush();
  }

  /**
   * For the spool's recovery, before any message is queued: reads each accounting file's tail;
   * then each message found gets the final records its files lack (recipients finalised since the
   * tail's oldest record: accounting-recovery.ts) written again, and a finished one (every
   * recipient final: the process stopped before its removal) is removed once they are synced.
   */
  async accountingRecovery(): Promise<{ recovered(message: SpooledMessage): void }> {
    const { logger } = this.#context;
    const tails = await Promise.all(
      this.#accounting.outputs().map(async (output) => ({
        output,
        tail: await accountingTail(output).catch((error: Error) => {
          logger.error({ file: output.path, err: error }, 'accounting file tail cannot be read; final records lost in a crash are not written again to it');
          return undefined;
        }),
      })),
    );
    return {
      recovered: (message) => {
        if (this.#closed) return; // stopping: the message stays for the next start
        const accounting = this.#accounting;
        for (const { output, tail } of tails) {
          const missing = tail ? missingFinalRecords(tail, message, this.#scope()) : [];
          for (const record of missing) accounting.writeTo(output.path, record);
          if (missing.length > 0) logger.warn({ queueId: message.id, file: output.path, records: missing.length }, 'accounting: final records lost in a crash written again from the spool');
        }
        if (message.envelope.recipients.every((recipient) => recipient.status !== 'pending')) this.#removeWhenAccounted(message.id, accounting);
      },
    };
  }

  /**
   * Remove a finished message from the spool once every record written so far to `accounting`
   * (the log its final records went to, though a reload may have replaced it since) is durable.
   * A batch that cannot be written is reported (accounting-file.ts) and the message removed all
   * the same: holding it would keep a full disk full. After close() the message stays in the
   * spool, and the next start completes it.
   */
  #removeWhenAccounted(id: QueueId, accounting: AccountingLog): void {
    if (this.#closed) return;
    const { logger, spool } = this.#context;
    const removal: Promise<void> = accounting
      .synced()
      .then(() => spool.remove(id))
      .catch((error: Error) => logger.error({ queueId: id, err: error }, 'removing a finished message failed'))
      .finally(() => this.#removals.delete(removal));
    this.#removals.add(removal);
  }

  #scope(): AccountingScope {
    const { config } = this.#context;
    return { pool: config.pool.name, tenant: config.delivery.accounting.tenant };
  }

  #openAccounting(config: RuntimeConfig): AccountingLog {
    const { logger } = this.#context;
    return new AccountingLog(
      config.delivery.accounting,
      (error) => logger.error({ err: error }, 'accounting file cannot be written'),
      (file, records) => logger.debug({ file, records }, 'accounting records synced'),
    );
  }

  /**
   * A DNS or connection failure applies to every ready message of the queue. A permanent one
   * (null MX, no such domain, 5xx greeting) bounces each message durably. A temporary one defers
   * the queue as a whole: one retry time for the queue, and each message's attempt count and next
   * attempt recorded in the spool (mta/delivery/deferral-record.ts) so a restart keeps them. Messages past
   * bounceAfter still expire with a durable bounce and DSN; accounting and metrics still count
   * each deferred recipient.
   */
  async failReady(queue: DestinationQueue, classification: Classification, context: AttemptContext, reply?: string): Promise<void> {
    const items = queue.ready.takeAll();
    if (classification.result !== 'deferred') {
      await this.recordAll(queue, items, classification, context, reply, true);
      return;
    }
    const { clock, logger } = this.#context;
    const now = clock.now();
    // Parallel connections of the queue fail together; the first one to get here defers it.
    if (items.length === 0 && queue.retryAt > now) return;
    const backoffs = this.#records.limits.backoff;
    if (backoffs.onFailureReply(queue, reply ?? classification.diagnostic, now)) {
      logger.warn({ virtualMta: queue.virtualMta, domain: queue.domain, providerGroup: queue.providerGroup, reply: classification.diagnostic }, 'backoff entered');
    }
    const backoff = backoffs.active(queue);
    const expired = items.filter((item) => now >= item.envelope.receivedAt + queue.settings.bounceAfter);
    const waiting = expired.length === 0 ? items : items.filter((item) => now < item.envelope.receivedAt + queue.settings.bounceAfter);
    // One push per item: spreading a whole queue into push() overflows the stack (~120,000 items).
    for (const item of waiting) queue.ready.push(item);
    queue.deferUntil(now + (backoff?.retryAfter ?? retryDelay(queue.settings.retryAfter, queue.failures + 1)), now);
    logger.info({ virtualMta: queue.virtualMta, domain: queue.domain, messages: waiting.length, retryAt: new Date(queue.retryAt).toISOString(), reply: classification.diagnostic }, 'destination deferred');
    for (const item of waiting) {
      for (const index of item.recipients) {
        const recipient = item.envelope.recipients[index]!;
        recipient.attempts += 1;
        recipient.nextAttemptAt = item.dueAt;
        this.#writeAccounting(queue, item, index, classification, context, now, queue.retryAt);
      }
    }
    // A deferral can only call for delay notices: only messages past delayWarningAfter are looked at (a queue may hold 200,000).
    const delayWarningAfter = this.#context.config.delivery.delayWarningAfter;
    if (delayWarningAfter !== undefined) {
      for (const item of waiting) {
        if (now - item.envelope.receivedAt >= delayWarningAfter) await this.#notify(queue, item, new Map(item.recipients.map((index) => [index, classification])), context);
      }
    }
    const acceptedUpTo = waiting.reduce((newest, item) => Math.max(newest, item.envelope.receivedAt), 0);
    queue.deferredUpTo = Math.max(queue.deferredUpTo, acceptedUpTo);
    const round = { at: now, retryAt: queue.retryAt, acceptedUpTo, failures: queue.failures, reason: classification.diagnostic };
    await this.#context.deferrals.record(queue.virtualMta, queue.domain, round, waiting.length);
    // Expired messages bounce through the usual path (afterDeferral turns the deferral into an expiry).
    if (expired.length > 0) await this.recordAll(queue, expired, classification, context, reply, true);
  }

  /**
   * Record one classification for many items, a batch at a time; each counts as in flight until
   * recorded. Resolves once the messages it finished are removed (an operator's bounce or delete
   * answers when they are gone).
   */
  async recordAll(queue: DestinationQueue, items: QueueItem[], classification: Classification, context: AttemptContext, reply: string | undefined, sendDsn: boolean): Promise<void> {
    queue.inFlight += items.length;
    await inBatches(items, async (item) => {
      try {
        await this.recordResults(queue, item, new Map(item.recipients.map((index) => [index, classification])), context, reply, sendDsn);
      } finally {
        queue.inFlight -= 1;
      }
    });
    await Promise.all(this.#removals);
  }

  /**
   * Turn classifications into durable recipient results: deferrals get their next attempt
   * (or expire at bounceAfter), backoff is entered or left, accounting and metrics are written,
   * bounces produce a DSN, and a message with no pending recipient left is removed.
   */
  async recordResults(
    queue: DestinationQueue,
    item: QueueItem,
    classifications: ReadonlyMap<number, Classification>,
    context: AttemptContext,
    backoffReply?: string,
    sendDsn = true,
  ): Promise<void> {
    const { clock, logger, metrics, spool } = this.#context;
    const message: QueuedMessage = item;
    const envelope = item.envelope;
    const now = clock.now();
    const results = new Map<number, RecipientResult>();
    const final = new Map<number, Classification>();
    const deferred: number[] = [];
    for (const [index, initial] of classifications) {
      const recipient = envelope.recipients[index]!;
      let classification = initial;
      // Absolute counts: a destination's queue-wide deferrals are recorded per destination, not in the journal (deferral-record.ts).
      const attempts = recipient.attempts + 1;
      // A final result keeps the time of its accounting record (nextAttemptAt of a final recipient: accounting-recovery.ts).
      if (classification.result === 'delivered') {
        if (this.#records.limits.backoff.onDelivery(queue)) logger.info({ virtualMta: queue.virtualMta, domain: queue.domain }, 'backoff left after a delivery');
        results.set(index, { status: 'delivered', nextAttemptAt: now, attempts, lastResult: classification.diagnostic });
        metrics.deliveryLatency.observe({ virtual_mta: queue.virtualMta }, Math.max(0, now - envelope.receivedAt) / 1000);
      } else if (classification.result === 'deferred') {
        if (this.#records.limits.backoff.onFailureReply(queue, backoffReply ?? classification.diagnostic, now)) {
          logger.warn({ virtualMta: queue.virtualMta, domain: queue.domain, providerGroup: queue.providerGroup, reply: classification.diagnostic }, 'backoff entered');
        }
        const backoff = this.#records.limits.backoff.active(queue);
        const next = afterDeferral({
          now,
          receivedAt: envelope.receivedAt,
          attemptsMade: attempts,
          schedule: queue.settings.retryAfter,
          bounceAfter: queue.settings.bounceAfter,
          ...(backoff ? { overrideDelay: backoff.retryAfter } : {}),
        });
        if (next.kind === 'expired') {
          classification = classifyFailure({ kind: 'expired', message: `delivery time expired; last error: ${classification.diagnostic}` });
          results.set(index, { status: 'bounced', nextAttemptAt: now, attempts, lastResult: classification.diagnostic });
        } else {
          results.set(index, { status: 'pending', nextAttemptAt: next.nextAttemptAt, attempts, lastResult: classification.diagnostic });
          deferred.push(index);
        }
      } else {
        results.set(index, { status: 'bounced', nextAttemptAt: now, attempts, lastResult: classification.diagnostic });
      }
      final.set(index, classification);
    }
    try {
      await spool.recordRecipientResults(message.id, results);
    } catch (error) {
      // Not durable: keep the recipients pending in memory and try again later rather than lose or repeat silently.
      logger.error({ queueId: message.id, err: error }, 'recording recipient results failed; will retry');
      queue.add(queueItem(message, [...classifications.keys()], now + 60_000), now);
      return;
    }
    this.#options.onMessageAttempted?.();
    for (const [index, result] of results) {
      const recipient = envelope.recipients[index]!;
      recipient.status = result.status;
      recipient.attempts += 1;
      recipient.nextAttemptAt = result.nextAttemptAt;
      if (result.lastResult !== undefined) recipient.lastResult = result.lastResult;
      this.#writeAccounting(queue, message, index, final.get(index)!, context, now, result.nextAttemptAt);
    }
    const accountedIn = this.#accounting;
    if (deferred.length > 0) {
      const dueAt = deferred.reduce((earliest, index) => Math.min(earliest, envelope.recipients[index]!.nextAttemptAt), Number.POSITIVE_INFINITY);
      queue.add(queueItem(message, deferred, dueAt), now);
    }
    for (const [index, classification] of final) {
      if (classification.result === 'bounced') this.#options.onRecipientBounced?.(envelope.recipients[index]!.address, classification);
    }
    if (sendDsn) await this.#notify(queue, message, final, context);
    // Several destination queues may finish the same message concurrently: only the first removes it.
    if (envelope.recipients.every((recipient) => recipient.status !== 'pending') && this.#records.forget(message.id)) this.#removeWhenAccounted(message.id, accountedIn);
  }

  /** The accounting record and the log line of one recipient's attempt; `retryAt` is a deferred recipient's next attempt. */
  #writeAccounting(queue: DestinationQueue, message: QueuedMessage, index: number, classification: Classification, context: AttemptContext, now: number, retryAt: number): void {
    const { metrics, virtualMtas } = this.#context;
    const recipient = message.envelope.recipients[index]!;
    const vmta = virtualMtas.get(queue.virtualMta);
    const tls = context.tls?.kind === 'tls' ? context.tls : undefined;
    metrics.attempts.inc({ virtual_mta: queue.virtualMta, domain: metrics.domainLabel(queue.domain), result: classification.result, bounce_category: classification.category ?? 'none' });
    const record: AccountingRecord = {
      type: RECORD_TYPE_OF_RESULT[classification.result],
      time: new Date(now).toISOString(),
      ...messageFields(message.id, message.envelope, index, this.#scope()),
      virtualMta: queue.virtualMta,
      sourceAddress: vmta?.sourceAddress ?? null,
      domain: queue.domain,
      mxHost: context.target?.name ?? null,
      mxIp: context.target?.address ?? null,
      result: classification.result,
      dsnAction: DSN_ACTION_OF_RESULT[classification.result],
      dsnStatus: classification.status,
      diagnostic: classification.diagnostic,
      bounceCategory: classification.category ?? null,
      attempt: recipient.attempts,
      tlsVersion: tls?.version ?? null,
      tlsCipher: tls?.cipher ?? null,
      durationMs: context.startedAt ? Math.max(0, now - context.startedAt) : 0,
      ...(context.portFallbacks ? { portFallbacks: context.portFallbacks } : {}),
    };
    this.#accounting.write(record);
    this.#outcomes.write(record, retryAt);
  }

  /** Send the DSNs the outcomes call for (dsn-notices.ts): failed, relayed and delayed, one message each. */
  async #notify(queue: DestinationQueue, message: QueuedMessage, outcomes: ReadonlyMap<number, Classification>, context: AttemptContext): Promise<void> {
    const { clock, config, logger } = this.#context;
    if (message.envelope.mailFrom === '') return;
    let ledger: DelayNoticeLedger | undefined;
    try {
      ledger = await this.#delayNotices;
    } catch (error) {
      logger.error({ err: error }, 'the delay notice ledger cannot be opened; no delay notices are sent');
    }
    const notices = noticesFor(
      {
        queueId: message.id,
        envelope: message.envelope,
        outcomes,
        nextHopDsn: context.nextHopDsn === true,
        ...(context.target ? { remoteMta: context.target.name } : {}),
        now: clock.now(),
        ...(ledger && config.delivery.delayWarningAfter !== undefined ? { delayWarningAfter: config.delivery.delayWarningAfter } : {}),
        giveUpAt: message.envelope.receivedAt + queue.settings.bounceAfter,
      },
      (index) => ledger?.has(message.id, index) ?? true,
    );
    if (notices.delayed.length > 0) {
      try {
        // Recorded first: a crash between the two loses one notice rather than repeating it.
        await ledger!.record(message.id, notices.delayedIndexes);
        await this.#sendDsn(message, notices.delayed);
      } catch (error) {
        logger.error({ queueId: message.id, err: error }, 'could not record a delay notice; none is sent');
      }
    }
    for (const recipients of [notices.failed, notices.relayed]) if (recipients.length > 0) await this.#sendDsn(message, recipients);
  }

  /** Store an RFC 3464 report to the sender (null sender, same VirtualMTA) and queue it. */
  async #sendDsn(message: QueuedMessage, recipients: FailedRecipient[]): Promise<void> {
    const { clock, config, logger, metrics, spool } = this.#context;
    try {
      const stored = await storeDsn(spool, { reportingMta: config.hostname, queueId: message.id, envelope: message.envelope, recipients, now: clock.now() });
      metrics.dsnsGenerated.inc({ virtual_mta: message.envelope.virtualMta });
      logger.info({ queueId: message.id, dsnQueueId: stored.id, recipients: recipients.length, action: recipients[0]?.action ?? 'failed', recipient: message.envelope.mailFrom }, 'DSN queued to the sender');
      this.#records.enqueue(stored);
    } catch (error) {
      logger.error({ queueId: message.id, err: error }, 'could not create the DSN');
    }
  }
}

/** RFC 3464 Action per result: a delivery hands the message to the next MTA, so "relayed". */
const DSN_ACTION_OF_RESULT = { delivered: 'relayed', deferred: 'delayed', bounced: 'failed' } as const;

/** Items a queue-wide failure or admin call records at once; bounds memory and open spool writes for huge queues. */
const RECORD_BATCH = 256;

async function inBatches<T>(items: readonly T[], record: (item: T) => Promise<void>): Promise<void> {
  for (let start = 0; start < items.length; start += RECORD_BATCH) {
    await Promise.all(items.slice(start, start + RECORD_BATCH).map(record));
  }
}
