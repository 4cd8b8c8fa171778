// SMTP smuggling: only <CRLF>.<CRLF> ends DATA, and a message containing a bare LF or bare CR
// (the material of `\n.\n`-style smuggling) is refused as a whole, without ending the data
// early: the smuggled commands after the fake terminator get no replies of their own.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { expectCode, openSession, startHarness, type Harness } from './harness.ts';

const SMUGGLED = 'MAIL FROM:<attacker@evil.example>\r\nRCPT TO:<victim@allowed.example>\r\nDATA\r\nSubject: smuggled\r\n\r\nsmuggled\r\n';

const VARIANTS: Array<[string, string]> = [
  ['\\n.\\n', `\n.\n${SMUGGLED}`],
  ['\\n.\\r\\n', `\n.\r\n${SMUGGLED}`],
  ['\\r.\\r', `\r.\r${SMUGGLED}`],
  ['\\r\\n.\\r', `\r\n.\r${SMUGGLED}`],
  ['bare LF in the body', 'first\nsecond\r\n'],
  ['bare CR in the body', 'first\rsecond\r\n'],
];

describe('SMTP smuggling', () => {
  let harness: Harness;
  before(async () => {
    harness = await startHarness();
  });
  after(() => harness.close());

  for (const [name, payload] of VARIANTS) {
    test(`${name} is refused with 550 5.6.11 and does not end the data`, async () => {
      const before = harness.collected.length;
      const client = await openSession(harness, 'relay');
      try {
        expectCode(await client.command('MAIL FROM:<sender@outside.example>'), 250);
        expectCode(await client.command('RCPT TO:<rcpt@allowed.example>'), 250);
        expectCode(await client.command('DATA'), 354);
        client.write(`Subject: test\r\n\r\nline one\r\n${payload}\r\n.\r\n`);
        const reply = await client.read();
        assert.equal(reply.text, '550 5.6.11 Bare CR or LF in message not allowed');
        // The session is still in sync: the next reply is the one to NOOP, not to a smuggled command.
        assert.equal((await client.command('NOOP')).code, 250);
        assert.equal(client.pending(), '');
        assert.equal(harness.collected.length, before);
      } finally {
        client.close();
      }
    });
  }

  test('a clean message with dot-stuffing is accepted and unstuffed', async () => {
    const client = await openSession(harness, 'relay');
    try {
      expectCode(await client.command('MAIL FROM:<sender@outside.example>'), 250);
      expectCode(await client.command('RCPT TO:<rcpt@allowed.example>'), 250);
      expectCode(await client.command('DATA'), 354);
      const reply = await client.command('Subject: ok\r\n\r\n..leading dot\r\nend\r\n.');
      assert.match(reply.text, /^250 2\.0\.0 Ok: queued as Q\d+$/);
      const last = harness.collected.at(-1);
      assert.equal(last?.message.toString(), 'Subject: ok\r\n\r\n.leading dot\r\nend\r\n');
    } finally {
      client.close();
    }
  });

  test('commands pipelined behind STARTTLS are discarded', async () => {
    const client = await openSession(harness, 'relay');
    try {
      client.write('STARTTLS\r\nRSET\r\nMAIL FROM:<attacker@evil.example>\r\nRCPT TO:<victim@allowed.example>\r\n');
      expectCode(await client.read(), 220);
      await new Promise((resolve) => setTimeout(resolve, 200));
      assert.equal(client.pending(), '', 'no reply to the pipelined plaintext commands');
      await client.startTls(harness.ca.ca);
      // Had MAIL FROM survived, RCPT would be accepted; after the upgrade the session starts over.
      assert.equal((await client.command('RCPT TO:<victim@allowed.example>')).code, 503);
      expectCode(await client.command('EHLO client.test'), 250);
      assert.equal((await client.command('RCPT TO:<victim@allowed.example>')).code, 503);
    } finally {
      client.close();
    }
  });

  test('smuggling refusals are counted', async () => {
    assert.match(await harness.metric('vmta_inbound_rejections_total'), /listener="relay",reason="smuggling"\} 6/);
  });
});
