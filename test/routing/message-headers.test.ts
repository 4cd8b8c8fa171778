import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { editHeaders } from '../../mta/routing/message-headers.ts';
import { addressLiteral, formatReceivedHeader, formatRfc5322Date } from '../../mta/routing/received-header.ts';

const TRACE = Buffer.from('Received: from test\r\n');

function edited(message: string): { text: string; virtualMtaHeaders: string[] } {
  const edit = editHeaders(Buffer.from(message), TRACE);
  return { text: Buffer.concat(edit.chunks).toString(), virtualMtaHeaders: edit.virtualMtaHeaders };
}

describe('editHeaders', () => {
  it('prepends the trace header and leaves a message without X-Virtual-MTA untouched', () => {
    const message = 'From: a@example.com\r\nSubject: hi\r\n\r\nbody\r\n';
    assert.deepEqual(edited(message), { text: `Received: from test\r\n${message}`, virtualMtaHeaders: [] });
  });

  it('removes every X-Virtual-MTA field, in any case, folded or not, and reports their values top first', () => {
    const message = [
      'X-Virtual-MTA: vmta-b',
      'From: a@example.com',
      'x-virtual-mta:',
      '\tvmta-c',
      ' ',
      'Subject: folded',
      ' subject',
      'X-VIRTUAL-MTA : vmta-d',
      '',
      'X-Virtual-MTA: in the body stays',
      '',
    ].join('\r\n');
    assert.deepEqual(edited(message), {
      text: 'Received: from test\r\nFrom: a@example.com\r\nSubject: folded\r\n subject\r\n\r\nX-Virtual-MTA: in the body stays\r\n',
      virtualMtaHeaders: ['vmta-b', 'vmta-c', 'vmta-d'],
    });
  });

  it('handles a message with no body (no blank line), ending with an X-Virtual-MTA field', () => {
    assert.deepEqual(edited('Subject: s\r\nX-Virtual-MTA: vmta-a\r\n'), { text: 'Received: from test\r\nSubject: s\r\n', virtualMtaHeaders: ['vmta-a'] });
    assert.deepEqual(edited('Subject: s\r\nX-Virtual-MTA: vmta-a'), { text: 'Received: from test\r\nSubject: s\r\n', virtualMtaHeaders: ['vmta-a'] });
  });

  it('handles an empty message and one with an empty header section', () => {
    assert.deepEqual(edited(''), { text: 'Received: from test\r\n', virtualMtaHeaders: [] });
    assert.deepEqual(edited('\r\nX-Virtual-MTA: body\r\n'), { text: 'Received: from test\r\n\r\nX-Virtual-MTA: body\r\n', virtualMtaHeaders: [] });
  });

  it('stops at the first line that is not a header field (body without a blank line)', () => {
    assert.deepEqual(edited('just text\r\nX-Virtual-MTA: vmta-a\r\n'), { text: 'Received: from test\r\njust text\r\nX-Virtual-MTA: vmta-a\r\n', virtualMtaHeaders: [] });
  });

  it('does not copy the body: the body chunk shares memory with the original message', () => {
    const message = Buffer.concat([Buffer.from('X-Virtual-MTA: a\r\nSubject: s\r\n\r\n'), Buffer.alloc(5_000_000, 'b')]);
    const edit = editHeaders(message, TRACE);
    const last = edit.chunks.at(-1);
    assert.ok(last && last.buffer === message.buffer && last.length === message.length - 'X-Virtual-MTA: a\r\n'.length);
  });
});

describe('Received header', () => {
  const date = new Date(Date.UTC(2026, 10, 23, 9, 5, 7));

  it('formats RFC 5322 dates in UTC', () => {
    assert.equal(formatRfc5322Date(date), 'Mon, 23 Nov 2026 09:05:07 +0000');
  });

  it('formats address literals, IPv4-mapped IPv6 as IPv4', () => {
    assert.equal(addressLiteral('192.0.2.1'), '[192.0.2.1]');
    assert.equal(addressLiteral('::ffff:192.0.2.1'), '[192.0.2.1]');
    assert.equal(addressLiteral('2001:db8::1'), '[IPv6:2001:db8::1]');
  });

  it('names helo, reverse name, address, TLS, our host, protocol, queue id and the single recipient', () => {
    const header = formatReceivedHeader({
      heloName: 'client.example.org',
      clientHostname: 'rdns.example.org',
      clientAddress: '192.0.2.1',
      hostname: 'relay.example.com',
      protocol: 'ESMTPSA',
      queueId: '01jd3k5m2q0000abcd',
      tls: { version: 'TLSv1.3', cipher: 'TLS_AES_256_GCM_SHA384' },
      recipients: ['bob@example.net'],
      date,
    }).toString();
    assert.equal(
      header,
      'Received: from client.example.org (rdns.example.org [192.0.2.1])\r\n' +
        '\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384)\r\n' +
        '\tby relay.example.com with ESMTPSA id 01jd3k5m2q0000abcd\r\n' +
        '\tfor <bob@example.net>; Mon, 23 Nov 2026 09:05:07 +0000\r\n',
    );
  });

  it('omits "for" with several recipients and the reverse name when unknown, and neutralises hostile HELO text', () => {
    const header = formatReceivedHeader({
      heloName: 'evil) (by fake\r\nX-Injected: 1',
      clientAddress: '2001:db8::5',
      hostname: 'relay.example.com',
      protocol: 'ESMTP',
      queueId: '01jd3k5m2q0000abcd',
      recipients: ['a@example.net', 'b@example.net'],
      date,
    }).toString();
    assert.equal(header, 'Received: from evil???by?fake??X-Injected:?1 ([IPv6:2001:db8::5])\r\n\tby relay.example.com with ESMTP id 01jd3k5m2q0000abcd; Mon, 23 Nov 2026 09:05:07 +0000\r\n');
  });
});
