// The byte rules of line-faults.ts and readMessage, over generated classes of byte sequences:
// every line ending (CRLF, LF, CR) at every position, NUL at every position, line lengths around
// 998, each fed in every split into two chunks (and byte by byte), judged against a reference
// written over the whole buffer at once.
import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { describe, test } from 'node:test';
import { BareLineFeedMarker, commandLineFault, ContentScanner, MAX_LINE_OCTETS } from '../../mta/inbound/line-faults.ts';
import { readMessage } from '../../mta/inbound/message-reader.ts';

/** The reference: what a message's bytes are refused for, judged on the whole buffer. */
function expectedFault(bytes: Buffer): string | null {
  const text = bytes.toString('latin1');
  if (/(?<!\r)\n|\r(?!\n)/.test(text)) return 'bare-line-ending';
  if (text.includes('\0')) return 'nul';
  if (text.split('\r\n').some((line) => line.length > MAX_LINE_OCTETS)) return 'line-too-long';
  return null;
}

/** Every way to cut the buffer in two, plus one byte at a time. */
function* chunkings(bytes: Buffer): Generator<Buffer[]> {
  for (let cut = 0; cut <= bytes.length; cut++) yield [bytes.subarray(0, cut), bytes.subarray(cut)];
  yield [...bytes].map((byte) => Buffer.of(byte));
}

function scanFault(chunks: Buffer[]): string | null {
  const scanner = new ContentScanner();
  for (const chunk of chunks) scanner.scan(chunk);
  return scanner.fault();
}

/** Short messages: three lines, each ending taken from the endings, with a NUL or none at every position. */
function* shortMessages(): Generator<Buffer> {
  const endings = ['\r\n', '\n', '\r', ''];
  for (const first of endings) {
    for (const second of endings) {
      const base = Buffer.from(`ab${first}.c${second}d\r\n`, 'latin1');
      yield base;
      for (let at = 0; at <= base.length; at++) yield Buffer.concat([base.subarray(0, at), Buffer.of(0), base.subarray(at)]);
    }
  }
}

describe('ContentScanner', () => {
  test('every ending and NUL position, in every chunking, is judged as on the whole buffer', () => {
    let cases = 0;
    for (const message of shortMessages()) {
      const expected = expectedFault(message);
      for (const chunks of chunkings(message)) {
        assert.equal(scanFault(chunks), expected, `${JSON.stringify(message.toString('latin1'))} in ${chunks.length} chunks`);
        cases++;
      }
    }
    assert.ok(cases > 1000, `${cases} cases`);
  });

  test('line lengths around 998 and its multiples: more than 998 octets before CRLF is refused', () => {
    for (const length of [0, 1, 997, 998, 999, 1000, 1996, 1997, 1998, 2994, 2995, 9980]) {
      for (const lineEnd of ['\r\n', 'x\r\n']) {
        const line = 'a'.repeat(length) + lineEnd;
        const message = Buffer.from(`Subject: s\r\n\r\n${line}last\r\n`, 'latin1');
        const expected = expectedFault(message);
        assert.equal(expected === 'line-too-long', line.length - 2 > MAX_LINE_OCTETS);
        for (const cut of [0, 13, 14, 15 + Math.floor(length / 2), 14 + length, 15 + length, 16 + length, message.length]) {
          assert.equal(scanFault([message.subarray(0, cut), message.subarray(cut)]), expected, `line of ${line.length - 2} cut at ${cut}`);
        }
      }
    }
  });

  test('a header line over 998 octets is refused like a body line', () => {
    assert.equal(scanFault([Buffer.from(`X-Long: ${'h'.repeat(991)}\r\n\r\nbody\r\n`)]), 'line-too-long');
    assert.equal(scanFault([Buffer.from(`X-Long: ${'h'.repeat(990)}\r\n\r\nbody\r\n`)]), null);
  });
});

describe('BareLineFeedMarker', () => {
  test('puts a NUL before exactly the bare LFs, in every chunking, and never makes a <CRLF>.<CRLF>', () => {
    for (const message of shortMessages()) {
      const text = message.toString('latin1');
      const expected = text.replace(/(?<!\r)\n/g, '\0\n');
      for (const chunks of chunkings(message)) {
        const marker = new BareLineFeedMarker();
        const marked = Buffer.concat(chunks.map((chunk) => marker.mark(chunk))).toString('latin1');
        assert.equal(marked, expected);
        if (!text.includes('\r\n.\r\n')) assert.ok(!marked.includes('\r\n.\r\n'));
      }
    }
  });

  test('a chunk without bare LF is passed on as the same buffer', () => {
    const chunk = Buffer.from('MAIL FROM:<a@b.example>\r\n');
    assert.equal(new BareLineFeedMarker().mark(chunk), chunk);
  });
});

describe('commandLineFault', () => {
  test('a marked bare LF, a NUL or a CR anywhere in a command line is a fault', () => {
    const command = 'MAIL FROM:<a@b.example>';
    assert.equal(commandLineFault(Buffer.from(command)), null);
    assert.equal(commandLineFault(Buffer.from(`${command}\0`)), 'bare-line-feed');
    for (let at = 0; at < command.length; at++) {
      assert.equal(commandLineFault(Buffer.from(command.slice(0, at) + '\0' + command.slice(at))), 'nul');
      assert.equal(commandLineFault(Buffer.from(command.slice(0, at) + '\r' + command.slice(at))), 'bare-carriage-return');
    }
  });
});

describe('readMessage', () => {
  async function read(chunks: string[], max = 1000) {
    const stream = new PassThrough();
    const result = readMessage(stream, max);
    for (const chunk of chunks) stream.write(Buffer.from(chunk, 'latin1'));
    stream.end();
    return result;
  }
  test('a clean message is returned whole; a malformed one carries its fault', async () => {
    assert.deepEqual(await read(['a\r', '\nb\r\n']), { kind: 'message', message: Buffer.from('a\r\nb\r\n') });
    assert.deepEqual(await read(['a\r', 'b\r\n']), { kind: 'malformed', fault: 'bare-line-ending' });
    assert.deepEqual(await read(['a\0\r\n']), { kind: 'malformed', fault: 'nul' });
    assert.deepEqual(await read([`${'x'.repeat(999)}\r\n`], 2000), { kind: 'malformed', fault: 'line-too-long' });
  });
  test('more than the limit is too-large', async () => {
    assert.deepEqual(await read(['x'.repeat(20) + '\r\n'], 10), { kind: 'too-large', bytes: 22 });
  });
});
