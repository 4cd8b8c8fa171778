// Mode `bounce` of the suppression list: a message is accepted (the client gets its 250), then
// each suppressed recipient is recorded as bounced in the spool before delivery sees the message,
// and the sender gets one DSN for those whose NOTIFY asks for failures (mta/delivery/dsn.ts) —
// never for mail from the null sender.
import type { Logger } from 'pino';
import { storeDsn, type FailedRecipient } from '../delivery/dsn.ts';
import { wantsNotice } from '../delivery/dsn-request.ts';
import type { RecipientResult, Spool, SpooledMessage } from '../spool/types.ts';
import { describeEntry, suppressionStatus, type PoolSuppression } from './pool-suppression.ts';

export interface SuppressionBounceOptions {
  spool: Spool;
  suppression: PoolSuppression;
  reportingMta: string;
  logger: Logger;
  now?: () => number;
}

/**
 * Bounce the suppressed recipients of a newly stored message (in mode bounce): their results are
 * durable and set on `message` when this resolves; the DSN stored for them, if any, is returned for
 * delivery to queue.
 */
export async function bounceSuppressedRecipients(message: SpooledMessage, options: SuppressionBounceOptions): Promise<SpooledMessage | undefined> {
  const { suppression } = options;
  if (suppression.mode !== 'bounce') return undefined;
  const now = (options.now ?? Date.now)();
  const results = new Map<number, RecipientResult>();
  const failed: FailedRecipient[] = [];
  message.envelope.recipients.forEach((recipient, index) => {
    const entry = recipient.status === 'pending' ? suppression.stops(recipient.address) : undefined;
    if (!entry) return;
    const diagnostic = describeEntry(entry);
    results.set(index, { status: 'bounced', nextAttemptAt: 0, lastResult: diagnostic, attempts: 0 });
    if (wantsNotice(recipient, 'FAILURE')) failed.push({ address: recipient.address, status: suppressionStatus(entry), diagnostic, lastAttemptAt: now, ...(recipient.orcpt ? { orcpt: recipient.orcpt } : {}) });
  });
  if (results.size === 0) return undefined;
  await options.spool.recordRecipientResults(message.id, results);
  for (const [index, result] of results) {
    const recipient = message.envelope.recipients[index]!;
    recipient.status = result.status;
    recipient.lastResult = result.lastResult;
  }
  for (let count = 0; count < results.size; count += 1) suppression.stopped('bounced');
  options.logger.info({ queueId: message.id, recipients: failed.map((recipient) => recipient.address) }, 'suppressed recipients bounced at once');
  if (message.envelope.mailFrom === '' || failed.length === 0) return undefined;
  return storeDsn(options.spool, { reportingMta: options.reportingMta, queueId: message.id, envelope: message.envelope, recipients: failed, now });
}
