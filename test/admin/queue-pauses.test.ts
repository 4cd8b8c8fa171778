// Pauses survive a restart: every kind of pause (a VirtualMTA, a domain on every VirtualMTA, one
// queue, everything) set through `vmta queue pause` still holds after the relay process is
// stopped or killed and started again, before any recovered message could be sent; resume lifts
// exactly what it names, and that too survives. The file under <spool>/state/ is replaced
// atomically; a damaged one is set aside and the relay starts with no pause, saying so.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { pino } from 'pino';
import { QueuePauseFile } from '../../mta/admin/queue-pauses.ts';
import { startDnsServer, type TestDnsServer } from '../fixtures/dns-server.ts';
import { freePort, loopbackRelayConfig, REPO_ROOT, startRelayProcess, temporaryDirectory, writeRelayConfig, type RelayProcess } from '../fixtures/relay-process.ts';
import { startSinkMx, type SinkMx, loopbackAddresses } from '../fixtures/sink-mx.ts';
import { RawSmtpClient } from '../fixtures/smtp-clients.ts';

const TOKEN = 'pause-test-token';
const cleanups: Array<() => Promise<unknown> | unknown> = [];
let dir: string;
let sink: SinkMx;
let dns: TestDnsServer;
let relay: RelayProcess;
let relayPort: number;
let adminPort: number;

async function start(): Promise<void> {
  relay = await startRelayProcess({ configDir: dir, adminPort, args: ['--shutdown-timeout', '2s'] });
}

function vmta(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [path.join(REPO_ROOT, 'cli/vmta.ts'), 'queue', ...args, '--admin', relay.adminUrl, '--token-file', path.join(dir, 'admin-token')], (error, stdout, stderr) => resolve({ code: error ? Number((error as { code?: number }).code ?? 1) : 0, stdout, stderr }));
  });
}

async function pausedState(): Promise<{ queues: Record<string, boolean>; virtualMtas: Record<string, boolean> }> {
  const answer = (await (await fetch(`${relay.adminUrl}/api/v1/queues`, { headers: { authorization: `Bearer ${TOKEN}` } })).json()) as { queues: Array<{ virtualMta: string; domain: string; paused: boolean }>; virtualMtas: Array<{ name: string; paused: boolean }> };
  return { queues: Object.fromEntries(answer.queues.map((queue) => [`${queue.virtualMta}/${queue.domain}`, queue.paused])), virtualMtas: Object.fromEntries(answer.virtualMtas.map((entry) => [entry.name, entry.paused])) };
}

async function send(to: string, header = ''): Promise<void> {
  const client = await RawSmtpClient.connect(relayPort);
  try {
    await client.read();
    for (const command of ['EHLO pause.test', 'MAIL FROM:<app@sender.test>', `RCPT TO:<${to}>`]) assert.equal((await client.command(command)).code, 250, command);
    assert.equal((await client.command('DATA')).code, 354);
    assert.equal((await client.command(`${header}Subject: ${to}\r\n\r\nhello\r\n.`)).code, 250);
  } finally {
    client.close();
  }
}

const arrived = (to: string) => sink.messages.some((message) => message.to.includes(to));
async function eventually(what: string, probe: () => boolean, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!probe()) {
    if (Date.now() > deadline) throw new Error(`timed out: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}
const settle = (ms = 1500) => new Promise((resolve) => setTimeout(resolve, ms));

before(async () => {
  sink = await startSinkMx({ address: loopbackAddresses(1)[0]! });
  cleanups.push(() => sink.close());
  dns = await startDnsServer({ 'a.test': { mx: [{ preference: 10, exchange: 'mx.test' }] }, 'b.test': { mx: [{ preference: 10, exchange: 'mx.test' }] }, 'mx.test': { a: [sink.address] } });
  cleanups.push(() => dns.close());
  const directory = await temporaryDirectory('vmta-pauses-');
  cleanups.push(() => directory.remove());
  dir = directory.path;
  await writeFile(path.join(dir, 'admin-token'), `${TOKEN}\n`);
  relayPort = await freePort();
  adminPort = await freePort();
  const config = loopbackRelayConfig(relayPort, adminPort, { admin: { address: '127.0.0.1', port: adminPort, tokenFile: 'admin-token' } });
  config.pool = { name: 'pool-a', virtualMtas: [{ name: 'vmta-1', hostname: 'one.test' }, { name: 'vmta-2', hostname: 'two.test' }] };
  config.relayPolicies = [{ name: 'loopback', allowedCidrs: ['127.0.0.0/8'], routing: { honorVirtualMtaHeader: true } }];
  config.delivery = { resolvers: [dns.server], mxPort: sink.port };
  await writeRelayConfig(dir, config);
  await start();
  cleanups.push(() => relay.kill('SIGKILL'));
});
after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

describe('pauses across restarts', () => {
  test('a paused domain holds a message across SIGKILL and restart, before recovery could send it; resume releases it', async () => {
    assert.equal((await vmta('pause', '--domain', 'a.test')).code, 0);
    await send('one@a.test', 'X-Virtual-MTA: vmta-1\r\n');
    await settle();
    assert.equal(arrived('one@a.test'), false, 'held while paused');
    await relay.kill('SIGKILL');
    await start();
    await settle();
    assert.equal(arrived('one@a.test'), false, 'still held after the restart: the pause came back before the spool was recovered');
    assert.equal((await pausedState()).queues['vmta-1/a.test'], true);
    assert.equal((await vmta('resume', '--domain', 'a.test')).code, 0);
    await eventually('the released message arrives', () => arrived('one@a.test'));
  });

  test('every kind of pause survives a clean restart, and so does a resume of exactly one of them', async () => {
    for (const flags of [['--vmta', 'vmta-2'], ['--domain', 'b.test'], ['--vmta', 'vmta-1', '--domain', 'a.test']]) assert.equal((await vmta('pause', ...flags)).code, 0, flags.join(' '));
    await relay.kill('SIGTERM');
    await start();
    await send('two@a.test', 'X-Virtual-MTA: vmta-1\r\n');
    await send('three@b.test', 'X-Virtual-MTA: vmta-1\r\n');
    await send('four@a.test', 'X-Virtual-MTA: vmta-2\r\n');
    await settle();
    assert.deepEqual([arrived('two@a.test'), arrived('three@b.test'), arrived('four@a.test')], [false, false, false]);
    const state = await pausedState();
    assert.equal(state.virtualMtas['vmta-2'], true);
    assert.deepEqual(Object.values(state.queues), [true, true, true]);
    // Resume the one queue; the domain and VirtualMTA pauses stay, also after another restart.
    assert.equal((await vmta('resume', '--vmta', 'vmta-1', '--domain', 'a.test')).code, 0);
    await eventually('vmta-1/a.test released', () => arrived('two@a.test'));
    await relay.kill('SIGTERM');
    await start();
    await settle();
    assert.deepEqual([arrived('three@b.test'), arrived('four@a.test')], [false, false]);
    assert.equal((await pausedState()).virtualMtas['vmta-2'], true);
    // An empty resume lifts every pause; nothing is paused after the next restart.
    assert.equal((await vmta('resume')).code, 0);
    await eventually('everything released', () => arrived('three@b.test') && arrived('four@a.test'));
    await relay.kill('SIGTERM');
    await start();
    assert.equal(JSON.stringify(await pausedState()).includes('true'), false);
  });

  test('pause everything survives a restart too', async () => {
    assert.equal((await vmta('pause')).code, 0);
    await relay.kill('SIGKILL');
    await start();
    await send('five@b.test', 'X-Virtual-MTA: vmta-2\r\n');
    await settle();
    assert.equal(arrived('five@b.test'), false);
    assert.equal((await vmta('resume')).code, 0);
    await eventually('released', () => arrived('five@b.test'));
  });

  test('the pauses file is replaced whole (no temporary file left) and says what it holds', async () => {
    assert.equal((await vmta('pause', '--domain', 'b.test')).code, 0);
    const stateDir = path.join(dir, 'spool', 'state');
    assert.deepEqual((await readdir(stateDir)).filter((name) => name.startsWith('queue-pauses')), ['queue-pauses.json']);
    assert.deepEqual(JSON.parse(await readFile(path.join(stateDir, 'queue-pauses.json'), 'utf8')), { version: 1, pauses: [{ domain: 'b.test' }] });
    assert.equal((await vmta('resume')).code, 0);
  });
});

describe('the pauses file', () => {
  const logger = pino({ level: 'silent' });
  for (const [what, text] of [['not JSON', '{"version":1,'], ['a wrong version', '{"version":2,"pauses":[]}'], ['a bad entry', '{"version":1,"pauses":[{"virtualMta":""}]}'], ['an unknown field', '{"version":1,"pauses":[{"queue":"x"}]}'], ['an over-long domain', `{"version":1,"pauses":[{"domain":"${'d'.repeat(254)}"}]}`]] as const) {
    test(`${what}: set aside as .unreadable, no pause`, async () => {
      const scratch = await temporaryDirectory('vmta-pause-file-');
      try {
        await writeFile(path.join(scratch.path, 'queue-pauses.json'), text);
        assert.deepEqual(await new QueuePauseFile(scratch.path, logger).load(), []);
        assert.deepEqual((await readdir(scratch.path)).sort(), ['queue-pauses.json.unreadable']);
      } finally {
        await scratch.remove();
      }
    });
  }

  test('a temporary file a crash left beside it is ignored; the saved list is read, domains lower-cased', async () => {
    const scratch = await temporaryDirectory('vmta-pause-file-');
    try {
      const file = new QueuePauseFile(scratch.path, logger);
      await file.save([{ virtualMta: 'vmta-1' }, { domain: 'Example.ORG' }, {}]);
      await writeFile(path.join(scratch.path, 'queue-pauses.json.tmp'), '{"version":1,"pau');
      assert.deepEqual(await new QueuePauseFile(scratch.path, logger).load(), [{ virtualMta: 'vmta-1' }, { domain: 'example.org' }, {}]);
    } finally {
      await scratch.remove();
    }
  });
});
