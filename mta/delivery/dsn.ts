// Delivery status notifications (RFC 3464): the multipart/report sent with the null sender to
// the envelope sender, one per-recipient block each — `failed` when recipients bounce or expire,
// `delayed` when they are still queued after the configured time, `relayed` when they went to a
// next hop that does not do DSN although the sender asked for success notices (RFC 3461 §5.2.2).
// The client's DSN parameters show in the fields: ENVID as Original-Envelope-Id, ORCPT as
// Original-Recipient. The original goes back as its headers, or whole (message/rfc822) in a
// failure notice when the sender asked for RET=FULL and it is not too large.
import { randomBytes } from 'node:crypto';
import type { Readable } from 'node:stream';
import type { Envelope, Spool, SpooledMessage } from '../spool/types.ts';
import { originalRecipient } from './dsn-request.ts';

export type DsnAction = 'failed' | 'delayed' | 'relayed';

export interface FailedRecipient {
  address: string;
  /** RFC 3463 status, e.g. "5.1.1"; expired recipients carry "4.4.7". */
  status: string;
  diagnostic: string;
  /** MX host that gave the reply, when there was one. */
  remoteMta?: string;
  lastAttemptAt: number;
  /** failed when omitted. */
  action?: DsnAction;
  /** ORCPT ("addr-type;address"). */
  orcpt?: string;
  /** delayed: the time the relay gives up (bounceAfter). */
  willRetryUntil?: number;
}

export interface DsnInput {
  reportingMta: string;
  queueId: string;
  originalSender: string;
  arrivalDate: number;
  recipients: FailedRecipient[];
  /** Header section of the original message (up to the blank line). */
  originalHeaders: string;
  /** The whole original message, when it is returned (RET=FULL on a failure notice). */
  originalMessage?: Buffer;
  /** ENVID of the original message. */
  envelopeId?: string;
  now: number;
}

const MAX_HEADER_BYTES = 64 * 1024;
/** Largest original returned whole for RET=FULL; a larger one comes back as its headers (like Postfix's bounce_size_limit). */
export const MAX_RETURNED_MESSAGE_BYTES = 10 * 1024 * 1024;

/** Read the header section of a stored message without reading its body. */
export async function readHeaderSection(message: Readable): Promise<string> {
  let collected = '';
  try {
    for await (const chunk of message) {
      collected += (chunk as Buffer).toString('latin1');
      const end = collected.search(/\r?\n\r?\n/);
      if (end >= 0) return collected.slice(0, end);
      if (collected.length > MAX_HEADER_BYTES) break;
    }
    return collected.slice(0, MAX_HEADER_BYTES);
  } finally {
    message.destroy();
  }
}

async function readWhole(message: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of message) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

/** A value that stays on one header line and inside the line-length limit. */
function headerValue(text: string): string {
  return text.replace(/[\r\n]+/g, ' ').replace(/[^\x20-\x7e]/g, '?').slice(0, 900);
}

function dateField(time: number): string {
  return new Date(time).toUTCString().replace('GMT', '+0000');
}

const WORDING: Record<DsnAction, { subject: string; text: string }> = {
  failed: { subject: 'Undelivered Mail Returned to Sender', text: 'Your message could not be delivered to one or more recipients. It has been returned.' },
  delayed: { subject: 'Delayed Mail (still being retried)', text: 'Your message has not been delivered yet to one or more recipients. Delivery is still being tried; you need not send it again.' },
  relayed: { subject: 'Delivery Status Notification (relayed)', text: 'Your message was relayed to a mail system that does not send delivery notifications; you will hear no more of it from there.' },
};

function perRecipientFields(recipient: FailedRecipient): string {
  const action = recipient.action ?? 'failed';
  const original = recipient.orcpt ? originalRecipient(recipient.orcpt) : undefined;
  return [
    ...(original ? [`Original-Recipient: ${headerValue(original.type)};${headerValue(original.address)}`] : []),
    `Final-Recipient: rfc822; ${headerValue(recipient.address)}`,
    `Action: ${action}`,
    `Status: ${recipient.status}`,
    ...(recipient.remoteMta ? [`Remote-MTA: dns; ${headerValue(recipient.remoteMta)}`] : []),
    ...(recipient.diagnostic ? [`Diagnostic-Code: smtp; ${headerValue(recipient.diagnostic)}`] : []),
    `Last-Attempt-Date: ${dateField(recipient.lastAttemptAt)}`,
    ...(action === 'delayed' && recipient.willRetryUntil ? [`Will-Retry-Until: ${dateField(recipient.willRetryUntil)}`] : []),
  ].join('\r\n');
}

export function buildDsn(input: DsnInput): Buffer {
  const boundary = `dsn-${randomBytes(12).toString('hex')}`;
  const action = input.recipients[0]?.action ?? 'failed';
  const expired = action === 'failed' && input.recipients.every((recipient) => recipient.status === '4.4.7');
  const wording = expired ? { subject: 'Delivery time expired', text: 'Your message could not be delivered before its delivery deadline and has been returned.' } : WORDING[action];
  const human = [`This is the mail system at ${input.reportingMta}.`, '', wording.text, '', ...input.recipients.map((recipient) => `<${recipient.address}>: ${headerValue(recipient.diagnostic || recipient.status)}`)];
  const perMessage = [
    ...(input.envelopeId ? [`Original-Envelope-Id: ${headerValue(input.envelopeId)}`] : []),
    `Reporting-MTA: dns; ${input.reportingMta}`,
    `X-Queue-ID: ${input.queueId}`,
    `Arrival-Date: ${dateField(input.arrivalDate)}`,
  ];
  const returned = input.originalMessage
    ? ['Content-Type: message/rfc822', 'Content-Description: Undelivered Message', '', input.originalMessage.toString('latin1').replace(/\r?\n/g, '\r\n').replace(/\r\n$/, '')]
    : ['Content-Type: text/rfc822-headers', `Content-Description: ${action === 'failed' ? 'Undelivered' : action === 'delayed' ? 'Delayed' : 'Relayed'} Message Headers`, '', input.originalHeaders.replace(/\r?\n/g, '\r\n')];
  const lines = [
    `From: Mail Delivery System <MAILER-DAEMON@${input.reportingMta}>`,
    `To: <${headerValue(input.originalSender)}>`,
    `Subject: ${wording.subject}`,
    `Date: ${dateField(input.now)}`,
    `Message-ID: <${input.queueId}.${randomBytes(6).toString('hex')}@${input.reportingMta}>`,
    'Auto-Submitted: auto-replied',
    'MIME-Version: 1.0',
    `Content-Type: multipart/report; report-type=delivery-status; boundary="${boundary}"`,
    '',
    'This is a MIME-encapsulated message.',
    '',
    `--${boundary}`,
    'Content-Type: text/plain; charset=us-ascii',
    'Content-Description: Notification',
    '',
    ...human,
    '',
    `--${boundary}`,
    'Content-Type: message/delivery-status',
    'Content-Description: Delivery report',
    '',
    ...perMessage,
    '',
    input.recipients.map(perRecipientFields).join('\r\n\r\n'),
    '',
    `--${boundary}`,
    ...returned,
    '',
    `--${boundary}--`,
    '',
  ];
  return Buffer.from(lines.join('\r\n'), 'latin1');
}

/**
 * Build the DSN for `recipients` of a stored message (all of one action) and store it as a new
 * message from the null sender to the original sender, on the same VirtualMTA. The original's
 * headers are read, or the whole message for a failure notice under RET=FULL (within
 * MAX_RETURNED_MESSAGE_BYTES). Callers never call this for a null-sender message.
 */
export async function storeDsn(
  spool: Spool,
  options: { reportingMta: string; queueId: string; envelope: Envelope; recipients: FailedRecipient[]; now: number },
): Promise<SpooledMessage> {
  const { envelope } = options;
  if (envelope.mailFrom === '') throw new Error('no DSN for a message from the null sender');
  const failure = (options.recipients[0]?.action ?? 'failed') === 'failed';
  const returnWhole = failure && envelope.dsn?.ret === 'FULL' && envelope.size <= MAX_RETURNED_MESSAGE_BYTES;
  const originalMessage = returnWhole ? await readWhole(spool.readMessage(options.queueId)) : undefined;
  const originalHeaders = originalMessage ? '' : await readHeaderSection(spool.readMessage(options.queueId));
  const body = buildDsn({
    reportingMta: options.reportingMta,
    queueId: options.queueId,
    originalSender: envelope.mailFrom,
    arrivalDate: envelope.receivedAt,
    recipients: options.recipients,
    originalHeaders,
    ...(originalMessage ? { originalMessage } : {}),
    ...(envelope.dsn?.envid ? { envelopeId: envelope.dsn.envid } : {}),
    now: options.now,
  });
  const senderDomain = envelope.mailFrom.slice(envelope.mailFrom.lastIndexOf('@') + 1).toLowerCase();
  return spool.store(
    {
      mailFrom: '',
      recipients: [{ address: envelope.mailFrom, domain: senderDomain, status: 'pending', attempts: 0, nextAttemptAt: 0 }],
      virtualMta: envelope.virtualMta,
      receivedAt: options.now,
      listener: 'dsn',
      clientAddress: '127.0.0.1',
      eightBitMime: returnWhole && envelope.eightBitMime,
      smtpUtf8: false,
    },
    body,
  );
}
