import assert from 'node:assert/strict';
import { test } from 'node:test';
import { classifyFailure, classifyReply } from '../../mta/delivery/reply-classification.ts';

test('2xx is delivered, 4xx deferred, 5xx bounced', () => {
  assert.equal(classifyReply(250, '250 2.0.0 Ok queued').result, 'delivered');
  assert.equal(classifyReply(451, '451 4.3.0 Local error').result, 'deferred');
  assert.equal(classifyReply(550, '550 5.1.1 No such user').result, 'bounced');
});

test('the enhanced status comes from the reply, or from its class when missing or contradictory', () => {
  assert.equal(classifyReply(550, '550 5.1.1 No such user').status, '5.1.1');
  assert.equal(classifyReply(554, 'Transaction failed').status, '5.0.0');
  assert.equal(classifyReply(450, '450 5.2.2 Mailbox full').status, '4.0.0');
});

test('bounce categories follow PowerMTA conventions', () => {
  const cases: [number, string, string][] = [
    [550, '550 5.1.1 <a@example.com>: Recipient address rejected: User unknown', 'bad-mailbox'],
    [550, '550 5.1.2 Host unknown', 'bad-domain'],
    [552, '552 5.2.2 Over quota', 'quota'],
    [554, '554 5.7.1 Message rejected as spam', 'spam-related'],
    [550, '550 5.7.1 Relaying denied', 'policy-related'],
    [554, '554 5.4.6 Routing loop detected', 'routing-errors'],
    [554, '554 5.3.0 Something odd', 'other'],
  ];
  for (const [code, text, category] of cases) assert.equal(classifyReply(code, text).category, category, text);
});

test('transport failures defer, except domains that cannot receive mail', () => {
  assert.equal(classifyFailure({ kind: 'connection', message: 'ECONNREFUSED' }).result, 'deferred');
  assert.equal(classifyFailure({ kind: 'tls', message: 'no STARTTLS' }).result, 'deferred');
  assert.equal(classifyFailure({ kind: 'dns-temporary', message: 'SERVFAIL' }).result, 'deferred');
  assert.deepEqual(classifyFailure({ kind: 'null-mx', message: 'null MX' }), { result: 'bounced', status: '5.1.10', category: 'bad-domain', diagnostic: 'null MX' });
  assert.equal(classifyFailure({ kind: 'expired', message: 'too old' }).category, 'message-expired');
});
