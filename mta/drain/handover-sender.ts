// The draining side of a hand-over: streams one spooled message (head line + stored bytes) to a
// peer's POST /api/v1/handover and resolves with the peer's answer only on a 200 that says the
// message is stored (or was already). Anything else rejects with what the peer said, so the
// caller keeps the message and tries another peer or later.
import http from 'node:http';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Envelope, QueueId } from '../spool/types.ts';
import { encodeHead, HANDOVER_CONTENT_TYPE, HANDOVER_PATH, HandoverAnswer } from './handover-format.ts';

export interface HandoverTarget {
  host: string;
  port: number;
}

/** "10.0.0.7:8025" or "[fd00::7]:8025" -> host and port; throws naming the value. */
export function parsePeer(peer: string): HandoverTarget {
  const match = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/.exec(peer);
  const port = Number(match?.[2]);
  if (!match || port < 1 || port > 65535) throw new Error(`handOverTo: "${peer}" is not host:port`);
  return { host: match[1]!.replace(/^\[|\]$/g, ''), port };
}

export class HandoverRefused extends Error {
  readonly status: number | undefined;
  constructor(message: string, status?: number) {
    super(message);
    this.status = status;
  }
}

export async function sendHandover(options: { target: HandoverTarget; token: string; id: QueueId; envelope: Envelope; body: Readable; timeoutMs?: number }): Promise<HandoverAnswer> {
  const { target, token, id, envelope, body } = options;
  const head = encodeHead(id, envelope);
  const request = http.request({
    host: target.host,
    port: target.port,
    method: 'POST',
    path: HANDOVER_PATH,
    timeout: options.timeoutMs ?? 60_000,
    headers: { authorization: `Bearer ${token}`, 'content-type': HANDOVER_CONTENT_TYPE, 'content-length': head.length + envelope.size },
  });
  const response = new Promise<http.IncomingMessage>((resolve, reject) => {
    request.on('response', resolve);
    request.on('error', reject);
    request.on('timeout', () => request.destroy(new HandoverRefused(`no answer from ${target.host}:${target.port} within the timeout`)));
  });
  request.write(head);
  // A peer may answer (401, 503) before it has read the body; its answer is what counts then.
  const sent = pipeline(body, request).catch(() => undefined);
  const reply = await response;
  await sent;
  const chunks: Buffer[] = [];
  for await (const chunk of reply as AsyncIterable<Buffer>) chunks.push(chunk);
  const text = Buffer.concat(chunks).toString('utf8');
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new HandoverRefused(`peer ${target.host}:${target.port} answered ${reply.statusCode} without JSON`, reply.statusCode);
  }
  if (reply.statusCode !== 200) {
    throw new HandoverRefused(`peer ${target.host}:${target.port} refused (${reply.statusCode}): ${(parsed as { error?: string }).error ?? text}`, reply.statusCode);
  }
  const answer = HandoverAnswer.safeParse(parsed);
  if (!answer.success || answer.data.id !== id) throw new HandoverRefused(`peer ${target.host}:${target.port} answered 200 with an unexpected body: ${text.slice(0, 200)}`, 200);
  return answer.data;
}
