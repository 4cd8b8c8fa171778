// Collects the DATA section of one message from smtp-server's data stream and judges its bytes
// with ContentScanner (line-faults.ts): smtp-server ends DATA only at <CRLF>.<CRLF> but passes
// bare LF, bare CR and NUL inside the body through unchanged — the material of `\n.\n`-style
// smuggling and of `<CRLF><NUL>.<CRLF>` against a next hop that drops NULs — and lines of any
// length. A message with any of these is refused as a whole (nothing is spooled, so nothing
// reaches a next hop and a later DKIM signature covers exactly what was received). The whole
// stream is always consumed so the session stays in sync with the client.
import type { Readable } from 'node:stream';
import { ContentScanner, type ContentFault } from './line-faults.ts';

export type MessageReadResult =
  | { kind: 'message'; message: Buffer }
  | { kind: 'malformed'; fault: ContentFault }
  | { kind: 'too-large'; bytes: number }
  | { kind: 'aborted'; error: Error };

export function readMessage(stream: Readable & { sizeExceeded?: boolean }, maxBytes: number): Promise<MessageReadResult> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    const scanner = new ContentScanner();
    let bytes = 0;
    stream.on('data', (chunk: Buffer) => {
      bytes += chunk.length;
      scanner.scan(chunk);
      if (bytes <= maxBytes) chunks.push(chunk);
    });
    stream.once('error', (error: Error) => resolve({ kind: 'aborted', error }));
    stream.once('end', () => {
      if (bytes > maxBytes || stream.sizeExceeded) return resolve({ kind: 'too-large', bytes });
      const fault = scanner.fault();
      if (fault) return resolve({ kind: 'malformed', fault });
      resolve({ kind: 'message', message: Buffer.concat(chunks, bytes) });
    });
  });
}
