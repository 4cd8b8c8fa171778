// A smarthost route in local mode, from the resources to the wire: the examples plus a route for
// esp.test to a submission sink (STARTTLS, AUTH required, its certificate signed by a test CA),
// the login and the CA as Secrets in the resource folder. `vmta local` writes the Secrets to its
// work dir and points the route at them; a message submitted with smtplib reaches the sink over
// TLS after AUTH PLAIN with the Secret's login, and the rendered relay.yaml holds the Secret's
// path but not the password.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { freePortShift } from '../fixtures/local-ports.ts';
import { startSinkMx, type SinkMx } from '../fixtures/sink-mx.ts';
import { smtplibSend } from '../fixtures/smtp-clients.ts';
import { createTestCa, type TestCa } from '../fixtures/tls.ts';
import { waitForRelay } from '../fixtures/wait-for-relay.ts';

const REPO = fileURLToPath(new URL('../../', import.meta.url));
const ESP_PASSWORD = 'esp-local-password-7q2w';
let dir: string;
let cli: ChildProcess;
let shift: number;
let ca: TestCa;
let esp: SinkMx;
let output = '';

before(async () => {
  ca = createTestCa();
  const certificate = ca.issue(['localhost']);
  esp = await startSinkMx({ address: '127.0.0.1', tls: certificate, auth: { users: { 'esp-user': ESP_PASSWORD } } });
  shift = await freePortShift();
  dir = await mkdtemp(path.join(os.tmpdir(), 'vmta-local-smarthost-'));
  const resources = path.join(dir, 'resources');
  await cp(path.join(REPO, 'examples'), resources, { recursive: true });
  const poolFile = path.join(resources, 'pool.yaml');
  const route = ['    - domain: esp.test', '      smarthost:', '        hosts: ["127.0.0.1"]', `        ports: [{ port: ${esp.port}, tls: starttls }]`, '        caSecretName: esp-ca', '        auth: { secretName: esp-login, mechanism: PLAIN }', '        connectTimeout: 5s'].join('\n');
  await writeFile(poolFile, (await readFile(poolFile, 'utf8')).replace(/^  domainDefaults:\n/m, `  domainDefaults:\n${route}\n`));
  const caPem = ca.ca.toString().trim().split('\n').map((line) => `    ${line}`).join('\n');
  const secrets = [
    `apiVersion: v1\nkind: Secret\nmetadata:\n  name: esp-login\ntype: kubernetes.io/basic-auth\nstringData:\n  username: esp-user\n  password: ${ESP_PASSWORD}\n`,
    `apiVersion: v1\nkind: Secret\nmetadata:\n  name: esp-ca\ntype: Opaque\nstringData:\n  ca.crt: |\n${caPem}\n`,
  ];
  const secretsFile = path.join(resources, 'secrets.yaml');
  await writeFile(secretsFile, `${await readFile(secretsFile, 'utf8')}\n---\n${secrets.join('---\n')}`);
  cli = spawn(process.execPath, [path.join(REPO, 'cli/vmta.ts'), 'local', resources, '--work-dir', path.join(dir, 'work'), '--port-shift', String(shift)], { stdio: ['ignore', 'pipe', 'pipe'] });
  for (const stream of [cli.stdout!, cli.stderr!]) stream.on('data', (chunk: Buffer) => (output += chunk.toString()));
  await waitForRelay('pool "outbound" is ready', () => (/pool "outbound" is ready/.test(output) ? true : cli.exitCode !== null ? Promise.reject(new Error(output)) : undefined), [{ logs: output.split('\n') }], 90_000);
});

after(async () => {
  if (cli && cli.exitCode === null) {
    const exited = new Promise((resolve) => cli.once('exit', resolve));
    cli.kill('SIGTERM');
    await exited;
  }
  await esp?.close();
  ca?.cleanup();
  if (dir) await rm(dir, { recursive: true, force: true });
});

test('local mode relays through the smarthost with the login of the local Secret, over TLS verified by the Secret\'s CA', async () => {
  const sent = await smtplibSend({ host: '127.0.0.1', port: 10_587 + shift, mode: 'starttls', caFile: path.join(dir, 'work/secrets/relay-tls/tls.crt'), user: 'alice', password: 'demo-password-alice', from: 'alice@example.com', to: ['someone@esp.test'], message: 'Subject: via the ESP\r\n\r\nlocal-smarthost-marker\r\n' });
  assert.match(sent.stdout, /queued as/, sent.stdout + sent.stderr);
  const message = await waitForRelay('the message at the ESP sink', () => esp.messages.find((received) => received.body.toString().includes('local-smarthost-marker')), [{ logs: output.split('\n').slice(-20) }], 45_000);
  assert.deepEqual(message.to, ['someone@esp.test']);
  assert.equal(message.secure, true);
  assert.deepEqual(esp.authAttempts, [{ method: 'PLAIN', username: 'esp-user', secure: true, accepted: true }]);
  const configMap = await readFile(path.join(dir, 'work/pools/outbound/configmap/relay.yaml'), 'utf8');
  const localConfig = await readFile(path.join(dir, 'work/pools/outbound/config/relay.yaml'), 'utf8');
  assert.match(configMap, /secretPath: \/etc\/vmta\/secrets\/esp-login\n/, 'the rendered ConfigMap names the pod mount');
  assert.match(localConfig, /secretPath: .*work\/secrets\/esp-login\n/, 'the local copy names the local Secret');
  for (const text of [configMap, localConfig]) assert.ok(!text.includes(ESP_PASSWORD), 'no password in relay.yaml');
  assert.ok(!output.includes(ESP_PASSWORD), 'no password in the output of vmta local');
});
