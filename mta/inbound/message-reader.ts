// Collects the DATA section of one message from smtp-server's data stream, refusing SMTP
// smuggling material: smtp-server ends DATA only at <CRLF>.<CRLF>, but it passes bare LF and
// bare CR inside the body through unchanged, and those are what `\n.\n`-style smuggling relies
// on when another server re-parses the message. Every CR must be followed by LF and every LF
// preceded by CR (state is carried across chunks); anything else marks the message as refused.
// The whole stream is always consumed so the session stays in sync with the client.
import type { Readable } from 'node:stream';

export type MessageReadResult =
  | { kind: 'message'; message: Buffer }
  | { kind: 'bare-line-ending' }
  | { kind: 'too-large'; bytes: number }
  | { kind: 'aborted'; error: Error };

const CR = 0x0d;
const LF = 0x0a;

/**
 * True when the chunk has an LF not preceded by CR or a CR not followed by LF. A CR at the very
 * end is judged with the next chunk (the caller carries it). Uses Buffer.indexOf, so the scan
 * runs per line in native code rather than per byte in JavaScript.
 */
export function hasBareLineEnding(chunk: Buffer, previousWasCr: boolean): boolean {
  if (previousWasCr && chunk[0] !== LF) return true;
  for (let index = chunk.indexOf(LF); index !== -1; index = chunk.indexOf(LF, index + 1)) {
    if (index === 0 ? !previousWasCr : chunk[index - 1] !== CR) return true;
  }
  for (let index = chunk.indexOf(CR); index !== -1 && index < chunk.length - 1; index = chunk.indexOf(CR, index + 1)) {
    if (chunk[index + 1] !== LF) return true;
  }
  return false;
}

export function readMessage(stream: Readable & { sizeExceeded?: boolean }, maxBytes: number): Promise<MessageReadResult> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let bytes = 0;
    let bareLineEnding = false;
    let previousWasCr = false;
    stream.on('data', (chunk: Buffer) => {
      bytes += chunk.length;
      if (!bareLineEnding && chunk.length > 0) {
        bareLineEnding = hasBareLineEnding(chunk, previousWasCr);
        previousWasCr = chunk[chunk.length - 1] === CR;
      }
      if (bytes <= maxBytes && !bareLineEnding) chunks.push(chunk);
    });
    stream.once('error', (error: Error) => resolve({ kind: 'aborted', error }));
    stream.once('end', () => {
      if (bytes > maxBytes || stream.sizeExceeded) return resolve({ kind: 'too-large', bytes });
      // The stream ends with the CRLF before the final dot, so a trailing bare CR is caught here.
      if (bareLineEnding || previousWasCr) return resolve({ kind: 'bare-line-ending' });
      resolve({ kind: 'message', message: Buffer.concat(chunks, bytes) });
    });
  });
}
