// Real clients against real listeners: Python's smtplib exactly as application code uses it,
// openssl s_client for implicit TLS and -starttls smtp, and nodemailer.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { nodemailerSend, opensslClient, smtplibSend } from '../fixtures/smtp-clients.ts';
import { startHarness, type Harness } from './harness.ts';

describe('real SMTP clients', () => {
  let harness: Harness;
  before(async () => {
    harness = await startHarness();
  });
  after(() => harness.close());

  test('smtplib SMTP() + starttls() + login() + sendmail() on the submission listener is queued', async () => {
    const result = await smtplibSend({
      host: '127.0.0.1', port: harness.port('submission'), mode: 'starttls', caFile: harness.ca.caFile,
      user: 'bob', password: 'bob-secret', from: 'app@mail.bob.example', to: ['someone@anywhere.example'], message: 'Subject: smtplib\r\n\r\nhello from python\r\n',
    });
    assert.match(result.stdout, /^OK 250 2\.0\.0 Ok: queued as (Q\d+) \n$/, result.stdout + result.stderr);
    const queued = harness.collected.find((entry) => result.stdout.includes(entry.queueId));
    assert.ok(queued);
    assert.equal(queued.transaction.user, 'bob');
    assert.equal(queued.transaction.protocol, 'ESMTPSA');
    assert.equal(queued.transaction.mailFrom, 'app@mail.bob.example');
    assert.deepEqual(queued.transaction.recipients, [{ address: 'someone@anywhere.example', domain: 'anywhere.example' }]);
    assert.equal(queued.transaction.clientAddress, '127.0.0.1');
    assert.ok(queued.transaction.tls);
    assert.match(queued.message.toString(), /hello from python/);
  });

  test('smtplib SMTP_SSL() + login() on the implicit TLS listener is queued', async () => {
    const result = await smtplibSend({
      host: '127.0.0.1', port: harness.port('submissions'), mode: 'ssl', caFile: harness.ca.caFile,
      user: 'alice', password: 'alice-secret', from: 'alice@alice.example', to: ['x@anywhere.example'], message: 'Subject: ssl\r\n\r\nhi\r\n',
    });
    assert.match(result.stdout, /^OK 250 2\.0\.0 Ok: queued as Q\d+ \n$/, result.stdout + result.stderr);
  });

  test('smtplib login() with a wrong password gets 535 5.7.8', async () => {
    const result = await smtplibSend({
      host: '127.0.0.1', port: harness.port('submission'), mode: 'starttls', caFile: harness.ca.caFile,
      user: 'alice', password: 'wrong', from: 'alice@alice.example', to: ['x@anywhere.example'], message: 'x\r\n',
    });
    assert.match(result.stdout, /^ERROR SMTPAuthenticationError 535 5\.7\.8 /);
  });

  test('smtplib without login on the submission listener gets 530 5.7.0 Authentication required', async () => {
    const result = await smtplibSend({
      host: '127.0.0.1', port: harness.port('submission'), mode: 'starttls', caFile: harness.ca.caFile,
      from: 'alice@alice.example', to: ['x@anywhere.example'], message: 'x\r\n',
    });
    assert.match(result.stdout, /^ERROR SMTPSenderRefused 530 5\.7\.0 Authentication required/);
  });

  test('openssl s_client on the implicit TLS listener: greeting, EHLO, AUTH, MAIL, RCPT, DATA', async () => {
    const token = Buffer.from('\0alice\0alice-secret').toString('base64');
    const result = await opensslClient({
      port: harness.port('submissions'), caFile: harness.ca.caFile, starttls: false,
      input: ['EHLO openssl.test', `AUTH PLAIN ${token}`, 'MAIL FROM:<alice@alice.example>', 'RCPT TO:<x@anywhere.example>', 'DATA', 'Subject: s_client', '', 'hello', '.', 'QUIT'],
    });
    assert.match(result.stdout, /^220 relay\.test ESMTP/m);
    assert.match(result.stdout, /^235 /m);
    assert.match(result.stdout, /^250 2\.0\.0 Ok: queued as Q\d+/m);
    assert.match(result.stdout, /^221 /m);
  });

  test('openssl s_client -starttls smtp on the submission listener verifies the certificate and relays after AUTH', async () => {
    const token = Buffer.from('\0alice\0alice-secret').toString('base64');
    const result = await opensslClient({
      port: harness.port('submission'), caFile: harness.ca.caFile, starttls: true,
      input: ['EHLO openssl.test', `AUTH PLAIN ${token}`, 'MAIL FROM:<alice@alice.example>', 'RCPT TO:<x@anywhere.example>', 'QUIT'],
    });
    assert.match(result.stderr + result.stdout, /verify return:1/);
    assert.match(result.stdout, /^250-AUTH PLAIN LOGIN$/m, 'AUTH offered after TLS; CRAM-MD5 hidden because bob has a hashed secret');
    assert.match(result.stdout, /^235 /m);
    assert.match(result.stdout, /^250 2\.1\.5 Accepted/m);
  });

  test('nodemailer over STARTTLS with AUTH is queued', async () => {
    const info = await nodemailerSend({ port: harness.port('submission'), secure: false, ca: harness.ca.ca, user: 'alice', password: 'alice-secret', from: 'alice@alice.example', to: ['x@anywhere.example'], text: 'from nodemailer' });
    assert.match(info.response, /^250 2\.0\.0 Ok: queued as Q\d+$/);
  });

  test('nodemailer over implicit TLS with AUTH is queued', async () => {
    const info = await nodemailerSend({ port: harness.port('submissions'), secure: true, ca: harness.ca.ca, user: 'bob', password: 'bob-secret', from: 'bob@bob.example', to: ['x@anywhere.example'], text: 'from nodemailer' });
    assert.match(info.response, /^250 2\.0\.0 Ok: queued as Q\d+$/);
  });

  test('nodemailer without AUTH on the relay listener delivers to a relay domain', async () => {
    const info = await nodemailerSend({ port: harness.port('relay'), secure: false, ca: harness.ca.ca, from: 'someone@outside.example', to: ['postmaster@allowed.example'], text: 'bounce' });
    assert.match(info.response, /^250 2\.0\.0 /);
  });

  test('accepted messages and bytes are counted per listener', async () => {
    assert.match(await harness.metric('vmta_inbound_messages_total'), /listener="submission"\} [1-9]/);
    assert.match(await harness.metric('vmta_inbound_bytes_total'), /listener="submissions"\} [1-9]/);
    assert.match(await harness.metric('vmta_inbound_auth_total'), /listener="submission",mechanism="PLAIN",result="success"\} [1-9]/);
  });
});

describe('CRAM-MD5', () => {
  let harness: Harness;
  before(async () => {
    harness = await startHarness({ clearUsersOnly: true });
  });
  after(() => harness.close());

  test('is offered when every stored secret is clear, and smtplib login() uses it', async () => {
    const result = await smtplibSend({
      host: '127.0.0.1', port: harness.port('submission'), mode: 'starttls', caFile: harness.ca.caFile,
      user: 'bob', password: 'bob-secret', from: 'bob@bob.example', to: ['x@anywhere.example'], message: 'Subject: cram\r\n\r\nx\r\n',
    });
    assert.match(result.stdout, /^OK 250 /, result.stdout);
    assert.match(await harness.metric('vmta_inbound_auth_total'), /mechanism="CRAM-MD5",result="success"\} 1/);
  });
});
