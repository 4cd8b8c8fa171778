// SMTP AUTH: never read before TLS where TLS is required, PLAIN/LOGIN/CRAM-MD5 against the
// policy's users directory (clear and {SCRYPT} secrets), failed attempts rate-limited per client.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { RawSmtpClient } from '../fixtures/smtp-clients.ts';
import { expectCode, openSession, startHarness, type Harness } from './harness.ts';

const b64 = (text: string) => Buffer.from(text).toString('base64');

describe('AUTH before TLS', () => {
  let harness: Harness;
  before(async () => {
    harness = await startHarness();
  });
  after(() => harness.close());

  for (const listener of ['relay', 'submission']) {
    test(`${listener}: AUTH is not advertised before STARTTLS and is advertised after`, async () => {
      const client = await RawSmtpClient.connect(harness.port(listener));
      try {
        expectCode(await client.read(), 220);
        const plain = await client.command('EHLO client.test');
        assert.doesNotMatch(plain.text, /AUTH/);
        assert.match(plain.text, /STARTTLS/);
        expectCode(await client.command('STARTTLS'), 220);
        await client.startTls(harness.ca.ca);
        assert.match((await client.command('EHLO client.test')).text, /^250-AUTH PLAIN LOGIN$/m);
      } finally {
        client.close();
      }
    });

    test(`${listener}: AUTH PLAIN with valid credentials before STARTTLS gets 530 5.7.0 and does not authenticate`, async () => {
      const client = await openSession(harness, listener);
      try {
        assert.equal((await client.command(`AUTH PLAIN ${b64('\0alice\0alice-secret')}`)).text, '530 5.7.0 Must issue a STARTTLS command first');
        // Not authenticated: relaying to an outside domain is still denied.
        const mail = await client.command('MAIL FROM:<alice@alice.example>');
        if (listener === 'relay') {
          expectCode(mail, 250);
          assert.equal((await client.command('RCPT TO:<x@evil.example>')).text, '550 5.7.1 Relaying denied');
        } else {
          assert.equal(mail.text, '530 5.7.0 Must issue a STARTTLS command first');
        }
      } finally {
        client.close();
      }
    });
  }

  test('AUTH LOGIN before STARTTLS: the credential lines that follow are not read as credentials', async () => {
    const client = await openSession(harness, 'submission');
    try {
      client.write(`AUTH LOGIN\r\n${b64('alice')}\r\n${b64('alice-secret')}\r\n`);
      assert.equal((await client.read()).text, '530 5.7.0 Must issue a STARTTLS command first');
      // Each base64 line is treated as an (unknown) command, never as a username or password.
      assert.match((await client.read()).text, /^500 /);
      assert.match((await client.read()).text, /^500 /);
    } finally {
      client.close();
    }
    const auth = await harness.metric('vmta_inbound_auth_total');
    assert.doesNotMatch(auth, /result="(success|failure)"/, 'no credential was ever checked');
    assert.match(await harness.metric('vmta_inbound_rejections_total'), /listener="submission",reason="tls_required"\} [1-9]/);
  });
});

describe('AUTH mechanisms and users', () => {
  let harness: Harness;
  before(async () => {
    harness = await startHarness({ mutate: (input) => input.listeners.forEach((listener) => (listener.auth = { ...listener.auth, maxFailures: 3, failureWindow: '10m' })) });
  });
  after(() => harness.close());

  test('AUTH LOGIN with a {SCRYPT} secret succeeds', async () => {
    const client = await openSession(harness, 'submissions');
    try {
      expectCode(await client.command('AUTH LOGIN'), 334);
      expectCode(await client.command(b64('bob')), 334);
      assert.equal((await client.command(b64('bob-secret'))).text, '235 2.7.0 Authentication successful');
      expectCode(await client.command('MAIL FROM:<bob@deep.sub.bob.example>'), 250);
    } finally {
      client.close();
    }
  });

  test('CRAM-MD5 is not offered when a stored secret is hashed, and is refused', async () => {
    const client = await openSession(harness, 'submissions');
    try {
      assert.doesNotMatch((await client.command('EHLO again.test')).text, /CRAM-MD5/);
      assert.match((await client.command('AUTH CRAM-MD5')).text, /^504 /);
    } finally {
      client.close();
    }
  });

  test('dotfiles and the ..data entries of the Secret directory are not users', async () => {
    const client = await openSession(harness, 'submissions');
    try {
      assert.match((await client.command(`AUTH PLAIN ${b64('\0.hidden\0not-a-user')}`)).text, /^535 5\.7\.8 /);
      assert.match((await client.command(`AUTH PLAIN ${b64('\0..data\0x')}`)).text, /^535 5\.7\.8 /);
    } finally {
      client.close();
    }
  });

  test('after maxFailures failed attempts the client gets 454 4.7.0 saying for how long, on every AUTH and on a new connection, and is never checked meanwhile', async () => {
    const client = await openSession(harness, 'submission', { starttls: true });
    // The two failures of the previous test (on another listener: the count is per client, not
    // per listener) plus this one reach maxFailures = 3 for 127.0.0.1.
    const third = await client.command(`AUTH PLAIN ${b64('\0alice\0wrong')}`);
    assert.match(third.text, /^454 4\.7\.0 Too many failed authentication attempts from 127\.0\.0\.1; AUTH is refused on every listener for \d+ more minute\(s\)$/);
    // The session goes on, so a client trying its next mechanism reads the reason too.
    assert.match((await client.command('AUTH LOGIN')).text, /^454 4\.7\.0 Too many failed authentication attempts/);
    client.close();
    const again = await openSession(harness, 'submission', { starttls: true });
    try {
      // Even the right password is not checked while the client is limited.
      assert.match((await again.command(`AUTH PLAIN ${b64('\0alice\0alice-secret')}`)).text, /^454 4\.7\.0 Too many failed authentication attempts from 127\.0\.0\.1; AUTH is refused/);
    } finally {
      again.close();
    }
    assert.match(await harness.metric('vmta_inbound_auth_total'), /result="rate_limited"\} 2/);
    assert.match(await harness.metric('vmta_inbound_rejections_total'), /reason="auth_rate_limited"\} 3/);
  });
});
