// The peer side of a hand-over: POST /api/v1/handover from a draining relay of the same pool.
// Mounted as a write route (the server checks the admin token first). Checks that this relay takes hand-overs (it is not draining or stopping),
// the head (zod), the VirtualMTA and the size; then stores the message under its own queue id,
// records the hand-over key in the ledger and queues it for delivery, and only then answers 200
// (like a 250 after DATA: the message is durable here). A key or queue id seen before answers
// 200 "duplicate" and stores nothing.
import type { IncomingMessage } from 'node:http';
import type { Logger } from 'pino';
import type { RuntimeConfig } from '../config/schema.ts';
import type { AdminResponse } from '../admin/routes.ts';
import type { Spool, SpooledMessage } from '../spool/types.ts';
import { HANDOVER_CONTENT_TYPE, HandoverHead, handoverKey, MAX_HEAD_BYTES, type HandoverAnswer } from './handover-format.ts';
import type { HandoverLedger } from './handover-ledger.ts';

export interface HandoverReceiverOptions {
  spool: Pick<Spool, 'store'>;
  /** Whether the engine still holds a message with this id. */
  isQueued: (id: string) => boolean;
  enqueue: (message: SpooledMessage) => void;
  ledger: HandoverLedger;
  getConfig: () => RuntimeConfig;
  /** Why hand-overs are refused right now (draining, shutting down), or undefined. */
  refusal: () => string | undefined;
  logger: Logger;
}

/** Room for what the relay adds to a message after DATA (Received, DKIM-Signature). */
const ADDED_HEADER_ROOM = 1024 * 1024;

function refuse(status: number, message: string): AdminResponse {
  return { status, body: { error: message } };
}

export function createHandoverReceiver(options: HandoverReceiverOptions): (request: IncomingMessage) => Promise<AdminResponse> {
  return async (request) => {
    const refusal = options.refusal();
    if (refusal) return refuse(503, `not taking hand-overs: ${refusal}`);
    if (!(request.headers['content-type'] ?? '').startsWith(HANDOVER_CONTENT_TYPE)) return refuse(415, `a hand-over is sent as ${HANDOVER_CONTENT_TYPE}`);
    const config = options.getConfig();
    const largest = config.listeners.reduce((most, listener) => Math.max(most, listener.limits.maxMessageSize), 0) || 50 * 1024 * 1024;
    const read = await readHandover(request, largest + ADDED_HEADER_ROOM);
    if ('error' in read) return refuse(read.status, read.error);
    const { head, body } = read;
    const key = handoverKey(head.id, head.hop);
    if (options.ledger.has(key) || options.isQueued(head.id)) {
      await options.ledger.record(key);
      options.logger.info({ queueId: head.id, hop: head.hop }, 'hand-over received again; already stored (duplicate)');
      return answer({ result: 'duplicate', id: head.id });
    }
    if (!config.pool.virtualMtas.some((vmta) => vmta.name === head.envelope.virtualMta)) {
      return refuse(422, `envelope.virtualMta: "${head.envelope.virtualMta}" is not a VirtualMTA of pool "${config.pool.name}"`);
    }
    const { size: _size, ...received } = head.envelope;
    // The sending pod wrote the final records of its finished recipients: nothing here may restore them after a crash.
    const envelope = { ...received, recipients: received.recipients.map((recipient) => (recipient.status === 'pending' ? recipient : { ...recipient, nextAttemptAt: 0 })) };
    const stored = await options.spool.store(envelope, body, head.id);
    // After the store: a crash between the two leaves the id in the spool, which also answers "duplicate".
    await options.ledger.record(key);
    options.enqueue(stored);
    options.logger.info({ queueId: head.id, hop: head.hop, recipients: head.envelope.recipients.filter((r) => r.status === 'pending').length }, 'hand-over stored');
    return answer({ result: 'stored', id: head.id });
  };
}

function answer(body: HandoverAnswer): AdminResponse {
  return { status: 200, body };
}

type ReadResult = { head: HandoverHead; body: Buffer } | { status: number; error: string };

/** The head line and exactly envelope.size bytes after it. */
async function readHandover(request: IncomingMessage, maxBodyBytes: number): Promise<ReadResult> {
  const declared = Number(request.headers['content-length'] ?? Number.NaN);
  if (Number.isFinite(declared) && declared > MAX_HEAD_BYTES + maxBodyBytes) return { status: 413, error: `hand-over over ${MAX_HEAD_BYTES + maxBodyBytes} bytes` };
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of request as AsyncIterable<Buffer>) {
    total += chunk.length;
    if (total > MAX_HEAD_BYTES + maxBodyBytes) return { status: 413, error: `hand-over over ${MAX_HEAD_BYTES + maxBodyBytes} bytes` };
    chunks.push(chunk);
  }
  const all = Buffer.concat(chunks);
  const newline = all.indexOf(0x0a);
  if (newline < 0 || newline > MAX_HEAD_BYTES) return { status: 400, error: 'hand-over: no head line (JSON, then a newline) at the start' };
  let json: unknown;
  try {
    json = JSON.parse(all.toString('utf8', 0, newline));
  } catch (error) {
    return { status: 400, error: `hand-over head is not JSON: ${(error as Error).message}` };
  }
  const parsed = HandoverHead.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    return { status: 400, error: `hand-over head: ${issue?.path.join('.') || '(root)'}: ${issue?.message ?? 'invalid'}` };
  }
  const body = all.subarray(newline + 1);
  if (body.length !== parsed.data.envelope.size) return { status: 400, error: `hand-over body is ${body.length} bytes; envelope.size says ${parsed.data.envelope.size}` };
  if (body.length > maxBodyBytes) return { status: 413, error: `message of ${body.length} bytes is over this relay's limit of ${maxBodyBytes}` };
  return { head: parsed.data, body };
}
