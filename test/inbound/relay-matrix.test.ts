// The relay-denial matrix: every listener kind x auth state x address form that has fooled
// relays, with the exact reply codes. Closed by default: only relay domains/addresses (for
// unauthenticated mail on the relay listener) and authenticated users get 250.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { openSession, startHarness, type Harness } from './harness.ts';

type AuthState = 'none' | 'authenticated' | 'wrong-user';

interface Form {
  rcpt: string;
  /** Reply to RCPT on the relay listener without authentication. */
  unauthenticated: number;
  /** Reply to RCPT once authenticated (any listener). */
  authenticated: number;
}

// 501: refused by the address parser; 550: relaying denied; 250: accepted.
const FORMS: Form[] = [
  { rcpt: '<x@evil.example>', unauthenticated: 550, authenticated: 250 },
  { rcpt: '<x@allowed.example>', unauthenticated: 250, authenticated: 250 },
  { rcpt: '<x@ALLOWED.EXAMPLE>', unauthenticated: 250, authenticated: 250 },
  { rcpt: '<x@sub.allowed.example>', unauthenticated: 550, authenticated: 250 },
  { rcpt: '<x@allowed.example.evil.example>', unauthenticated: 550, authenticated: 250 },
  { rcpt: '<user%evil.example@allowed.example>', unauthenticated: 550, authenticated: 250 },
  { rcpt: '<evil.example!user@allowed.example>', unauthenticated: 550, authenticated: 250 },
  { rcpt: '<@allowed.example:x@evil.example>', unauthenticated: 550, authenticated: 250 },
  { rcpt: '<@evil.example,@other.example:x@allowed.example>', unauthenticated: 250, authenticated: 250 },
  { rcpt: '<"x@evil.example"@allowed.example>', unauthenticated: 501, authenticated: 501 },
  { rcpt: '<"x"@evil.example>', unauthenticated: 550, authenticated: 250 },
  { rcpt: '<"x"@allowed.example>', unauthenticated: 250, authenticated: 250 },
  { rcpt: '<x@allowed.example@evil.example>', unauthenticated: 501, authenticated: 501 },
  { rcpt: '<x@evil.example@allowed.example>', unauthenticated: 501, authenticated: 501 },
  { rcpt: '<x@allowed.example.>', unauthenticated: 501, authenticated: 501 },
  { rcpt: '<x@bücher.example>', unauthenticated: 250, authenticated: 250 },
  { rcpt: '<x@xn--bcher-kva.example>', unauthenticated: 250, authenticated: 250 },
  { rcpt: '<x@bücher.example.evil.example>', unauthenticated: 550, authenticated: 250 },
  { rcpt: '<BOUNCES@Return.Example>', unauthenticated: 250, authenticated: 250 },
  { rcpt: '<other@return.example>', unauthenticated: 550, authenticated: 250 },
  { rcpt: '<fbl-42@feedback.example>', unauthenticated: 250, authenticated: 250 },
  { rcpt: '<fbl-42@feedback.example.evil.example>', unauthenticated: 550, authenticated: 250 },
  { rcpt: '<xfbl-42@feedback.example>', unauthenticated: 550, authenticated: 250 },
  { rcpt: '<x@[192.0.2.1]>', unauthenticated: 550, authenticated: 250 },
];

interface ListenerCase {
  listener: string;
  starttls: boolean;
  /** Reply to MAIL FROM without authentication. */
  mailUnauthenticated: number;
}

const LISTENERS: ListenerCase[] = [
  { listener: 'relay', starttls: false, mailUnauthenticated: 250 },
  { listener: 'relay', starttls: true, mailUnauthenticated: 250 },
  { listener: 'submission', starttls: false, mailUnauthenticated: 530 },
  { listener: 'submission', starttls: true, mailUnauthenticated: 530 },
  { listener: 'submissions', starttls: false, mailUnauthenticated: 530 },
];

describe('relay-denial matrix', () => {
  let harness: Harness;
  before(async () => {
    harness = await startHarness({ mutate: (input) => input.listeners.forEach((listener) => (listener.limits = { maxErrors: 1000 })) });
  });
  after(() => harness.close());

  for (const listenerCase of LISTENERS) {
    const authStates: AuthState[] = listenerCase.starttls || listenerCase.listener === 'submissions' ? ['none', 'authenticated', 'wrong-user'] : ['none'];
    for (const authState of authStates) {
      test(`${listenerCase.listener}${listenerCase.starttls ? ' after STARTTLS' : ''}, auth ${authState}: exact replies for every address form`, async () => {
        const auth = authState === 'authenticated' ? { user: 'alice', password: 'alice-secret' } : authState === 'wrong-user' ? { user: 'bob', password: 'bob-secret' } : undefined;
        const client = await openSession(harness, listenerCase.listener, { starttls: listenerCase.starttls, ...(auth ? { auth } : {}) });
        try {
          const results: string[] = [];
          const expected: string[] = [];
          for (const form of FORMS) {
            // alice may send from alice.example; bob may not.
            const mail = await client.command('MAIL FROM:<sender@alice.example>');
            const mailExpected = authState === 'wrong-user' ? 553 : authState === 'authenticated' ? 250 : listenerCase.mailUnauthenticated;
            const rcpt = await client.command(`RCPT TO:${form.rcpt}`);
            const rcptExpected = mailExpected !== 250 ? (form.unauthenticated === 501 ? 501 : 503) : authState === 'authenticated' ? form.authenticated : form.unauthenticated;
            results.push(`${form.rcpt} MAIL ${mail.code} RCPT ${rcpt.code}`);
            expected.push(`${form.rcpt} MAIL ${mailExpected} RCPT ${rcptExpected}`);
            if (mailExpected === 553) assert.match(mail.text, /^553 5\.7\.1 /);
            if (mailExpected === 530) assert.match(mail.text, /^530 5\.7\.0 /);
            if (rcptExpected === 550) assert.match(rcpt.text, /^550 5\.7\.1 Relaying denied$/);
            await client.command('RSET');
          }
          assert.deepEqual(results, expected);
        } finally {
          client.close();
        }
      });
    }
  }

  test('MAIL FROM on a TLS-required listener before STARTTLS is 530 5.7.0 Must issue a STARTTLS command first', async () => {
    const client = await openSession(harness, 'submission');
    try {
      assert.equal((await client.command('MAIL FROM:<sender@alice.example>')).text, '530 5.7.0 Must issue a STARTTLS command first');
    } finally {
      client.close();
    }
  });

  test('nothing reached the acceptor without DATA, and relay denials were counted', async () => {
    assert.equal(harness.collected.length, 0);
    assert.match(await harness.metric('vmta_inbound_rejections_total'), /reason="relay_denied"\} [1-9]/);
    assert.match(await harness.metric('vmta_inbound_rejections_total'), /reason="sender_not_allowed"\} [1-9]/);
  });
});
