// The wire format of one message handed from a draining relay to a peer (POST /api/v1/handover):
// a first line of JSON (queue id, hop count, the envelope with every recipient's state), then
// exactly `envelope.size` bytes of the stored message. JSON.stringify never writes a raw newline,
// so the first "\n" ends the head. The hand-over key (id and hop) is what the receiver
// de-duplicates on: a re-send after a crash has the same key, a message that later comes back
// to the same relay on another hop does not.
import { z } from 'zod';
import { isQueueId } from '../spool/queue-id.ts';
import { RELAY_GRANTS, type Envelope, type QueueId } from '../spool/types.ts';

export const HANDOVER_PATH = '/api/v1/handover';
export const HANDOVER_CONTENT_TYPE = 'application/x-vmta-handover';
/** Largest head line accepted (an envelope with thousands of recipients fits). */
export const MAX_HEAD_BYTES = 4 * 1024 * 1024;

const Recipient = z.strictObject({
  address: z.string().min(1).max(512),
  domain: z.string().min(1).max(253),
  status: z.enum(['pending', 'delivered', 'bounced']),
  attempts: z.number().int().min(0),
  nextAttemptAt: z.number().int().min(0),
  lastResult: z.string().max(4096).optional(),
  /** DSN parameters of RCPT TO (RFC 3461), as the spool keeps them. */
  notify: z.union([z.tuple([z.literal('NEVER')]), z.array(z.enum(['SUCCESS', 'FAILURE', 'DELAY'])).min(1).max(3)]).optional(),
  orcpt: z.string().min(1).max(500).optional(),
});

export const HandoverHead = z.strictObject({
  id: z.string().refine(isQueueId, 'a queue id'),
  /** How many hand-overs this message has had, this one included (1 = first). */
  hop: z.number().int().min(1).max(1000),
  envelope: z.strictObject({
    mailFrom: z.string().max(512),
    recipients: z.array(Recipient).min(1).max(100_000),
    virtualMta: z.string().min(1).max(63),
    receivedAt: z.number().int().min(0),
    listener: z.string().max(63),
    clientAddress: z.string().max(64),
    user: z.string().max(256).optional(),
    relayGrant: z.enum(RELAY_GRANTS).optional(),
    heloName: z.string().max(512).optional(),
    jobId: z.string().max(256).optional(),
    size: z.number().int().min(0),
    eightBitMime: z.boolean(),
    smtpUtf8: z.boolean(),
    dsn: z.strictObject({ ret: z.enum(['FULL', 'HDRS']).optional(), envid: z.string().min(1).max(100).optional() }).optional(),
    handovers: z.number().int().min(1).max(1000).optional(),
  }),
});
export type HandoverHead = z.output<typeof HandoverHead>;

/** Every envelope field crosses a hand-over: a field added to Envelope but not to HandoverHead fails to compile here (the peer would refuse the message). */
export const EVERY_ENVELOPE_FIELD_HANDED_OVER: [Exclude<keyof Envelope, keyof HandoverHead['envelope']>] extends [never] ? true : Exclude<keyof Envelope, keyof HandoverHead['envelope']> = true;

/** The result a peer answers once the message is durable in its spool (or already was). */
export const HandoverAnswer = z.object({ result: z.enum(['stored', 'duplicate']), id: z.string() });
export type HandoverAnswer = z.output<typeof HandoverAnswer>;

/** The key a receiver de-duplicates on. */
export function handoverKey(id: QueueId, hop: number): string {
  return `${id}#${hop}`;
}

/** The head line for a message's next hand-over. */
export function encodeHead(id: QueueId, envelope: Envelope): Buffer {
  const hop = (envelope.handovers ?? 0) + 1;
  const head: HandoverHead = { id, hop, envelope: { ...envelope, handovers: hop } };
  return Buffer.from(`${JSON.stringify(head)}\n`, 'utf8');
}
