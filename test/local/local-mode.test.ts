// `vmta local examples/` end to end: the real CLI renders the examples, starts the relay as a
// child process, and Python's smtplib sends a first message through 587 + STARTTLS + AUTH
// LOGIN and 465 implicit TLS; port 25 relays only for the bounce domain; an edit to a policy
// file reaches the running relay without a restart. Ports are shifted to stay clear of others.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { freePortShift } from '../fixtures/local-ports.ts';
import { RawSmtpClient, smtplibSend } from '../fixtures/smtp-clients.ts';

const REPO = fileURLToPath(new URL('../../', import.meta.url));
let PORT_SHIFT: number;
let SUBMISSION_PORT: number;
let SUBMISSIONS_PORT: number;
let MX_PORT: number;

let dir: string;
let cli: ChildProcess;
let output = '';

function waitForOutput(pattern: RegExp, from: number, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const check = () => {
      const match = pattern.exec(output.slice(from));
      if (match) {
        clearInterval(timer);
        clearTimeout(deadline);
        resolve(match[0]);
      }
    };
    const timer = setInterval(() => {
      check();
      if (cli.exitCode !== null || cli.signalCode !== null) {
        clearInterval(timer);
        clearTimeout(deadline);
        reject(new Error(`vmta local exited (${cli.exitCode ?? cli.signalCode}) before ${pattern}; output:\n${output.slice(from)}`));
      }
    }, 100);
    const deadline = setTimeout(() => {
      clearInterval(timer);
      reject(new Error(`no ${pattern} within ${timeoutMs / 1000}s; output:\n${output.slice(from)}`));
    }, timeoutMs);
  });
}

before(async () => {
  PORT_SHIFT = await freePortShift();
  SUBMISSION_PORT = 10_587 + PORT_SHIFT;
  SUBMISSIONS_PORT = 10_465 + PORT_SHIFT;
  MX_PORT = 10_025 + PORT_SHIFT;
  dir = await mkdtemp(path.join(os.tmpdir(), 'vmta-local-mode-'));
  await cp(path.join(REPO, 'examples'), path.join(dir, 'resources'), { recursive: true });
  cli = spawn(process.execPath, [path.join(REPO, 'cli/vmta.ts'), 'local', path.join(dir, 'resources'), '--work-dir', path.join(dir, 'work'), '--port-shift', String(PORT_SHIFT)], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  cli.stdout?.on('data', (chunk: Buffer) => (output += chunk.toString()));
  cli.stderr?.on('data', (chunk: Buffer) => (output += chunk.toString()));
  await waitForOutput(/pool "outbound" is ready/, 0, 90_000);
});

after(async () => {
  if (cli.exitCode === null && cli.signalCode === null) {
    const exited = new Promise((resolve) => cli.once('exit', resolve));
    cli.kill('SIGTERM');
    const timer = setTimeout(() => cli.kill('SIGKILL'), 45_000);
    await exited;
    clearTimeout(timer);
  }
  // Relays run in their own process groups; a CLI that did not stop cleanly may leave some behind.
  const relayPids = cli.exitCode === 0 ? [] : [...output.matchAll(/relay started \(pid (\d+)\)/g)].map((match) => Number(match[1]));
  for (const pid of relayPids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // Already gone, as it should be.
    }
  }
  await rm(dir, { recursive: true, force: true });
  if (process.env.VMTA_DEBUG_OUTPUT) await writeFile(process.env.VMTA_DEBUG_OUTPUT, output);
});

const message = 'From: alice@example.com\r\nTo: someone@example.net\r\nSubject: first message\r\n\r\nHello from vmta local.\r\n';

test('it prints where to connect, with the shifted local ports', () => {
  assert.match(output, new RegExp(`submission\\s+smtp://127\\.0\\.0\\.1:${SUBMISSION_PORT}\\s+submission: STARTTLS required, AUTH PLAIN LOGIN required \\(port 587 in a cluster\\)`));
  assert.match(output, new RegExp(`submissions\\s+smtps://127\\.0\\.0\\.1:${SUBMISSIONS_PORT}`));
  assert.match(output, /users: alice .*bob/);
});

test('the relay runs exactly the ConfigMap text the operator renders, with local locations', async () => {
  const configMap = await readFile(path.join(dir, 'work/pools/outbound/configmap/relay.yaml'), 'utf8');
  const golden = await readFile(path.join(REPO, 'test/fixtures/golden/outbound.yaml'), 'utf8');
  assert.ok(golden.includes(configMap.split('\n').slice(1, 20).map((line) => `    ${line}`).join('\n')), 'the ConfigMap text differs from the golden render');
  const local = await readFile(path.join(dir, 'work/pools/outbound/config/relay.yaml'), 'utf8');
  assert.ok(local.includes(path.join(dir, 'work/secrets/relay-users')));
});

test('Python smtplib sends a first message through 587 with STARTTLS and AUTH LOGIN', async () => {
  const result = await smtplibSend({ host: '127.0.0.1', port: SUBMISSION_PORT, mode: 'starttls', caFile: path.join(dir, 'work/secrets/relay-tls/tls.crt'), user: 'alice', password: 'demo-password-alice', from: 'alice@example.com', to: ['someone@example.net'], message });
  assert.match(result.stdout, /^OK 250 /, result.stdout + result.stderr);
});

/** The README's fenced blocks of one language, with the local ports and work dir of this run. */
async function readmeBlocks(language: string): Promise<string[]> {
  const readme = await readFile(path.join(REPO, 'README.md'), 'utf8');
  const blocks = [...readme.matchAll(new RegExp('```' + language + '\\n([\\s\\S]*?)```', 'g'))].map((match) => match[1]!);
  return blocks.map((block) =>
    block
      .replace(/127\.0\.0\.1(["']?,\s*|:)(\d{4,5})/g, (_all, separator: string, port: string) => `127.0.0.1${separator}${Number(port) + PORT_SHIFT}`)
      .replaceAll('.tmp/local/', `${path.join(dir, 'work')}/`),
  );
}

function run(command: string, args: string[], env: Record<string, string> = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(command, args, { cwd: REPO, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

test("the README's first message (its Python block, verbatim but for this run's ports and work dir) is accepted", async () => {
  const [python] = await readmeBlocks('python');
  assert.ok(python !== undefined && python.includes('smtp.login("alice"'), 'README has the smtplib first-message block');
  const result = await run('python3', ['-c', python]);
  assert.equal(result.code, 0, `python3 exited ${result.code}: ${result.stderr}`);
  assert.match(result.stdout, /^250 2\.0\.0 Ok: queued as [0-9a-z]+\n$/, 'it prints the reply with the queue id, as the README says');
});

test("the banner's first-message command, run exactly as printed, is accepted and prints the queue id", async () => {
  const command = /first message: (python3 -c ".*")$/m.exec(output)?.[1];
  assert.ok(command, 'the banner prints a first-message command');
  assert.doesNotMatch(command, /PASSWORD/);
  const result = await run('bash', ['-c', command]);
  assert.equal(result.code, 0, `${command}\n${result.stderr}`);
  assert.match(result.stdout, /^2\.0\.0 Ok: queued as [0-9a-z]+\n$/);
});

test('the configHash the banner prints is the one the relay\'s /config reports', async () => {
  const printed = /configHash: ([0-9a-f]{64}) \((http:\/\/127\.0\.0\.1:\d+)\/config reports the same/.exec(output);
  assert.ok(printed, 'the banner prints configHash and the admin URL');
  const reported = (await (await fetch(`${printed[2]}/config`)).json()) as { hash: string };
  assert.equal(reported.hash, printed[1]);
});

test("the README's admin commands answer: readyz, config hash, vmta_ metrics, vmta queue list", async () => {
  const shell = (await readmeBlocks('sh')).find((block) => block.includes('/readyz'));
  assert.ok(shell, 'README has the admin commands block');
  const commands = shell.split('\n').map((line) => line.replace(/\s+#.*$/, '').trim()).filter(Boolean);
  assert.equal(commands.length, 4);
  for (const command of commands) {
    // vmta queue finds local mode's token by itself in the default work dir (.tmp/local); this run has its own.
    const token = (await readFile(path.join(dir, 'work/pools/outbound/admin-token'), 'utf8')).trim();
    const result = await run('bash', ['-o', 'pipefail', '-c', command], { VMTA_ADMIN_TOKEN: token });
    assert.equal(result.code, 0, `${command} exited ${result.code}: ${result.stderr}`);
    assert.notEqual(result.stdout.trim(), '', `${command} printed nothing`);
  }
});

test('Python smtplib sends through 465 with implicit TLS', async () => {
  const result = await smtplibSend({ host: '127.0.0.1', port: SUBMISSIONS_PORT, mode: 'ssl', caFile: path.join(dir, 'work/secrets/relay-tls/tls.crt'), user: 'bob', password: 'demo-password-bob', from: 'bob@example.org', to: ['someone@example.net'], message });
  assert.match(result.stdout, /^OK 250 /, result.stdout + result.stderr);
});

test('587 refuses AUTH before STARTTLS, a wrong password, and mail without AUTH', async () => {
  const caFile = path.join(dir, 'work/secrets/relay-tls/tls.crt');
  const wrong = await smtplibSend({ host: '127.0.0.1', port: SUBMISSION_PORT, mode: 'starttls', caFile, user: 'alice', password: 'nope', from: 'alice@example.com', to: ['someone@example.net'], message });
  assert.match(wrong.stdout, /^ERROR SMTPAuthenticationError 535/, wrong.stdout);

  const client = await RawSmtpClient.connect(SUBMISSION_PORT);
  try {
    assert.equal((await client.read()).code, 220);
    assert.equal((await client.command('EHLO client.example')).code, 250);
    assert.equal((await client.command('AUTH PLAIN AGFsaWNlAGRlbW8tcGFzc3dvcmQtYWxpY2U=')).code, 530, 'credentials before STARTTLS');
    assert.equal((await client.command('STARTTLS')).code, 220);
    await client.startTls(await readFile(caFile));
    assert.equal((await client.command('EHLO client.example')).code, 250);
    assert.equal((await client.command('MAIL FROM:<alice@example.com>')).code, 530, 'mail without AUTH');
  } finally {
    client.close();
  }
});

async function sendUnauthenticated(port: number, recipient: string): Promise<number> {
  const client = await RawSmtpClient.connect(port);
  try {
    await client.read();
    await client.command('EHLO mx.example.net');
    await client.command('MAIL FROM:<>');
    return (await client.command(`RCPT TO:<${recipient}>`)).code;
  } finally {
    client.close();
  }
}

test('port 25 accepts mail for the bounce domain only, and a policy edit reaches the running relay', async () => {
  assert.equal(await sendUnauthenticated(MX_PORT, 'bounce-123@bounces.example.com'), 250);
  const refused = await sendUnauthenticated(MX_PORT, 'someone@elsewhere.example');
  assert.ok(refused >= 550 && refused < 560, `expected a 55x refusal, got ${refused}`);

  const policies = path.join(dir, 'resources/policies.yaml');
  const from = output.length;
  await writeFile(policies, (await readFile(policies, 'utf8')).replace('    - bounces.example.com\n', '    - bounces.example.com\n    - elsewhere.example\n'));
  await waitForOutput(/pool "outbound": hot change/, from, 30_000);
  // The relay notices the rewritten config at once, or within its poll interval at the latest.
  const deadline = Date.now() + 30_000;
  let code = 0;
  while (Date.now() < deadline) {
    code = await sendUnauthenticated(MX_PORT, 'someone@elsewhere.example');
    if (code === 250) break;
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
  assert.equal(code, 250);
  assert.doesNotMatch(output.slice(from), /restarting/, 'a hot change must not restart the relay');
});

test('a second vmta local while this one holds the ports: one line naming the port and the holder, exit 1, never "ready"', async () => {
  const second = spawn(process.execPath, [path.join(REPO, 'cli/vmta.ts'), 'local', path.join(dir, 'resources'), '--work-dir', path.join(dir, 'work-second'), '--port-shift', String(PORT_SHIFT)], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  second.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  second.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const [code] = (await once(second, 'exit')) as [number | null];
  assert.equal(code, 1, stdout + stderr);
  assert.doesNotMatch(stdout + stderr, /is ready|first message/, 'its readiness check must not answer for the other instance');
  const lines = stderr.trimEnd().split('\n');
  assert.equal(lines.length, 1, stderr);
  assert.match(lines[0]!, /^vmta local: the relay of pool "outbound" exited \(code 1\): vmta mta: cannot listen on 127\.0\.0\.1:\d+: the port is in use by pid \d+ /);
  assert.doesNotMatch(stderr, /EADDRINUSE|at .*\.ts:\d+|fix the resources/);
});

test('a user who may send from no domain is warned about when the resources are loaded', async () => {
  const policies = path.join(dir, 'resources/policies.yaml');
  const from = output.length;
  await writeFile(policies, (await readFile(policies, 'utf8')).replace('        allowedSenderDomains: [example.org]\n', '        allowedSenderDomains: []\n'));
  await waitForOutput(/warning: user "bob" \(Secret relay-users\) may send from no domain under RelayPolicy "submission": every message it sends is refused with 553/, from, 30_000);
});

test('a cold change (a listener port) restarts the relay on the new port', async () => {
  const listeners = path.join(dir, 'resources/listeners.yaml');
  const from = output.length;
  await writeFile(listeners, (await readFile(listeners, 'utf8')).replace('  role: alternate\n', '  role: alternate\n  port: 2526\n'));
  await waitForOutput(/cold change \(pod template\), restarting its relay/, from, 30_000);
  await waitForOutput(/pool "outbound" is ready/, from, 90_000);
  assert.match(output.slice(from), new RegExp(`alternate\\s+smtp://127\\.0\\.0\\.1:${2526 + PORT_SHIFT}`));
  const client = await RawSmtpClient.connect(2526 + PORT_SHIFT);
  try {
    assert.equal((await client.read()).code, 220);
  } finally {
    client.close();
  }
});

test('an invalid edit is reported with file, object and field, and the relay keeps serving', async () => {
  const listeners = path.join(dir, 'resources/listeners.yaml');
  const from = output.length;
  await writeFile(listeners, (await readFile(listeners, 'utf8')).replace('  role: submissions\n  tls:\n', '  role: submissions\n  tls:\n    mode: starttls\n'));
  await waitForOutput(/not applied, the relays keep their last good configuration/, from, 30_000);
  assert.match(output.slice(from), new RegExp(`${listeners.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: SmtpListener "submissions": spec.tls.mode:`));
  const result = await smtplibSend({ host: '127.0.0.1', port: SUBMISSION_PORT, mode: 'starttls', caFile: path.join(dir, 'work/secrets/relay-tls/tls.crt'), user: 'alice', password: 'demo-password-alice', from: 'alice@example.com', to: ['someone@example.net'], message });
  assert.match(result.stdout, /^OK 250 /, result.stdout);
});
