// What becomes of the README's first message in local mode, with a DNS server of the test's own
// as the pool's resolver (spec.resolvers), for each answer the README names: NXDOMAIN bounces
// the message at once and `vmta local` prints a line that says so with the reason, then the DSN
// to the sender (whose domain does not resolve either) bounces too, and the queue is empty; a
// resolver that fails (SERVFAIL) defers it, the line gives the retry time, and `vmta queue list`
// shows it waiting. The banner says where the mail goes.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { startDnsServer, type TestDnsServer } from '../fixtures/dns-server.ts';
import { freePortShift } from '../fixtures/local-ports.ts';
import { run, smtplibSend } from '../fixtures/smtp-clients.ts';

const REPO = fileURLToPath(new URL('../../', import.meta.url));
let dir: string;
let cli: ChildProcess;
let dns: TestDnsServer;
let shift: number;
let output = '';

async function waitForOutput(pattern: RegExp, timeoutMs = 30_000): Promise<RegExpExecArray> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const match = pattern.exec(output);
    if (match) return match;
    if (Date.now() > deadline || cli.exitCode !== null) throw new Error(`no ${pattern} in the output of vmta local:\n${output}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

before(async () => {
  dns = await startDnsServer({ 'example.net': { rcode: 'NXDOMAIN' }, 'example.com': { rcode: 'NXDOMAIN' }, 'broken.example': { rcode: 'SERVFAIL' } });
  shift = await freePortShift();
  dir = await mkdtemp(path.join(os.tmpdir(), 'vmta-local-delivery-'));
  await cp(path.join(REPO, 'examples'), path.join(dir, 'resources'), { recursive: true });
  const poolFile = path.join(dir, 'resources', 'pool.yaml');
  await writeFile(poolFile, (await readFile(poolFile, 'utf8')).replace(/^spec:\n/m, `spec:\n  resolvers: ["${dns.server}"]\n`));
  cli = spawn(process.execPath, [path.join(REPO, 'cli/vmta.ts'), 'local', path.join(dir, 'resources'), '--work-dir', path.join(dir, 'work'), '--port-shift', String(shift)], { stdio: ['ignore', 'pipe', 'pipe'] });
  for (const stream of [cli.stdout!, cli.stderr!]) stream.on('data', (chunk: Buffer) => (output += chunk.toString()));
  await waitForOutput(/pool "outbound" is ready/, 90_000);
});

after(async () => {
  if (cli.exitCode === null) {
    const exited = new Promise((resolve) => cli.once('exit', resolve));
    cli.kill('SIGTERM');
    await exited;
  }
  await dns.close();
  await rm(dir, { recursive: true, force: true });
});

function send(to: string) {
  return smtplibSend({ host: '127.0.0.1', port: 10_587 + shift, mode: 'starttls', caFile: path.join(dir, 'work/secrets/relay-tls/tls.crt'), user: 'alice', password: 'demo-password-alice', from: 'alice@example.com', to: [to], message: 'Subject: hello\r\n\r\nFirst message.\r\n' });
}

test('the banner says mail is delivered for real through the pool\'s resolvers and that every attempt is logged', async () => {
  await waitForOutput(new RegExp(`delivery: for real, to the MX hosts the pool's resolvers \\(${dns.server.replaceAll('.', '\\.')}\\) names; each attempt is a line below`));
});

test('NXDOMAIN: the message bounces with a line naming the recipient and the reason, its DSN to alice bounces too, and the queue is empty', async () => {
  const sent = await send('someone@example.net');
  const queueId = /queued as (\S+)/.exec(sent.stdout)?.[1];
  assert.ok(queueId, sent.stdout + sent.stderr);
  await waitForOutput(new RegExp(`\\[outbound\\] warn bounced queueId=${queueId} .*recipient=someone@example\\.net .*mailFrom=alice@example\\.com .*reply="example\\.net: no such domain \\(NXDOMAIN\\)"`));
  const dsn = await waitForOutput(new RegExp(`\\[outbound\\] info DSN queued to the sender queueId=${queueId} recipient=alice@example\\.com`));
  assert.ok(dsn);
  await waitForOutput(/\[outbound\] warn bounced \(a DSN: none is sent for it\) queueId=\S+ .*recipient=alice@example\.com .*mailFrom=<> .*NXDOMAIN/);
  const list = await run(process.execPath, [path.join(REPO, 'cli/vmta.ts'), 'queue', 'list', '--admin', `127.0.0.1:${8025 + shift}`, '--token-file', path.join(dir, 'work/pools/outbound/admin-token')]);
  assert.equal(list.code, 0, list.stderr);
  assert.match(list.stdout, /^no queued mail/);
});

test('SERVFAIL: the message is deferred with its retry time in the line, and vmta queue list shows it waiting', async () => {
  const sent = await send('someone@broken.example');
  const queueId = /queued as (\S+)/.exec(sent.stdout)?.[1];
  assert.ok(queueId, sent.stdout + sent.stderr);
  await waitForOutput(new RegExp(`\\[outbound\\] info deferred queueId=${queueId} .*recipient=someone@broken\\.example .*retryAt=\\S+ .*reply="MX lookup for broken\\.example failed: [A-Z]+"`));
  const list = await run(process.execPath, [path.join(REPO, 'cli/vmta.ts'), 'queue', 'list', '--admin', `127.0.0.1:${8025 + shift}`, '--token-file', path.join(dir, 'work/pools/outbound/admin-token')]);
  assert.equal(list.code, 0, list.stderr);
  assert.match(list.stdout, new RegExp(`^${queueId}\\s`, 'm'));
});
