// The relay decision as a pure function: closed by default, CIDRs with IPv4-mapped IPv6,
// relay domains and addresses (exact or anchored /regex/), sender domains per user.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { parseMailbox, type Mailbox } from '../../mta/inbound/address.ts';
import { RelayPolicy, Listener } from '../../mta/config/schema.ts';
import { compileRelayPolicy, decideRecipient, decideSender, domainMatchesAny } from '../../mta/inbound/relay-policy.ts';

function mailbox(text: string): Mailbox {
  const result = parseMailbox(text);
  if (!result.ok) throw new Error(result.error);
  return result.mailbox;
}

const policy = compileRelayPolicy(RelayPolicy.parse({
  name: 'p',
  allowedCidrs: ['10.0.0.0/8', '2001:db8::/32', '192.0.2.0/24'],
  relayDomains: ['allowed.example', '*.sub.example'],
  relayAddresses: ['Bounces@Return.Example', '/fbl-[0-9]+@feedback\\.example/i'],
}));
const closed = compileRelayPolicy(RelayPolicy.parse({ name: 'closed' }));

describe('decideRecipient', () => {
  const cases: Array<[string, string, string | undefined, boolean]> = [
    // client, recipient, user, allowed
    ['203.0.113.9', 'x@evil.example', undefined, false],
    ['203.0.113.9', 'x@allowed.example', undefined, true],
    ['203.0.113.9', 'x@a.sub.example', undefined, true],
    ['203.0.113.9', 'x@sub.example', undefined, false],
    ['203.0.113.9', 'x%evil.example@allowed.example', undefined, false],
    ['203.0.113.9', 'bounces@return.example', undefined, true],
    ['203.0.113.9', 'FBL-7@feedback.example', undefined, true],
    ['203.0.113.9', 'fbl-7@feedback.example.evil', undefined, false],
    ['10.1.2.3', 'x@evil.example', undefined, true],
    ['::ffff:10.1.2.3', 'x@evil.example', undefined, true],
    ['192.0.2.44', 'x@evil.example', undefined, true],
    ['2001:db8::1', 'x@evil.example', undefined, true],
    ['2001:db9::1', 'x@evil.example', undefined, false],
    ['203.0.113.9', 'x@evil.example', 'alice', true],
  ];
  for (const [client, recipient, user, allowed] of cases) {
    test(`${client} -> ${recipient}${user ? ` as ${user}` : ''}: ${allowed ? 'relay' : '550 5.7.1'}`, () => {
      const decision = decideRecipient({ policy, user, clientAddress: client, recipient: mailbox(recipient), smtpUtf8: false });
      if (allowed) assert.deepEqual(decision, { ok: true });
      else assert.deepEqual(decision, { ok: false, code: 550, message: '5.7.1 Relaying denied', reason: 'relay_denied' });
    });
  }

  test('a policy with nothing configured relays nothing for anyone unauthenticated', () => {
    assert.equal(decideRecipient({ policy: closed, user: undefined, clientAddress: '127.0.0.1', recipient: mailbox('x@localhost.example'), smtpUtf8: false }).ok, false);
  });

  test('a non-ASCII local part without SMTPUTF8 gets 553 5.6.7', () => {
    assert.deepEqual(decideRecipient({ policy, user: 'alice', clientAddress: '10.0.0.1', recipient: mailbox('jörg@allowed.example'), smtpUtf8: false }), { ok: false, code: 553, message: '5.6.7 Non-ASCII addresses require SMTPUTF8', reason: 'syntax' });
  });
});

describe('decideSender', () => {
  const listener = Listener.parse({ name: 'l', port: 587, relayPolicy: 'p', tls: { mode: 'starttls', required: true, certFile: 'c', keyFile: 'k' }, auth: { required: true } });
  const base = { listener, secure: true, smtpUtf8: false };
  test('TLS required and not secure: 530 5.7.0 Must issue a STARTTLS command first', () => {
    assert.deepEqual(decideSender({ ...base, secure: false, user: 'alice', userSenderDomains: ['*'], mailFrom: mailbox('a@x.example') }), { ok: false, code: 530, message: '5.7.0 Must issue a STARTTLS command first', reason: 'tls_required' });
  });
  test('auth required and not authenticated: 530 5.7.0 Authentication required', () => {
    assert.deepEqual(decideSender({ ...base, user: undefined, userSenderDomains: [], mailFrom: mailbox('a@x.example') }), { ok: false, code: 530, message: '5.7.0 Authentication required', reason: 'auth_required' });
  });
  test('a sender domain outside the user’s list: 553 5.7.1', () => {
    const decision = decideSender({ ...base, user: 'alice', userSenderDomains: ['alice.example', '*.alice.example'], mailFrom: mailbox('a@ALICE.example.evil') });
    assert.equal(decision.ok, false);
    assert.equal(!decision.ok && decision.code, 553);
  });
  test('the user’s own domain, a sub-domain by wildcard and the null sender are allowed', () => {
    for (const mailFrom of [mailbox('a@Alice.Example.'), mailbox('a@mail.alice.example'), null]) {
      assert.deepEqual(decideSender({ ...base, user: 'alice', userSenderDomains: ['alice.example', '*.alice.example'], mailFrom }), { ok: true });
    }
  });
});

describe('matching helpers', () => {
  test('domainMatchesAny: exact, *.sub (sub-domains only) and *', () => {
    assert.equal(domainMatchesAny('a.example', ['a.example']), true);
    assert.equal(domainMatchesAny('x.a.example', ['*.a.example']), true);
    assert.equal(domainMatchesAny('a.example', ['*.a.example']), false);
    assert.equal(domainMatchesAny('evila.example', ['*.a.example']), false);
    assert.equal(domainMatchesAny('anything', ['*']), true);
  });
});
