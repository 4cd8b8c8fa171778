// End to end through the real relay process: Python's smtplib submits on a STARTTLS + AUTH
// submission listener, the relay spools the message, resolves MX through a real DNS server on
// loopback and delivers from the VirtualMTA's source address to sink MX servers on 127.x
// addresses; a 5xx recipient comes back as a DSN at the sender's own MX; and `vmta queue`
// (the CLI, over the admin API) pauses and resumes a queue behind a deferring MX.
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { simpleParser } from 'mailparser';
import { startDnsServer, type TestDnsServer } from '../fixtures/dns-server.ts';
import { baseRelayConfig, freePort, metricValue, REPO_ROOT, startRelayProcess, temporaryDirectory, LISTENER_TLS_FILES, writeListenerFiles, writeRelayConfig, type RelayProcess } from '../fixtures/relay-process.ts';
import { loopbackAddresses, startSinkGroup, type SinkMx } from '../fixtures/sink-mx.ts';
import { run, smtplibSend } from '../fixtures/smtp-clients.ts';
import { createTestCa, type TestCa } from '../fixtures/tls.ts';

const ADMIN_TOKEN = 'e2e-admin-token';

interface World {
  dir: string;
  relay: RelayProcess;
  dns: TestDnsServer;
  /** MX of example.net (accepts; 550 for nobody@), of example.com (the sender's domain) and of slow.test (451 to MAIL). */
  recipientMx: SinkMx;
  senderMx: SinkMx;
  slowMx: SinkMx;
  submissionPort: number;
  sourceAddress: string;
}

let ca: TestCa;
let world: World;
const cleanups: (() => Promise<void> | void)[] = [];

before(async () => {
  ca = createTestCa();
  cleanups.push(() => ca.cleanup());
  const [recipientMx, senderMx, slowMx] = await startSinkGroup([
    { rcptReplies: { 'nobody@example.net': '550 5.1.1 No such user here' } },
    {},
    { mailReply: '451 4.3.0 Try again later' },
  ]);
  cleanups.push(() => Promise.all([recipientMx!.close(), senderMx!.close(), slowMx!.close()]).then(() => undefined));
  const dns = await startDnsServer({
    'example.net': { mx: [{ preference: 10, exchange: 'mx.example.net' }] },
    'mx.example.net': { a: [recipientMx!.address] },
    'example.com': { mx: [{ preference: 10, exchange: 'mx.example.com' }] },
    'mx.example.com': { a: [senderMx!.address] },
    'slow.test': { mx: [{ preference: 10, exchange: 'mx.slow.test' }] },
    'mx.slow.test': { a: [slowMx!.address] },
  });
  cleanups.push(() => dns.close());

  const directory = await temporaryDirectory('vmta-e2e-');
  cleanups.push(() => directory.remove());
  const dir = directory.path;
  const certificate = ca.issue(['localhost']);
  await writeListenerFiles(dir, certificate, { alice: 'alice-password' });
  await writeFile(path.join(dir, 'admin-token'), `${ADMIN_TOKEN}\n`);
  const [sourceAddress] = loopbackAddresses(1);
  const submissionPort = await freePort();
  const adminPort = await freePort();
  await writeRelayConfig(dir, baseRelayConfig({
    hostname: 'relay.e2e.test',
    pool: {
      name: 'pool-a',
      domainDefaults: [{ match: '*', tlsPolicy: 'opportunistic', retryAfter: ['1s'] }],
      virtualMtas: [{ name: 'vmta-1', hostname: 'out1.e2e.test', sourceAddress: sourceAddress! }],
    },
    listeners: [{
      name: 'submission', address: '127.0.0.1', port: submissionPort, relayPolicy: 'submission',
      tls: { mode: 'starttls', required: true, ...LISTENER_TLS_FILES },
      auth: { required: true, mechanisms: ['PLAIN', 'LOGIN'] },
    }],
    relayPolicies: [{ name: 'submission', users: { secretPath: 'users', defaultAllowedSenderDomains: ['example.com'] }, routing: { honorVirtualMtaHeader: true } }],
    admin: { address: '127.0.0.1', port: adminPort, tokenFile: 'admin-token' },
    delivery: { resolvers: [dns.server], mxPort: recipientMx!.port, accounting: { file: 'accounting.jsonl' } },
  }));
  const relay = await startRelayProcess({ configDir: dir, adminPort, args: ['--shutdown-timeout', '5s'] });
  cleanups.push(async () => {
    await relay.kill('SIGKILL');
  });
  world = { dir, relay, dns, recipientMx: recipientMx!, senderMx: senderMx!, slowMx: slowMx!, submissionPort, sourceAddress: sourceAddress! };
});

after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

async function submit(to: string, message: string): Promise<string> {
  const result = await smtplibSend({
    host: '127.0.0.1', port: world.submissionPort, mode: 'starttls', caFile: ca.caFile, user: 'alice', password: 'alice-password',
    from: 'app@example.com', to: [to], message,
  });
  const queueId = /^OK 250 .*queued as (\S+)/.exec(result.stdout)?.[1];
  assert.ok(queueId, `expected 250 with a queue id, got ${result.stdout}${result.stderr}`);
  return queueId;
}

async function waitFor<T>(what: string, probe: () => Promise<T | undefined> | T | undefined, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}\n${world.relay.logs.slice(-20).map((record) => JSON.stringify(record)).join('\n')}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

async function accountingLines(): Promise<Record<string, unknown>[]> {
  const text = await readFile(path.join(world.dir, 'accounting.jsonl'), 'utf8').catch(() => '');
  return text.split('\n').filter(Boolean).map((line) => JSON.parse(line) as Record<string, unknown>);
}

function vmtaQueue(...args: string[]) {
  return run(process.execPath, [path.join(REPO_ROOT, 'cli/vmta.ts'), 'queue', ...args, '--admin', world.relay.adminUrl, '--token-file', path.join(world.dir, 'admin-token')]);
}

test('smtplib -> relay (STARTTLS, login) -> DNS MX -> sink MX from the VirtualMTA source address; spool empty; accounting says delivered', async () => {
  const marker = `e2e-${Date.now()}`;
  const queueId = await submit('bob@example.net', `From: app@example.com\r\nTo: bob@example.net\r\nSubject: e2e\r\nX-Virtual-MTA: vmta-1\r\nMessage-ID: <${marker}@example.com>\r\n\r\nhello ${marker}\r\n`);
  const received = await waitFor('the sink to receive the message', () => world.recipientMx.messages.find((message) => message.body.includes(marker)));
  assert.equal(received.remoteAddress, world.sourceAddress, 'connection made from the VirtualMTA sourceAddress');
  assert.equal(received.ehloName, 'out1.e2e.test', 'EHLO with the VirtualMTA hostname');
  assert.equal(received.from, 'app@example.com');
  assert.deepEqual(received.to, ['bob@example.net']);
  assert.ok(world.dns.queries.includes('MX example.net'), `DNS queries: ${world.dns.queries.join(', ')}`);
  const body = received.body.toString('utf8');
  const headers = body.slice(0, body.indexOf('\r\n\r\n'));
  assert.match(headers, /^Received: from [^\r\n]*(\r\n[ \t][^\r\n]*)*by relay\.e2e\.test with ESMTPSA id /m);
  assert.match(headers, new RegExp(`id ${queueId}`));
  assert.doesNotMatch(headers, /^X-Virtual-MTA:/im);
  const delivered = await waitFor('a delivered accounting line', async () => (await accountingLines()).find((line) => line.queueId === queueId && line.result === 'delivered'));
  assert.equal(delivered.recipient, 'bob@example.net');
  assert.equal(delivered.sourceAddress, world.sourceAddress);
  assert.equal(delivered.mxHost, 'mx.example.net');
  assert.equal(delivered.mxIp, world.recipientMx.address);
  await waitFor('the spool to be empty', async () => ((await metricValue(world.relay.adminUrl, 'vmta_spool_messages')) === 0 ? true : undefined), 20_000);
});

test('a recipient the MX refuses with 550 comes back as an RFC 3464 DSN at the sender domain MX', async () => {
  const queueId = await submit('nobody@example.net', 'From: app@example.com\r\nTo: nobody@example.net\r\nSubject: will bounce\r\n\r\nbounce me\r\n');
  const dsn = await waitFor('the DSN at the sender domain MX', () => world.senderMx.messages.find((message) => message.to.includes('app@example.com') && message.body.includes(queueId)));
  assert.equal(dsn.from, '', 'a DSN is sent with the null sender');
  const parsed = await simpleParser(dsn.body);
  const contentType = parsed.headers.get('content-type') as { value: string; params: Record<string, string> };
  assert.equal(contentType.value, 'multipart/report');
  assert.equal(contentType.params['report-type'], 'delivery-status');
  const report = dsn.body.toString('utf8');
  assert.match(report, /^Final-Recipient: rfc822; ?nobody@example\.net/im);
  assert.match(report, /^Action: failed/im);
  assert.match(report, /^Status: 5\.\d{1,3}\.\d{1,3}/im);
  assert.match(report, /550 5\.1\.1 No such user here/);
  const bounced = await waitFor('a bounced accounting line', async () => (await accountingLines()).find((line) => line.queueId === queueId && line.result === 'bounced'));
  assert.equal(bounced.recipient, 'nobody@example.net');
});

test('vmta queue list / pause / resume through the CLI against the running relay with a deferring MX', async () => {
  const marker = `held-${Date.now()}`;
  await submit('carol@slow.test', `From: app@example.com\r\nTo: carol@slow.test\r\nSubject: held\r\n\r\n${marker}\r\n`);
  await waitFor('a deferral for slow.test', async () => (await accountingLines()).find((line) => line.domain === 'slow.test' && line.result === 'deferred'));

  const listed = await vmtaQueue('list', '--json');
  assert.equal(listed.code, 0, listed.stderr);
  const row = (JSON.parse(listed.stdout) as { queues: { domain: string; messages: number; paused: boolean; lastError: string | null }[] }).queues.find((queue) => queue.domain === 'slow.test');
  assert.ok(row, listed.stdout);
  assert.equal(row.messages, 1);
  assert.equal(row.paused, false);

  const paused = await vmtaQueue('pause', '--domain', 'slow.test');
  assert.equal(paused.code, 0, paused.stderr);
  const table = await vmtaQueue('list');
  assert.match(table.stdout, /slow\.test\s.*paused/);

  // The MX now accepts, but the paused queue must not deliver although its 1 s retry comes due.
  world.slowMx.options = { ...world.slowMx.options, mailReply: undefined };
  await new Promise((resolve) => setTimeout(resolve, 3_000));
  assert.equal(world.slowMx.messages.filter((message) => message.body.includes(marker)).length, 0, 'a paused queue delivered');

  const resumed = await vmtaQueue('resume', '--domain', 'slow.test');
  assert.equal(resumed.code, 0, resumed.stderr);
  await waitFor('delivery after resume', () => world.slowMx.messages.find((message) => message.body.includes(marker)));
  const after = JSON.parse((await vmtaQueue('list', '--json')).stdout) as { queues: { domain: string; messages: number; paused: boolean }[] };
  const slow = after.queues.find((queue) => queue.domain === 'slow.test');
  assert.ok(!slow || (slow.messages === 0 && !slow.paused), JSON.stringify(slow));
});

test('pause without the admin token is refused by the CLI with a non-zero exit', async () => {
  const result = await run(process.execPath, [path.join(REPO_ROOT, 'cli/vmta.ts'), 'queue', 'pause', '--domain', 'slow.test', '--admin', world.relay.adminUrl]);
  assert.notEqual(result.code, 0);
  assert.match(result.stderr, /401|token/i);
});
