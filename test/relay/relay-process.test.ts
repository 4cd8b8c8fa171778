// The relay as a real process (`vmta mta --config DIR`): accepting mail from Python's smtplib,
// hot reload of broken and good config files without a restart, certificate rotation without a
// restart, the start-up errors, and an orderly SIGTERM that lets an open session finish.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { once } from 'node:events';
import { copyFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, test } from 'node:test';
import net from 'node:net';
import tls from 'node:tls';
import type { RuntimeConfigInput } from '../../mta/config/schema.ts';
import { FileSpool } from '../../mta/spool/spool.ts';
import { RawSmtpClient, smtplibSend } from '../fixtures/smtp-clients.ts';
import { baseRelayConfig, freePort, loopbackRelayConfig, metricValue, REPO_ROOT, startRelayProcess, temporaryDirectory, LISTENER_TLS_FILES, writeListenerFiles, writeRelayConfig, type RelayProcess } from '../fixtures/relay-process.ts';
import { createTestCa, type TestCa } from '../fixtures/tls.ts';

const cleanups: (() => Promise<void> | void)[] = [];
let ca: TestCa;
before(() => {
  ca = createTestCa();
  cleanups.push(() => ca.cleanup());
});
after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

interface Setup {
  dir: string;
  relay: RelayProcess;
  ports: { submission: number; relay: number; tls: number };
  config: (relayDomains: string[]) => RuntimeConfigInput;
}

/** A relay with a STARTTLS submission listener (AUTH required), a relay-like port and an implicit-TLS port. */
async function startRelay(relayDomains = ['example.org']): Promise<Setup> {
  const directory = await temporaryDirectory('vmta-relay-');
  const dir = directory.path;
  const certificate = ca.issue(['localhost']);
  await writeListenerFiles(dir, certificate, { alice: 'alice-password' });
  const ports = { submission: await freePort(), relay: await freePort(), tls: await freePort() };
  const adminPort = await freePort();
  const config = (domains: string[]): RuntimeConfigInput =>
    baseRelayConfig({
      listeners: [
        { name: 'submission', address: '127.0.0.1', port: ports.submission, relayPolicy: 'submission', tls: { mode: 'starttls', required: true, ...LISTENER_TLS_FILES }, auth: { required: true, mechanisms: ['PLAIN', 'LOGIN'] } },
        { name: 'relay', address: '127.0.0.1', port: ports.relay, relayPolicy: 'inbound', auth: { mechanisms: [] } },
        { name: 'tls', address: '127.0.0.1', port: ports.tls, relayPolicy: 'submission', tls: { mode: 'implicit', required: true, ...LISTENER_TLS_FILES }, auth: { required: true } },
      ],
      relayPolicies: [
        { name: 'submission', users: { secretPath: 'users', defaultAllowedSenderDomains: ['example.com'] } },
        { name: 'inbound', relayDomains: domains },
      ],
      admin: { address: '127.0.0.1', port: adminPort },
    });
  await writeRelayConfig(dir, config(relayDomains));
  const relay = await startRelayProcess({ configDir: dir, adminPort, args: ['--shutdown-timeout', '20s'] });
  cleanups.push(async () => {
    await relay.kill('SIGKILL');
    await directory.remove();
  });
  return { dir, relay, ports, config };
}

async function storedMessages(spoolDir: string): Promise<Map<string, string[]>> {
  const spool = await FileSpool.open(spoolDir);
  const found = new Map<string, string[]>();
  try {
    for await (const message of spool.scan()) found.set(message.id, message.envelope.recipients.map((recipient) => recipient.address));
  } finally {
    await spool.close();
  }
  return found;
}

/** Sends one unauthenticated message on the relay-like port and returns the reply to RCPT TO. */
async function rcptReply(port: number, recipient: string): Promise<number> {
  const client = await RawSmtpClient.connect(port);
  try {
    assert.equal((await client.read()).code, 220);
    assert.equal((await client.command('EHLO client.test')).code, 250);
    assert.equal((await client.command('MAIL FROM:<sender@remote.test>')).code, 250);
    return (await client.command(`RCPT TO:<${recipient}>`)).code;
  } finally {
    client.close();
  }
}

test('python smtplib submits through the real relay process (STARTTLS, login, sendmail) and the message is in the spool', async () => {
  const { dir, relay, ports } = await startRelay();
  const result = await smtplibSend({
    host: '127.0.0.1', port: ports.submission, mode: 'starttls', caFile: ca.caFile, user: 'alice', password: 'alice-password',
    from: 'app@example.com', to: ['someone@example.org'], message: 'Subject: hi\r\n\r\nhello\r\n',
  });
  const queueId = /^OK 250 .*queued as (\S+)/.exec(result.stdout)?.[1];
  assert.ok(queueId, `expected 250 with a queue id, got ${result.stdout}${result.stderr}`);
  await relay.kill('SIGTERM');
  assert.deepEqual((await storedMessages(path.join(dir, 'spool'))).get(queueId), ['someone@example.org']);
});

test('a STARTTLS session that has ended no longer counts as open (shutdown and per-client limits do not wait for it)', async () => {
  const { relay, ports } = await startRelay();
  const result = await smtplibSend({
    host: '127.0.0.1', port: ports.submission, mode: 'starttls', caFile: ca.caFile, user: 'alice', password: 'alice-password',
    from: 'app@example.com', to: ['someone@example.org'], message: 'Subject: hi\r\n\r\nhello\r\n',
  });
  assert.match(result.stdout, /^OK 250/);
  const deadline = Date.now() + 10_000;
  let active = await metricValue(relay.adminUrl, 'vmta_inbound_connections_active{listener="submission"}');
  while (active !== 0 && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    active = await metricValue(relay.adminUrl, 'vmta_inbound_connections_active{listener="submission"}');
  }
  assert.equal(active, 0);
});

test('the relay logs one line listing every bound listener', async () => {
  const { relay, ports } = await startRelay();
  const record = await relay.waitForLog((entry) => Array.isArray(entry.listeners));
  assert.deepEqual(
    (record.listeners as { listener: string; port: number }[]).map(({ listener, port }) => [listener, port]),
    [['submission', ports.submission], ['relay', ports.relay], ['tls', ports.tls]],
  );
  assert.match(record.msg, new RegExp(`submission 127\\.0\\.0\\.1:${ports.submission}.*relay 127\\.0\\.0\\.1:${ports.relay}.*tls 127\\.0\\.0\\.1:${ports.tls}`));
});

test('a broken config file is refused while the old policy keeps serving; a good one applies without a restart', async () => {
  const { dir, relay, ports, config } = await startRelay(['example.org']);
  const pid = relay.child.pid;
  assert.equal(await rcptReply(ports.relay, 'a@example.org'), 250);
  assert.equal(await rcptReply(ports.relay, 'a@example.net'), 550);

  const broken = config(['example.net']);
  broken.listeners[1]!.port = 70000;
  await writeRelayConfig(dir, broken);
  const refusal = await relay.waitForLog((entry) => entry.level === 50 && /refused/.test(entry.msg));
  assert.match(refusal.msg, /listeners\[1\]\.port: .*got 70000/);
  assert.equal(await metricValue(relay.adminUrl, 'vmta_config_last_reload_successful'), 0);
  assert.equal(await metricValue(relay.adminUrl, 'vmta_config_reloads_total{result="failure"}'), 1);
  const status = (await (await fetch(`${relay.adminUrl}/config`)).json()) as { lastError?: { message: string } };
  assert.match(status.lastError?.message ?? '', /listeners\[1\]\.port/);
  assert.equal(await rcptReply(ports.relay, 'a@example.org'), 250, 'the old policy still applies');
  assert.equal(await rcptReply(ports.relay, 'a@example.net'), 550);

  await writeRelayConfig(dir, config(['example.net']));
  await relay.waitForLog((entry) => entry.msg === 'runtime config reloaded');
  assert.equal(await rcptReply(ports.relay, 'a@example.net'), 250, 'the new policy applies');
  assert.equal(await rcptReply(ports.relay, 'a@example.org'), 550);
  assert.equal(await metricValue(relay.adminUrl, 'vmta_config_last_reload_successful'), 1);
  assert.equal(relay.child.pid, pid);
  assert.equal(relay.child.exitCode, null, 'no restart');
});

test('a reload whose certificate file cannot be read is refused as a whole: no part of it applies', async () => {
  const { dir, relay, ports, config } = await startRelay(['example.org']);
  const next = config(['example.net']);
  next.listeners[2]!.tls = { mode: 'implicit', required: true, certFile: 'tls/missing.crt', keyFile: 'tls/tls.key' };
  await writeRelayConfig(dir, next);
  const refusal = await relay.waitForLog((entry) => entry.level === 50 && /refused/.test(entry.msg));
  assert.match(refusal.msg, /missing\.crt/);
  assert.equal(await rcptReply(ports.relay, 'a@example.net'), 550, 'the relay policy of the refused version did not apply');
  assert.equal(await rcptReply(ports.relay, 'a@example.org'), 250);
  assert.equal(await metricValue(relay.adminUrl, 'vmta_config_last_reload_successful'), 0);
});

function servedCertificateSerial(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port, ca: ca.ca, servername: 'localhost' }, () => {
      const serial = socket.getPeerCertificate().serialNumber;
      socket.destroy();
      resolve(serial);
    });
    socket.once('error', reject);
  });
}

test('a rotated certificate is served to new connections without a restart', async () => {
  const { dir, relay, ports } = await startRelay();
  const before = await servedCertificateSerial(ports.tls);
  const rotated = ca.issue(['localhost']);
  // As cert-manager does with a mounted Secret: the key and certificate files are replaced.
  await copyFile(rotated.keyFile, path.join(dir, 'tls/tls.key'));
  await copyFile(rotated.certFile, path.join(dir, 'tls/tls.crt'));
  const expected = new X509Certificate(rotated.cert).serialNumber;
  assert.notEqual(before, expected);
  const deadline = Date.now() + 30_000;
  let served = before;
  while (served !== expected && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 200));
    served = await servedCertificateSerial(ports.tls);
  }
  assert.equal(served, expected);
  assert.equal(relay.child.exitCode, null, 'no restart');
});

test('SIGTERM: not ready, no new connections, the open session finishes its message, exit code 0', async () => {
  const { dir, relay, ports } = await startRelay();
  const client = await RawSmtpClient.connect(ports.relay);
  assert.equal((await client.read()).code, 220);
  await client.command('EHLO client.test');
  assert.equal((await client.command('MAIL FROM:<sender@remote.test>')).code, 250);
  assert.equal((await client.command('RCPT TO:<late@example.org>')).code, 250);
  assert.equal((await client.command('DATA')).code, 354);
  client.write('Subject: in flight\r\n\r\nstarted before SIGTERM\r\n');

  relay.child.kill('SIGTERM');
  await relay.waitForLog((entry) => /^listeners closed/.test(entry.msg));
  const readiness = await fetch(`${relay.adminUrl}/readyz`);
  assert.equal(readiness.status, 503);
  await assert.rejects(RawSmtpClient.connect(ports.relay), /ECONNREFUSED/);

  const reply = await client.command('.');
  assert.equal(reply.code, 250);
  const queueId = /queued as (\S+)/.exec(reply.text)?.[1];
  assert.equal((await client.command('QUIT')).code, 221);
  assert.deepEqual(await relay.exited, { code: 0, signal: null });
  assert.ok(queueId && (await storedMessages(path.join(dir, 'spool'))).has(queueId));
});

test('a SIGTERM that arrives while the relay is still starting is held, and the relay then stops cleanly with exit code 0', async () => {
  const directory = await temporaryDirectory('vmta-early-term-');
  cleanups.push(directory.remove);
  await writeRelayConfig(directory.path, loopbackRelayConfig(await freePort(), await freePort()));
  const child = spawn(process.execPath, [path.join(REPO_ROOT, 'cli/vmta.ts'), 'mta', '--config', directory.path], { stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = once(child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;
  let output = '';
  let signalled = false;
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
    output += chunk;
    // The first log line comes from Relay.start(), long before it returns.
    if (!signalled && output.includes('runtime config loaded')) {
      signalled = true;
      child.kill('SIGTERM');
    }
  });
  const [code, signal] = await exited;
  assert.deepEqual({ code, signal }, { code: 0, signal: null });
  assert.match(output, /relay stopped/);
});

async function runCommand(args: string[]): Promise<{ code: number | null; stderr: string; stdout: string }> {
  const child = spawn(process.execPath, [path.join(REPO_ROOT, 'cli/vmta.ts'), 'mta', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  let stdout = '';
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
  const [code] = (await once(child, 'exit')) as [number | null];
  return { code, stderr, stdout };
}

test('vmta mta exits 2 on an invalid initial config, naming the field and the value', async () => {
  const directory = await temporaryDirectory('vmta-badconfig-');
  cleanups.push(directory.remove);
  await writeRelayConfig(directory.path, baseRelayConfig({ hostname: 'bad host!' }));
  const result = await runCommand(['--config', directory.path]);
  assert.equal(result.code, 2);
  assert.match(result.stderr, /hostname: .*got "bad host!"/);
});

test('vmta mta exits 1 when a listener cannot bind, naming the address and who holds it, and leaves nothing running', async () => {
  const directory = await temporaryDirectory('vmta-busyport-');
  cleanups.push(directory.remove);
  const blocker = net.createServer().listen(0, '127.0.0.1');
  await once(blocker, 'listening');
  cleanups.push(() => void blocker.close());
  const busy = (blocker.address() as net.AddressInfo).port;
  await writeRelayConfig(directory.path, loopbackRelayConfig(busy, await freePort()));
  const result = await runCommand(['--config', directory.path]);
  assert.equal(result.code, 1);
  assert.match(result.stderr, new RegExp(`cannot listen on 127\\.0\\.0\\.1:${busy}: the port is in use`));
});

test('vmta mta exits 2 on bad options and prints its usage for --help', async () => {
  const missing = await runCommand([]);
  assert.equal(missing.code, 2);
  assert.match(missing.stderr, /--config DIR is required/);
  const badTimeout = await runCommand(['--config', '.', '--shutdown-timeout', 'soon']);
  assert.equal(badTimeout.code, 2);
  assert.match(badTimeout.stderr, /--shutdown-timeout: "soon" is not a duration/);
  const help = await runCommand(['--help']);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /usage: vmta mta --config DIR/);
});
