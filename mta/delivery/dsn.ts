// Delivery status notifications (RFC 3464): the multipart/report bounce sent with the null
// sender to the envelope sender when recipients fail or expire, carrying one
// per-recipient block each and the original message's headers (never its body).
import { randomBytes } from 'node:crypto';
import type { Readable } from 'node:stream';
import type { Envelope, Spool, SpooledMessage } from '../spool/types.ts';

export interface FailedRecipient {
  address: string;
  /** RFC 3463 status, e.g. "5.1.1"; expired recipients carry "4.4.7". */
  status: string;
  diagnostic: string;
  /** MX host that gave the reply, when there was one. */
  remoteMta?: string;
  lastAttemptAt: number;
}

export interface DsnInput {
  reportingMta: string;
  queueId: string;
  originalSender: string;
  arrivalDate: number;
  recipients: FailedRecipient[];
  /** Header section of the original message (up to the blank line). */
  originalHeaders: string;
  now: number;
}

const MAX_HEADER_BYTES = 64 * 1024;

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

/** A value that stays on one header line and inside the line-length limit. */
function headerValue(text: string): string {
  return text.replace(/[\r\n]+/g, ' ').replace(/[^\x20-\x7e]/g, '?').slice(0, 900);
}

export function buildDsn(input: DsnInput): Buffer {
  const boundary = `dsn-${randomBytes(12).toString('hex')}`;
  const date = new Date(input.now).toUTCString().replace('GMT', '+0000');
  const expired = input.recipients.every((recipient) => recipient.status === '4.4.7');
  const human = [
    `This is the mail system at ${input.reportingMta}.`,
    '',
    expired
      ? 'Your message could not be delivered before its delivery deadline and has been returned.'
      : 'Your message could not be delivered to one or more recipients. It has been returned.',
    '',
    ...input.recipients.map((recipient) => `<${recipient.address}>: ${headerValue(recipient.diagnostic)}`),
  ];
  const perMessage = [
    `Reporting-MTA: dns; ${input.reportingMta}`,
    `X-Queue-ID: ${input.queueId}`,
    `Arrival-Date: ${new Date(input.arrivalDate).toUTCString().replace('GMT', '+0000')}`,
  ];
  const perRecipient = input.recipients.map((recipient) =>
    [
      `Final-Recipient: rfc822; ${headerValue(recipient.address)}`,
      'Action: failed',
      `Status: ${recipient.status}`,
      ...(recipient.remoteMta ? [`Remote-MTA: dns; ${headerValue(recipient.remoteMta)}`] : []),
      `Diagnostic-Code: smtp; ${headerValue(recipient.diagnostic)}`,
      `Last-Attempt-Date: ${new Date(recipient.lastAttemptAt).toUTCString().replace('GMT', '+0000')}`,
    ].join('\r\n'),
  );
  const originalHeaders = input.originalHeaders.replace(/\r?\n/g, '\r\n');
  const lines = [
    `From: Mail Delivery System <MAILER-DAEMON@${input.reportingMta}>`,
    `To: <${headerValue(input.originalSender)}>`,
    `Subject: ${expired ? 'Delivery time expired' : 'Undelivered Mail Returned to Sender'}`,
    `Date: ${date}`,
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
    perRecipient.join('\r\n\r\n'),
    '',
    `--${boundary}`,
    'Content-Type: text/rfc822-headers',
    'Content-Description: Undelivered Message Headers',
    '',
    originalHeaders,
    '',
    `--${boundary}--`,
    '',
  ];
  return Buffer.from(lines.join('\r\n'), 'latin1');
}

/**
 * Build the DSN for `recipients` of a stored message (reading only its headers) and store it
 * as a new message from the null sender to the original sender, on the same VirtualMTA.
 * Callers never call this for a null-sender message.
 */
export async function storeDsn(
  spool: Spool,
  options: { reportingMta: string; queueId: string; envelope: Envelope; recipients: FailedRecipient[]; now: number },
): Promise<SpooledMessage> {
  const { envelope } = options;
  if (envelope.mailFrom === '') throw new Error('no DSN for a message from the null sender');
  const originalHeaders = await readHeaderSection(spool.readMessage(options.queueId));
  const body = buildDsn({
    reportingMta: options.reportingMta,
    queueId: options.queueId,
    originalSender: envelope.mailFrom,
    arrivalDate: envelope.receivedAt,
    recipients: options.recipients,
    originalHeaders,
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
      eightBitMime: false,
      smtpUtf8: false,
    },
    body,
  );
}
