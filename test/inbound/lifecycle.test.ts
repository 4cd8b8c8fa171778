// Listener TLS details (SNI certificates, minimum version) and the shutdown sequence:
// stopAccepting closes the listening sockets while open sessions finish; drain bounds the wait.
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import tls from 'node:tls';
import { after, before, describe, test } from 'node:test';
import { RawSmtpClient } from '../fixtures/smtp-clients.ts';
import type { TestCertificate } from '../fixtures/tls.ts';
import { createTestCa } from '../fixtures/tls.ts';
import { expectCode, openSession, startHarness, type Harness } from './harness.ts';

function peerCertificate(port: number, ca: Buffer, servername: string, maxVersion?: tls.SecureVersion): Promise<X509Certificate | undefined> {
  return new Promise((resolve, reject) => {
    // Identity is not what is tested here (the default certificate does not name every server name asked for).
    const socket = tls.connect({ host: '127.0.0.1', port, ca, servername, checkServerIdentity: () => undefined, ...(maxVersion ? { maxVersion } : {}) }, () => {
      const cert = socket.getPeerX509Certificate();
      socket.destroy();
      resolve(cert);
    });
    socket.once('error', reject);
  });
}

describe('listener TLS', () => {
  const sniCa = createTestCa('sni CA');
  let alt: TestCertificate;
  let harness: Harness;
  before(async () => {
    alt = sniCa.issue(['alt.test']);
    harness = await startHarness({
      mutate: (input) => {
        input.listeners[2]!.tls = { ...input.listeners[2]!.tls, sni: [{ serverName: 'alt.test', certFile: alt.certFile, keyFile: alt.keyFile }] };
        input.listeners[1]!.tls = { ...input.listeners[1]!.tls, minVersion: 'TLSv1.3' };
      },
    });
  });
  after(async () => {
    await harness.close();
    sniCa.cleanup();
  });

  test('SNI picks the certificate for the requested name; other names get the default', async () => {
    const port = harness.port('submissions');
    assert.equal((await peerCertificate(port, sniCa.ca, 'alt.test'))?.fingerprint256, new X509Certificate(alt.cert).fingerprint256);
    assert.equal((await peerCertificate(port, harness.ca.ca, 'other.test'))?.fingerprint256, new X509Certificate(harness.cert.cert).fingerprint256);
    assert.match(await harness.metric('vmta_listener_certificate_expiry_timestamp_seconds'), /listener="submissions",server_name="alt.test"\} \d+/);
  });

  test('SNI also applies after STARTTLS', async () => {
    const alternate = await startHarness({
      mutate: (input) => {
        input.listeners[0]!.tls = { ...input.listeners[0]!.tls, sni: [{ serverName: 'alt.test', certFile: alt.certFile, keyFile: alt.keyFile }] };
      },
    });
    const client = await openSession(alternate, 'relay');
    try {
      expectCode(await client.command('STARTTLS'), 220);
      await client.startTls(sniCa.ca, 'alt.test');
      assert.equal((client.socket as tls.TLSSocket).getPeerX509Certificate()?.fingerprint256, new X509Certificate(alt.cert).fingerprint256);
    } finally {
      client.close();
      await alternate.close();
    }
  });

  test('a listener with minVersion TLSv1.3 refuses a TLS 1.2 client; the default (TLSv1.2) accepts it', async () => {
    const client = await openSession(harness, 'submission');
    try {
      expectCode(await client.command('STARTTLS'), 220);
      await assert.rejects(
        new Promise<void>((resolve, reject) => {
          const secure = tls.connect({ socket: client.socket, ca: harness.ca.ca, servername: 'localhost', maxVersion: 'TLSv1.2' }, () => resolve());
          secure.once('error', reject);
        }),
      );
    } finally {
      client.close();
    }
    assert.ok(await peerCertificate(harness.port('submissions'), harness.ca.ca, 'localhost', 'TLSv1.2'));
  });
});

describe('shutdown', () => {
  let harness: Harness;
  before(async () => {
    harness = await startHarness();
  });
  after(() => harness.close());

  test('stopAccepting refuses new connections while an open session completes its message; drain then closes', async () => {
    const port = harness.port('relay');
    const open = await openSession(harness, 'relay', { starttls: true });
    await harness.server.stopAccepting();
    await assert.rejects(RawSmtpClient.connect(port), /ECONNREFUSED/);
    expectCode(await open.command('MAIL FROM:<a@outside.example>'), 250);
    expectCode(await open.command('RCPT TO:<x@allowed.example>'), 250);
    expectCode(await open.command('DATA'), 354);
    assert.match((await open.command('Subject: late\r\n\r\nx\r\n.')).text, /^250 2\.0\.0 Ok: queued as /);
    const started = Date.now();
    await harness.server.drain(300);
    assert.ok(Date.now() - started >= 250, 'drain waited for the open session');
    await open.waitClosed();
    // smtp-server reports the end of a session on the next turn of the event loop.
    for (let tries = 0; tries < 50 && !/tls_version="TLSv1\.3"/.test(await harness.metric('vmta_inbound_connections_total')); tries++) await new Promise((resolve) => setTimeout(resolve, 20));
    assert.match(await harness.metric('vmta_inbound_connections_total'), /listener="relay",tls_mode="starttls",tls_version="TLSv1\.3"\} 1/);
    assert.match(await harness.metric('vmta_inbound_connections_active'), /listener="relay"\} 0/);
  });
});

describe('logs', () => {
  test('an accepted message is logged as JSON with listener, client, user and queueId', async () => {
    const logLines: string[] = [];
    const harness = await startHarness({ logLines });
    try {
      const client = await openSession(harness, 'submissions', { auth: { user: 'alice', password: 'alice-secret' } });
      try {
        expectCode(await client.command('MAIL FROM:<alice@alice.example>'), 250);
        expectCode(await client.command('RCPT TO:<x@anywhere.example>'), 250);
        expectCode(await client.command('DATA'), 354);
        expectCode(await client.command('Subject: log\r\n\r\nx\r\n.'), 250);
      } finally {
        client.close();
      }
      const accepted = logLines.map((line) => JSON.parse(line) as Record<string, unknown>).find((entry) => entry.msg === 'message accepted');
      assert.ok(accepted, logLines.join(''));
      assert.equal(accepted.listener, 'submissions');
      assert.equal(accepted.client, '127.0.0.1');
      assert.equal(accepted.user, 'alice');
      assert.equal(accepted.queueId, harness.collected.at(-1)?.queueId);
    } finally {
      await harness.close();
    }
  });
});
