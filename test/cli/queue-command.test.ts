// `vmta queue` as a user runs it: the real CLI against real relay processes (one with an admin
// token, a read-only token and a parked message, one without a token), against a port where nothing listens, and
// against an HTTP server that is not a relay. Every error kind is tried with every action: the
// answer is one line on stderr, nothing on stdout, and the exit code of its kind (usage 2,
// unreachable 3, refused 4, not found 5).
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { freePort, loopbackRelayConfig, REPO_ROOT, startRelayProcess, temporaryDirectory, writeRelayConfig, type RelayProcess } from '../fixtures/relay-process.ts';
import { RawSmtpClient } from '../fixtures/smtp-clients.ts';

const CLI = path.join(REPO_ROOT, 'cli', 'vmta.ts');
const TOKEN = 'queue-cli-test-token';
const READ_TOKEN = 'queue-cli-read-token';
const VMTA = 'vmta-1';

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function vmta(args: string[], env: Record<string, string> = {}): Promise<Run> {
  return new Promise((resolve) => {
    // No VMTA_ADMIN_* from the environment of whoever runs the tests.
    const { VMTA_ADMIN_URL: _url, VMTA_ADMIN_TOKEN: _token, ...inherited } = process.env;
    execFile(process.execPath, [CLI, ...args], { cwd: dir.path, env: { ...inherited, ...env }, timeout: 60_000 }, (error, stdout, stderr) => {
      resolve({ code: error ? Number((error as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

/** The CLI's answer to an error: exactly one line on stderr, nothing on stdout, the code. */
function assertOneLineError(run: Run, code: number, pattern: RegExp, what: string): void {
  assert.equal(run.code, code, `${what}: exit code\n${run.stderr}`);
  assert.equal(run.stdout, '', `${what}: nothing on stdout`);
  const lines = run.stderr.trimEnd().split('\n');
  assert.equal(lines.length, 1, `${what}: one line\n${run.stderr}`);
  assert.match(lines[0]!, /^vmta queue: /, what);
  assert.match(lines[0]!, pattern, what);
  assert.doesNotMatch(lines[0]!, /TypeError|ECONNREFUSED|ENOENT|at .*\.ts:\d+/, `${what}: no raw error`);
}

let dir: { path: string; remove: () => Promise<void> };
let relay: RelayProcess;
let tokenless: RelayProcess;
let notARelay: http.Server;
let notARelayUrl: string;
let downUrl: string;
let parkedId: string;

/** Every action with the arguments that make it a valid call. */
const ACTIONS: Record<string, string[]> = {
  list: ['list'],
  show: ['show', 'PARKED'],
  pause: ['pause', '--domain', 'nothing.example'],
  resume: ['resume', '--domain', 'nothing.example'],
  retry: ['retry', '--domain', 'nothing.example'],
  bounce: ['bounce', '--domain', 'nothing.example'],
  delete: ['delete', '--domain', 'nothing.example'],
};
const CONTROL = ['pause', 'resume', 'retry', 'bounce', 'delete'];
const args = (action: string, ...extra: string[]) => [...ACTIONS[action]!.map((word) => (word === 'PARKED' ? parkedId : word)), ...extra];

before(async () => {
  dir = await temporaryDirectory('vmta-queue-cli-');
  await writeFile(path.join(dir.path, 'admin-token'), `${TOKEN}\n`);
  await writeFile(path.join(dir.path, 'read-token'), `${READ_TOKEN}\n`);
  await writeFile(path.join(dir.path, 'wrong-token'), 'not-the-token\n');
  await writeFile(path.join(dir.path, 'empty-token'), '\n');
  const [port, adminPort, bareAdminPort] = [await freePort(), await freePort(), await freePort()];
  const relayDir = path.join(dir.path, 'relay');
  const bareDir = path.join(dir.path, 'tokenless');
  for (const sub of [relayDir, bareDir]) await mkdir(sub);
  await writeRelayConfig(relayDir, loopbackRelayConfig(port, adminPort, { admin: { address: '127.0.0.1', port: adminPort, tokenFile: path.join(dir.path, 'admin-token'), readTokenFile: path.join(dir.path, 'read-token') } }));
  await writeRelayConfig(bareDir, loopbackRelayConfig(await freePort(), bareAdminPort));
  [relay, tokenless] = await Promise.all([startRelayProcess({ configDir: relayDir, adminPort }), startRelayProcess({ configDir: bareDir, adminPort: bareAdminPort })]);
  const client = await RawSmtpClient.connect(port);
  try {
    await client.read();
    for (const command of ['EHLO cli.test', 'MAIL FROM:<app@example.com>', 'RCPT TO:<user@example.org>']) assert.equal((await client.command(command)).code, 250, command);
    assert.equal((await client.command('DATA')).code, 354);
    const reply = await client.command('Subject: parked\r\n\r\nhello\r\n.');
    parkedId = /queued as (\S+)/.exec(reply.text)![1]!;
  } finally {
    client.close();
  }
  notARelay = http.createServer((_request, response) => response.end('<html>hello</html>'));
  await new Promise<void>((resolve) => notARelay.listen(0, '127.0.0.1', () => resolve()));
  notARelayUrl = `http://127.0.0.1:${(notARelay.address() as AddressInfo).port}`;
  downUrl = `http://127.0.0.1:${await freePort()}`;
});

after(async () => {
  await Promise.all([relay?.kill('SIGKILL'), tokenless?.kill('SIGKILL')]);
  await new Promise<void>((resolve) => (notARelay ? notARelay.close(() => resolve()) : resolve()));
  await dir?.remove();
});

describe('every error kind with every action', () => {
  for (const action of Object.keys(ACTIONS)) {
    test(`${action}: unreachable (nothing listens), not a relay, and a bad --admin`, async () => {
      assertOneLineError(await vmta(['queue', ...args(action), '--admin', downUrl, '--token-file', 'admin-token']), 3, /cannot reach the admin API at http:\/\/127\.0\.0\.1:\d+ \(connection refused\); is the relay running there\?.*--admin URL/, `${action} with the relay down`);
      assertOneLineError(await vmta(['queue', ...args(action), '--admin', notARelayUrl, '--token-file', 'admin-token']), 3, /not a vmta relay's admin API; check --admin/, `${action} against a web server`);
      assertOneLineError(await vmta(['queue', ...args(action), '--admin', 'ftp://127.0.0.1:21']), 2, /--admin: "ftp:\/\/127\.0\.0\.1:21" is not an http or https URL/, `${action} with an ftp URL`);
      assertOneLineError(await vmta(['queue', ...args(action), '--colour']), 2, /Unknown option '--colour'; vmta queue --help lists the options$/, `${action} with an unknown option`);
    });
  }

  for (const action of Object.keys(ACTIONS)) {
    test(`${action}: no token, a wrong token, a missing or empty token file, a relay without a token`, async () => {
      const admin = ['--admin', relay.adminUrl];
      assertOneLineError(await vmta(['queue', ...args(action), ...admin]), 4, /needs the admin bearer token.*: pass --token-file FILE .* or set VMTA_ADMIN_TOKEN$/, `${action} without a token`);
      assertOneLineError(await vmta(['queue', ...args(action), ...admin, '--token-file', 'wrong-token']), 4, /the bearer token given is not this relay's admin (read )?token.* \(the token from wrong-token\)/, `${action} with a wrong token`);
      assertOneLineError(await vmta(['queue', ...args(action), ...admin], { VMTA_ADMIN_TOKEN: 'also-wrong' }), 4, /not this relay's admin (read )?token.* \(the token from \$VMTA_ADMIN_TOKEN\)/, `${action} with a wrong $VMTA_ADMIN_TOKEN`);
      assertOneLineError(await vmta(['queue', ...args(action), ...admin, '--token-file', 'no-such-file']), 2, /--token-file no-such-file: cannot read it \(no such file\)/, `${action} with a missing token file`);
      assertOneLineError(await vmta(['queue', ...args(action), ...admin, '--token-file', 'empty-token']), 2, /--token-file empty-token is empty/, `${action} with an empty token file`);
      assertOneLineError(await vmta(['queue', ...args(action), '--admin', tokenless.adminUrl, '--token-file', 'admin-token']), 4, /this relay has no admin token configured .*spec\.admin\.tokenSecretName/, `${action} on a relay without a token`);
      if (!CONTROL.includes(action)) return;
      assertOneLineError(await vmta(['queue', ...args(action), ...admin, '--token-file', 'read-token']), 4, /the read-only admin token cannot change anything.*\(the token from read-token is the pool's read token\)/, `${action} with the read-only token`);
      assertOneLineError(await vmta(['queue', action, '--vmta', 'no-such-vmta', ...admin, '--token-file', 'admin-token']), 5, /no VirtualMTA named "no-such-vmta" in this relay's pool \(it has vmta-1\)/, `${action} of an unknown VirtualMTA`);
    });
  }

  test('show: an unknown queue id is not found (5), a missing one is a usage error (2)', async () => {
    assertOneLineError(await vmta(['queue', 'show', 'nonexistent0000000', '--admin', relay.adminUrl, '--token-file', 'read-token']), 5, /no queued message "nonexistent0000000".*vmta queue list shows the waiting ones/, 'show of an unknown id');
    assertOneLineError(await vmta(['queue', 'show', '--admin', relay.adminUrl]), 2, /show needs a queue id/, 'show without an id');
  });

  test('bounce and delete with nothing selected name the flags, not API fields', async () => {
    for (const action of ['bounce', 'delete']) {
      const run = await vmta(['queue', action, '--admin', relay.adminUrl, '--token-file', 'admin-token']);
      assertOneLineError(run, 2, new RegExp(`${action} needs --vmta NAME and/or --domain DOMAIN, or --all to ${action} every queue`), `${action} with nothing selected`);
      assert.doesNotMatch(run.stderr, /"virtualMta"|"all": true/);
    }
  });

  test('values the admin API would refuse are refused by their flag, never by an API field name', async () => {
    const cases: Array<[string[], RegExp]> = [
      [['--vmta', 'v'.repeat(64)], /--vmta "v{40}\.\.\. \(64 characters\)": at most 63 characters/],
      [['--domain', 'd'.repeat(254)], /--domain "d{40}\.\.\. \(254 characters\)": at most 253 characters/],
    ];
    for (const action of ['list', ...CONTROL]) {
      for (const [flags, pattern] of cases) {
        const run = await vmta(['queue', action, ...flags, '--admin', relay.adminUrl, '--token-file', 'admin-token']);
        assertOneLineError(run, 2, pattern, `${action} ${flags[0]}`);
        assert.doesNotMatch(run.stderr, /virtualMta|request body/, `${action} ${flags[0]}: no API field`);
      }
    }
    for (const id of ['a/b', '../etc', 'x'.repeat(129), 'id with space', 'ü']) {
      assertOneLineError(await vmta(['queue', 'show', id, '--admin', relay.adminUrl]), 2, /is not a queue id .*vmta queue list shows them/, `show ${JSON.stringify(id)}`);
    }
  });
});

describe('the command line', () => {
  test('vmta without a command prints the help with the exit codes on stderr and exits 2; --help exits 0', async () => {
    const bare = await vmta([]);
    assert.equal(bare.code, 2);
    assert.match(bare.stderr, /^usage: vmta <command>/);
    const help = await vmta(['--help']);
    assert.equal(help.code, 0);
    for (const code of ['2  bad command line', '3  the relay\'s admin API cannot be reached', '4  refused', '5  not found']) assert.ok(help.stdout.includes(code), `vmta --help lists "${code}"`);
    const queueHelp = await vmta(['queue', '--help']);
    assert.equal(queueHelp.code, 0);
    assert.match(queueHelp.stdout, /exit codes:/);
  });

  test('--admin takes host:port, a bare port, localhost and a trailing slash as well as a full URL', async () => {
    const port = new URL(relay.adminUrl).port;
    for (const form of [relay.adminUrl, `${relay.adminUrl}/`, `127.0.0.1:${port}`, `localhost:${port}`, port]) {
      const run = await vmta(['queue', 'list', '--admin', form, '--token-file', 'read-token']);
      assert.equal(run.code, 0, `--admin ${form}: ${run.stderr}`);
      assert.ok(run.stdout.includes(parkedId), `--admin ${form} lists the parked message`);
    }
    const fromEnvironment = await vmta(['queue', 'list'], { VMTA_ADMIN_URL: `127.0.0.1:${port}`, VMTA_ADMIN_TOKEN: READ_TOKEN });
    assert.equal(fromEnvironment.code, 0, fromEnvironment.stderr);
  });
});

describe('answers for people', () => {
  test('list shows the queue with its whole last error, and the queue ids of the waiting messages', async () => {
    const run = await vmta(['queue', 'list', '--admin', relay.adminUrl, '--token-file', 'read-token']);
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stdout, new RegExp(`^${VMTA}\\s+example\\.org\\s+1\\s`, 'm'));
    const listing = JSON.parse((await vmta(['queue', 'list', '--admin', relay.adminUrl, '-o', 'json', '--token-file', 'admin-token'])).stdout) as { queues: Array<{ lastError: string | null }>; waiting: { total: number; messages: Array<{ id: string }> } };
    const lastError = listing.queues[0]!.lastError;
    if (lastError) assert.ok(run.stdout.includes(lastError), `the last error is printed whole: ${lastError}`);
    assert.deepEqual(listing.waiting.messages.map((message) => message.id), [parkedId]);
    assert.match(run.stdout, new RegExp(`^${parkedId}\\s+${VMTA}\\s+app@example\\.com\\s+user@example\\.org\\s`, 'm'));
    assert.match(run.stdout, /vmta queue show QUEUE-ID for one/);
  });

  test('show prints the message and its recipients for people, and the JSON with -o json or --json', async () => {
    const run = await vmta(['queue', 'show', parkedId, '--admin', relay.adminUrl, '--token-file', 'read-token']);
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stdout, new RegExp(`^queue id\\s+${parkedId}$`, 'm'));
    assert.match(run.stdout, /^from\s+app@example\.com$/m);
    assert.match(run.stdout, /^RECIPIENT\s+STATUS\s+ATTEMPTS\s+NEXT-ATTEMPT\s+LAST-RESULT$/m);
    assert.match(run.stdout, /^user@example\.org\s+pending\s+\d+/m);
    for (const flag of [['-o', 'json'], ['--json']]) {
      const json = await vmta(['queue', 'show', parkedId, '--admin', relay.adminUrl, ...flag, '--token-file', 'admin-token']);
      assert.equal((JSON.parse(json.stdout) as { id: string }).id, parkedId);
    }
  });

  test('a pause of a VirtualMTA with an empty queue says it holds, and resume says it is lifted', async () => {
    const token = ['--admin', relay.adminUrl, '--token-file', 'admin-token'];
    const paused = await vmta(['queue', 'pause', '--domain', 'nothing.example', ...token]);
    assert.equal(paused.code, 0, paused.stderr);
    assert.equal(paused.stdout.trim(), 'paused domain nothing.example on every VirtualMTA (no mail queued for it now); mail queued later waits too, also across restarts, until vmta queue resume --domain nothing.example');
    const resumed = await vmta(['queue', 'resume', '--domain', 'nothing.example', ...token]);
    assert.equal(resumed.stdout.trim(), 'resumed domain nothing.example on every VirtualMTA (no mail queued for it now)');
    const pausedVmta = await vmta(['queue', 'pause', '--vmta', VMTA, ...token]);
    assert.match(pausedVmta.stdout, new RegExp(`^paused VirtualMTA ${VMTA} \\(1 queue with mail now\\)`));
    assert.match((await vmta(['queue', 'list', '--admin', relay.adminUrl, '--token-file', 'read-token'])).stdout, new RegExp(`VirtualMTA ${VMTA}: paused`));
    assert.match((await vmta(['queue', 'resume', '--vmta', VMTA, ...token])).stdout, new RegExp(`^resumed VirtualMTA ${VMTA} \\(1 queue with mail\\)`));
    assert.match((await vmta(['queue', 'retry', '--domain', 'nothing.example', ...token])).stdout, /^0 messages of domain nothing\.example on every VirtualMTA due now$/m);
  });
});
