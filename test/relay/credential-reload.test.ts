// A relay whose AUTH-required listener loses its usable credentials on a hot reload keeps the
// previous config: every way a mounted users Secret can become unusable (the user file removed,
// emptied, unreadable, replaced by a directory, a malformed hash, two lines, every user gone, the
// directory gone, CRAM-MD5 only with hashed secrets) is tried on one running relay process. Each
// is refused (a failed reload in the metrics, an error log naming the listener and the field),
// python smtplib still logs in with the old password afterwards, and repairing the files is
// taken again.
import assert from 'node:assert/strict';
import { mkdir, rm, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { hashPassword } from '../../mta/inbound/credentials.ts';
import type { RuntimeConfigInput } from '../../mta/config/schema.ts';
import { smtplibSend } from '../fixtures/smtp-clients.ts';
import { baseRelayConfig, freePort, LISTENER_TLS_FILES, metricValue, startRelayProcess, temporaryDirectory, writeListenerFiles, writeRelayConfig, type RelayProcess } from '../fixtures/relay-process.ts';
import { createTestCa, type TestCa } from '../fixtures/tls.ts';

const PASSWORD = 'alice-password';

let ca: TestCa;
let directory: { path: string; remove: () => Promise<void> };
let relay: RelayProcess;
let port: number;
let config: (mechanisms: ('PLAIN' | 'LOGIN' | 'CRAM-MD5')[]) => RuntimeConfigInput;

const usersDir = () => path.join(directory.path, 'users');
const aliceFile = () => path.join(usersDir(), 'alice');

before(async () => {
  ca = createTestCa();
  directory = await temporaryDirectory('vmta-credential-reload-');
  await writeListenerFiles(directory.path, ca.issue(['localhost']), { alice: PASSWORD });
  port = await freePort();
  const adminPort = await freePort();
  config = (mechanisms) =>
    baseRelayConfig({
      listeners: [{ name: 'submission', address: '127.0.0.1', port, relayPolicy: 'submission', tls: { mode: 'starttls', required: true, ...LISTENER_TLS_FILES }, auth: { required: true, mechanisms } }],
      relayPolicies: [{ name: 'submission', users: { secretPath: 'users', defaultAllowedSenderDomains: ['example.com'] } }],
      admin: { address: '127.0.0.1', port: adminPort },
    });
  await writeRelayConfig(directory.path, config(['PLAIN', 'LOGIN']));
  relay = await startRelayProcess({ configDir: directory.path, adminPort, args: ['--config-poll-interval', '1s'] });
});

after(async () => {
  await relay?.kill('SIGKILL');
  await directory?.remove();
  ca?.cleanup();
});

async function loginAndSend(): Promise<string> {
  const result = await smtplibSend({ host: '127.0.0.1', port, mode: 'starttls', caFile: ca.caFile, user: 'alice', password: PASSWORD, from: 'app@example.com', to: ['someone@example.org'], message: 'Subject: still here\r\n\r\nhello\r\n' });
  return `${result.stdout}${result.stderr}`;
}

const reloads = async (result: 'success' | 'failure') => (await metricValue(relay.adminUrl, `vmta_config_reloads_total{result="${result}"}`)) ?? 0;

async function until(what: string, check: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + 20_000;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** Every way the users of an AUTH-required listener become unusable, each with the words the refusal must contain. */
const BREAKAGES: { name: string; breakIt: () => Promise<void>; says: RegExp }[] = [
  { name: 'the only user file removed', breakIt: () => rm(aliceFile()), says: /auth\.required: no client can authenticate: relay policy "submission" users\.secretPath .* holds no user/ },
  { name: 'the user file emptied', breakIt: () => writeFile(aliceFile(), ''), says: /users\.secretPath: user file .*alice is empty/ },
  { name: 'the user file emptied but for a line break', breakIt: () => writeFile(aliceFile(), '\n'), says: /users\.secretPath: user file .*alice is empty/ },
  { name: 'the user file unreadable (a symlink to nothing, as a half-swapped Secret leaves it)', breakIt: async () => { await rm(aliceFile()); await symlink(path.join(usersDir(), '..data', 'alice'), aliceFile()); }, says: /holds no user/ },
  { name: 'the user file replaced by a directory', breakIt: async () => { await rm(aliceFile()); await mkdir(aliceFile()); }, says: /holds no user/ },
  { name: 'a malformed {SCRYPT} line', breakIt: () => writeFile(aliceFile(), '{SCRYPT}16384$8$1$not base64!$x\n'), says: /users\.secretPath: user file .*alice: expected \{SCRYPT\}N\$r\$p\$salt\$key/ },
  { name: 'scrypt parameters out of range', breakIt: () => writeFile(aliceFile(), `${hashPassword(PASSWORD, { N: 1024 }).replace('{SCRYPT}1024$', '{SCRYPT}1000$')}\n`), says: /scrypt parameters N=1000/ },
  { name: 'two lines in the user file', breakIt: () => writeFile(aliceFile(), `${PASSWORD}\nsecond-password\n`), says: /user file .*alice: holds more than one line/ },
  { name: 'every user removed, only Kubernetes dotfiles left', breakIt: async () => { await rm(aliceFile()); await writeFile(path.join(usersDir(), '..data'), ''); }, says: /holds no user/ },
  { name: 'the users directory removed', breakIt: () => rm(usersDir(), { recursive: true }), says: /users\.secretPath: cannot read users directory/ },
  {
    name: 'only CRAM-MD5 offered while the user is a {SCRYPT} hash',
    breakIt: async () => {
      await writeFile(aliceFile(), `${hashPassword(PASSWORD, { N: 1024 })}\n`);
      await writeRelayConfig(directory.path, config(['CRAM-MD5']));
    },
    says: /auth\.mechanisms offers only CRAM-MD5, which needs clear-text secrets/,
  },
];

/** Back to the good state: one clear user and PLAIN/LOGIN. */
async function repair(): Promise<void> {
  await rm(usersDir(), { recursive: true, force: true });
  await mkdir(usersDir());
  await writeFile(aliceFile(), `${PASSWORD}\n`);
  await writeRelayConfig(directory.path, config(['PLAIN', 'LOGIN']));
}

test('a hot reload that leaves an AUTH-required listener without usable credentials is refused, and the old users still log in', async () => {
  assert.match(await loginAndSend(), /^OK 250/, 'alice logs in before anything changes');
  for (const breakage of BREAKAGES) {
    const [failures, logsBefore] = [await reloads('failure'), relay.logs.length];
    await breakage.breakIt();
    await until(`${breakage.name}: a failed reload`, async () => (await reloads('failure')) > failures);
    assert.equal(await metricValue(relay.adminUrl, 'vmta_config_last_reload_successful'), 0, breakage.name);
    const logged = relay.logs.slice(logsBefore).find((record) => record.level >= 50 && /runtime config refused, previous version keeps serving/.test(record.msg));
    assert.ok(logged, `${breakage.name}: an error log`);
    assert.match(logged.msg, /listener "submission"/, `${breakage.name}: the log names the listener`);
    assert.match(logged.msg, breakage.says, `${breakage.name}: the log names the field`);
    const status = (await (await fetch(`${relay.adminUrl}/config`)).json()) as { lastError?: { message: string } };
    assert.match(status.lastError?.message ?? '', breakage.says, `${breakage.name}: /config reports it`);
    assert.match(await loginAndSend(), /^OK 250/, `${breakage.name}: alice still logs in with the old password`);
    const successes = await reloads('success');
    await repair();
    await until(`${breakage.name}: the repaired files loaded`, async () => (await reloads('success')) > successes);
  }
  assert.match(await loginAndSend(), /^OK 250/, 'alice logs in after the last repair');
});
