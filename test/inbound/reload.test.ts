// Hot reload: new policies, users, certificates and limits apply to new sessions; certificate
// and user files are read again; a listener whose port changed is re-bound, a removed one
// closed, a new one opened; a reload whose files cannot be read throws and changes nothing.
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import net from 'node:net';
import { InboundServer } from '../../mta/inbound/inbound-server.ts';
import { createLogger } from '../../mta/observe/log.ts';
import { after, before, describe, test } from 'node:test';
import { RawSmtpClient } from '../fixtures/smtp-clients.ts';
import { expectCode, openSession, startHarness, writeUsersDir, type Harness } from './harness.ts';

describe('reload', () => {
  let harness: Harness;
  before(async () => {
    harness = await startHarness();
  });
  after(() => harness.close());

  async function rcptCode(rcpt: string): Promise<number> {
    const client = await openSession(harness, 'relay');
    try {
      expectCode(await client.command('MAIL FROM:<a@outside.example>'), 250);
      return (await client.command(`RCPT TO:<${rcpt}>`)).code;
    } finally {
      client.close();
    }
  }

  test('a new relay domain applies to new sessions, while an open session keeps its policy', async () => {
    const open = await openSession(harness, 'relay');
    try {
      assert.equal(await rcptCode('x@new.example'), 550);
      await harness.server.reload(harness.buildConfig((input) => input.relayPolicies[0]!.relayDomains!.push('new.example')));
      assert.equal(await rcptCode('x@new.example'), 250);
      expectCode(await open.command('MAIL FROM:<a@outside.example>'), 250);
      assert.equal((await open.command('RCPT TO:<x@new.example>')).code, 550);
    } finally {
      open.close();
    }
  });

  test('user files are read again: a changed password works after reload', async () => {
    writeUsersDir(harness.usersDir, { alice: 'rotated-secret' });
    await harness.server.reload(harness.buildConfig());
    const client = await openSession(harness, 'submissions');
    try {
      assert.match((await client.command(`AUTH PLAIN ${Buffer.from('\0alice\0alice-secret').toString('base64')}`)).text, /^535 /);
      assert.match((await client.command(`AUTH PLAIN ${Buffer.from('\0alice\0rotated-secret').toString('base64')}`)).text, /^235 /);
    } finally {
      client.close();
    }
  });

  test('a rotated certificate is served to new sessions and its expiry is exported', async () => {
    const rotated = harness.ca.issue(['localhost'], { days: 3 });
    writeFileSync(harness.cert.certFile, rotated.cert);
    writeFileSync(harness.cert.keyFile, rotated.key);
    await harness.server.reload(harness.buildConfig());
    const client = await RawSmtpClient.connect(harness.port('submissions'), { implicitTls: { ca: harness.ca.ca } });
    try {
      const peer = (client.socket as import('node:tls').TLSSocket).getPeerX509Certificate();
      assert.equal(peer?.fingerprint256, new X509Certificate(rotated.cert).fingerprint256);
    } finally {
      client.close();
    }
    const expiry = Math.floor(new X509Certificate(rotated.cert).validToDate.getTime() / 1000);
    assert.match(await harness.metric('vmta_listener_certificate_expiry_timestamp_seconds'), new RegExp(`listener="submissions",server_name="default"\\} ${expiry}`));
  });

  test('a reload whose certificate cannot be read throws a clear error and the old state keeps serving', async () => {
    const before = harness.server.boundAddresses();
    await assert.rejects(
      harness.server.reload(harness.buildConfig((input) => {
        input.relayPolicies[0]!.relayDomains!.push('should-not-apply.example');
        input.listeners[2]!.tls!.certFile = '/nonexistent/cert.pem';
      })),
      /listener "submissions": cannot read TLS certificate or key \(\/nonexistent\/cert\.pem/,
    );
    assert.deepEqual(harness.server.boundAddresses(), before);
    assert.equal(await rcptCode('x@should-not-apply.example'), 550);
    assert.equal(await rcptCode('x@allowed.example'), 250);
  });

  test('a reload whose users directory cannot be read throws and changes nothing', async () => {
    await assert.rejects(
      harness.server.reload(harness.buildConfig((input) => {
        input.relayPolicies[1]!.users!.secretPath = '/nonexistent/users';
      })),
      /cannot read users directory \/nonexistent\/users/,
    );
  });

  test('a listener whose port changes is re-bound, a removed one closed, a new one opened', async () => {
    const before = Object.fromEntries(harness.server.boundAddresses().map((entry) => [entry.listener, entry.port]));
    const next = harness.buildConfig((input) => {
      input.listeners.splice(1, 1);
      input.listeners.push({ ...input.listeners[0]!, name: 'alternate', port: 4 });
    });
    // Placeholders become port 0 (ephemeral): give "relay" a known free port so it must be re-bound.
    const fresh = await new Promise<number>((resolve) => {
      const probe = net.createServer().listen(0, '127.0.0.1', () => {
        const port = (probe.address() as { port: number }).port;
        probe.close(() => resolve(port));
      });
    });
    next.listeners[0] = { ...next.listeners[0]!, port: fresh };
    await harness.server.reload(next);
    const after = Object.fromEntries(harness.server.boundAddresses().map((entry) => [entry.listener, entry.port]));
    assert.deepEqual(Object.keys(after).sort(), ['alternate', 'relay', 'submissions']);
    assert.equal(after.relay, fresh);
    assert.equal(after.submissions, before.submissions);
    await assert.rejects(RawSmtpClient.connect(before.submission!), /ECONNREFUSED/);
    const alternate = await RawSmtpClient.connect(after.alternate!);
    try {
      expectCode(await alternate.read(), 220);
    } finally {
      alternate.close();
    }
  });
});

describe('start', () => {
  test('start fails with an error naming the listener and address when its port is taken', async () => {
    const blocker = net.createServer();
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
    const taken = (blocker.address() as net.AddressInfo).port;
    const harness = await startHarness();
    try {
      const config = harness.buildConfig();
      config.listeners[1] = { ...config.listeners[1]!, port: taken };
      await assert.rejects(InboundServer.start(config, { metrics: harness.metrics, logger: createLogger('t', 'silent'), accept: async () => ({ queueId: 'x' }) }), new RegExp(`listener "submission": cannot listen on 127\\.0\\.0\\.1:${taken}`));
    } finally {
      await harness.close();
      blocker.close();
    }
  });
});
