// Wire hygiene over real sockets: command lines with a bare LF, a bare CR or a NUL at every
// position are answered 500 5.5.2 and change nothing; DATA with a NUL anywhere (among them
// <CRLF><NUL>.<CRLF>) or a line over 998 octets is refused whole at the end of data (554 5.6.0)
// without ending early; dot-stuffing variants and lines up to 998 octets are accepted and
// unstuffed exactly; BDAT is neither advertised nor accepted.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { RawSmtpClient } from '../fixtures/smtp-clients.ts';
import { expectCode, openSession, startHarness, type Harness } from './harness.ts';

const COMMANDS = ['NOOP', 'RSET', 'HELP', 'EHLO client.test', 'MAIL FROM:<sender@outside.example>', 'RCPT TO:<rcpt@allowed.example>', 'VRFY postmaster'];

/** Each command with a NUL or a CR at every position, and ended by a bare LF. */
function* faultyCommandLines(): Generator<{ line: string; reply: string }> {
  for (const command of COMMANDS) {
    yield { line: `${command}\n`, reply: '500 5.5.2 Syntax error: command line not ended by CRLF' };
    for (let at = 0; at <= command.length; at++) {
      const [head, tail] = [command.slice(0, at), command.slice(at)];
      yield { line: `${head}\0${tail}\r\n`, reply: at === command.length ? '500 5.5.2 Syntax error: command line not ended by CRLF' : '500 5.5.2 Syntax error: NUL character in command line' };
      if (at > 0 && at < command.length) yield { line: `${head}\r${tail}\r\n`, reply: '500 5.5.2 Syntax error: bare CR in command line' };
    }
  }
}

const SMUGGLED = 'MAIL FROM:<attacker@evil.example>\r\nRCPT TO:<victim@allowed.example>\r\nDATA\r\nSubject: smuggled\r\n\r\nsmuggled\r\n';

/** DATA sections as sent (dot-stuffed where needed) with the content the relay must store, or the refusal. */
function* dataSections(): Generator<{ name: string; wire: string; stored?: string; reply?: string }> {
  const nulRefusal = '554 5.6.0 NUL character in message not allowed';
  const body = 'Subject: t\r\n\r\nline one\r\nline two\r\n';
  for (let at = 0; at <= body.length; at++) {
    // A NUL between CR and LF leaves both bare: that is the smuggling refusal.
    const splitsCrlf = body[at - 1] === '\r' && body[at] === '\n';
    yield { name: `NUL at offset ${at}`, wire: `${body.slice(0, at)}\0${body.slice(at)}`, reply: splitsCrlf ? '550 5.6.11 Bare CR or LF in message not allowed' : nulRefusal };
  }
  yield { name: '<CRLF><NUL>.<CRLF> then smuggled commands', wire: `${body}\0.\r\n${SMUGGLED}`, reply: nulRefusal };
  yield { name: '<CRLF>.<NUL><CRLF> then smuggled commands', wire: `${body}.\0\r\n${SMUGGLED}`, reply: nulRefusal };
  yield { name: '<NUL><CRLF>.<CRLF> inside', wire: `${body}x\0\r\n`, reply: nulRefusal };
  for (const length of [997, 998, 999, 1000, 1996, 1997, 1998, 1999, 2994, 2995]) {
    const line = 'L'.repeat(length);
    const refused = length > 998;
    const reply = refused ? '554 5.6.0 Message line longer than 998 octets not allowed (RFC 5322 2.1.1)' : undefined;
    yield { name: `a body line of ${length} octets`, wire: `${body}${line}\r\nend\r\n`, ...(reply ? { reply } : { stored: `${body}${line}\r\nend\r\n` }) };
    // Dot-stuffed on the wire: one octet more than the content, judged on the content.
    const dotted = `.${'D'.repeat(length - 1)}`;
    yield { name: `a dot-stuffed line of ${length} content octets`, wire: `${body}.${dotted}\r\n`, ...(reply ? { reply } : { stored: `${body}${dotted}\r\n` }) };
  }
  yield { name: 'a header line of 999 octets', wire: `X-Long: ${'h'.repeat(991)}\r\n\r\nbody\r\n`, reply: '554 5.6.0 Message line longer than 998 octets not allowed (RFC 5322 2.1.1)' };
  for (const [wire, stored] of [
    ['..\r\n', '.\r\n'],
    ['...\r\n', '..\r\n'],
    ['.. \r\n', '. \r\n'],
    ['..x\r\n', '.x\r\n'],
    // A lone leading dot before text is kept (smtp-server): only a client that forgot to
    // dot-stuff sends it, and it meant the dot. Delivery stuffs it again, so the next hop agrees.
    ['x.\r\n.y\r\n', 'x.\r\n.y\r\n'],
  ] as const) {
    yield { name: `dot-stuffing ${JSON.stringify(wire)}`, wire: `${body}${wire}`, stored: `${body}${stored}` };
  }
}

describe('wire hygiene', () => {
  let harness: Harness;
  before(async () => {
    harness = await startHarness({ mutate: (input) => void (input.listeners[0]!.limits = { maxErrors: 1000 }) });
  });
  after(() => harness.close());

  test('command lines with a bare LF, bare CR or NUL at any position get 500 5.5.2 and change nothing', async () => {
    const client = await openSession(harness, 'relay');
    const before = Number((await harness.metric('vmta_inbound_rejections_total')).match(/reason="bad_command"\} (\d+)/)?.[1] ?? 0);
    let count = 0;
    try {
      for (const { line, reply } of faultyCommandLines()) {
        client.write(line);
        assert.equal((await client.read()).text, reply, JSON.stringify(line));
        // In sync, and no transaction was opened by a refused MAIL FROM.
        assert.equal((await client.command('RCPT TO:<rcpt@allowed.example>')).code, 503, JSON.stringify(line));
        count++;
      }
      assert.equal(client.pending(), '');
    } finally {
      client.close();
    }
    assert.match(await harness.metric('vmta_inbound_rejections_total'), new RegExp(`reason="bad_command"\\} ${before + count}`));
  });

  test('pipelined commands behind a bare-LF line are each answered once', async () => {
    const client = await openSession(harness, 'relay');
    try {
      client.write('NOOP\nMAIL FROM:<sender@outside.example>\nNOOP\r\n');
      assert.match((await client.read()).text, /^500 5\.5\.2 /);
      assert.match((await client.read()).text, /^500 5\.5\.2 /);
      assert.equal((await client.read()).code, 250);
      assert.equal((await client.command('RCPT TO:<rcpt@allowed.example>')).code, 503);
    } finally {
      client.close();
    }
  });

  test('DATA: NUL anywhere and lines over 998 octets are refused whole; dot-stuffing and 998-octet lines are stored exactly', async () => {
    const client = await openSession(harness, 'relay');
    try {
      for (const section of dataSections()) {
        const before = harness.collected.length;
        expectCode(await client.command('MAIL FROM:<sender@outside.example>'), 250);
        expectCode(await client.command('RCPT TO:<rcpt@allowed.example>'), 250);
        expectCode(await client.command('DATA'), 354);
        // A NUL placed inside the final CRLF leaves the data unterminated: end it on a line of its own.
        client.write(`${section.wire}${section.wire.endsWith('\r\n') ? '' : '\r\n'}.\r\n`);
        const reply = await client.read();
        if (section.reply) {
          assert.equal(reply.text, section.reply, section.name);
          assert.equal(harness.collected.length, before, section.name);
        } else {
          assert.match(reply.text, /^250 2\.0\.0 Ok: queued as /, section.name);
          assert.equal(harness.collected.at(-1)?.message.toString('latin1'), section.stored, section.name);
        }
        // Nothing smuggled got a reply of its own: the next reply is NOOP's.
        assert.equal((await client.command('NOOP')).code, 250, section.name);
        assert.equal(client.pending(), '', section.name);
      }
    } finally {
      client.close();
    }
  });

  test('BDAT (CHUNKING) is not advertised and is refused as an unknown command', async () => {
    const client = await RawSmtpClient.connect(harness.port('relay'));
    try {
      expectCode(await client.read(), 220);
      const ehlo = await client.command('EHLO client.test');
      assert.ok(!ehlo.lines.some((line) => /CHUNKING|BINARYMIME/.test(line)), ehlo.text);
      expectCode(await client.command('MAIL FROM:<sender@outside.example>'), 250);
      expectCode(await client.command('RCPT TO:<rcpt@allowed.example>'), 250);
      assert.equal((await client.command('BDAT 5 LAST')).code, 500);
    } finally {
      client.close();
    }
  });
});
