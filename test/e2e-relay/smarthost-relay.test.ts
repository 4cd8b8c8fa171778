// Smarthost relaying through real relay processes: relay A routes recipient domains to relay B, a
// real submission server (AUTH PLAIN/LOGIN required, STARTTLS on one port, implicit TLS on
// another), through port lists whose first port is blocked. Every kind of block (refused, SYN
// dropped by iptables where the tests run as root, silent, greeting refused) is followed by each
// kind of next port (STARTTLS, implicit TLS): the message
// arrives at B's sink and A's accounting record names the port passed over and why. The port
// that worked is remembered (a silent port is not waited on again) and re-probed after
// reprobeAfter. Refused credentials defer without trying another port, are not offered again
// (B would lock the relay out), bounce at bounceAfter; a repaired Secret is used at the next retry. A smarthost that offers AUTH on a plain session
// gets neither credentials nor mail, and one whose certificate is not trusted gets no login
// either. The password never shows in A's logs or accounting.
import assert from 'node:assert/strict';
import { copyFile, mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, test } from 'node:test';
import type { AccountingRecord } from '../../mta/observe/accounting.ts';
import { droppedPortSkipReason, startBlockedPort, type BlockedKind, type BlockedPort } from '../fixtures/blocked-ports.ts';
import { baseRelayConfig, freePort, LISTENER_TLS_FILES, loopbackRelayConfig, metricValue, PARKING_SMTP_HOST, startRelayProcess, temporaryDirectory, writeListenerFiles, writeRelayConfig, type RelayProcess } from '../fixtures/relay-process.ts';
import { startSinkMx, type SinkMx } from '../fixtures/sink-mx.ts';
import { sendMarkedMessage } from '../fixtures/smtp-clients.ts';
import { createTestCa, type TestCa } from '../fixtures/tls.ts';
import { waitForRelay } from '../fixtures/wait-for-relay.ts';

const USER = 'acme';
const PASSWORD = 'acme-smarthost-secret-9f3k';
const DROPPED_SKIP = droppedPortSkipReason();
if (DROPPED_SKIP) console.log(`# the SYN-dropping first port is not tested: ${DROPPED_SKIP}`);
const BLOCKED_KINDS: BlockedKind[] = ['refused', ...(DROPPED_SKIP ? [] : ['dropped' as const]), 'silent', 'greeting'];
const EXPECTED_REASON = { refused: 'refused', dropped: 'timeout', silent: 'timeout', greeting: 'greeting' } as const;
const NEXT_PORTS = ['starttls', 'implicit'] as const;

let ca: TestCa;
let relayA: RelayProcess;
let relayB: RelayProcess;
let sink: SinkMx;
let plainSink: SinkMx;
let aDir: string;
let aPort: number;
const blocked = new Map<BlockedKind, BlockedPort>();
let neverTried: BlockedPort;
const cleanups: (() => Promise<void> | void)[] = [];

const classDomain = (kind: BlockedKind, next: string) => `${kind}-${next}.test`;
const portFailures = async (reason: string) => (await metricValue(relayA.adminUrl, `vmta_smarthost_port_failures_total{virtual_mta="vmta-a",reason="${reason}"}`)) ?? 0;

before(async () => {
  ca = createTestCa();
  cleanups.push(() => ca.cleanup());
  sink = await startSinkMx({ address: '127.0.0.1' });
  plainSink = await startSinkMx({ address: '127.0.0.1', auth: { users: { [USER]: PASSWORD }, beforeTls: true } });
  for (const kind of BLOCKED_KINDS) blocked.set(kind, await startBlockedPort(kind));
  neverTried = await startBlockedPort('silent');
  cleanups.push(() => Promise.all([sink.close(), plainSink.close(), neverTried.close(), ...[...blocked.values()].map((port) => port.close())]).then(() => undefined));

  // Relay B: the ESP's submission server, AUTH required on 2525 (STARTTLS) and 465 (implicit TLS).
  const b = await temporaryDirectory('vmta-smarthost-b-');
  cleanups.push(() => b.remove());
  await writeListenerFiles(b.path, ca.issue(['localhost']), { [USER]: PASSWORD });
  const [starttlsPort, implicitPort, bAdmin] = [await freePort(), await freePort(), await freePort()];
  const submission = (name: string, port: number, mode: 'starttls' | 'implicit') => ({ name, address: '127.0.0.1', port, relayPolicy: 'submission', tls: { mode, required: true, ...LISTENER_TLS_FILES }, auth: { required: true, mechanisms: ['PLAIN' as const, 'LOGIN' as const] } });
  await writeRelayConfig(
    b.path,
    baseRelayConfig({
      pool: { name: 'esp', domainDefaults: [{ match: '*', smtpHost: `127.0.0.1:${sink.port}`, tlsPolicy: 'none', retryAfter: ['1s'] }], virtualMtas: [{ name: 'esp-out', hostname: 'out.esp.test' }] },
      listeners: [submission('alternate', starttlsPort, 'starttls'), submission('submissions', implicitPort, 'implicit')],
      relayPolicies: [{ name: 'submission', users: { secretPath: 'users', defaultAllowedSenderDomains: ['example.com'] } }],
      admin: { address: '127.0.0.1', port: bAdmin },
    }),
  );
  relayB = await startRelayProcess({ configDir: b.path, adminPort: bAdmin });
  cleanups.push(() => relayB.kill('SIGKILL').then(() => undefined));

  // Relay A: routes each test domain to B (or to the plain sink) through its own port list.
  const a = await temporaryDirectory('vmta-smarthost-a-');
  cleanups.push(() => a.remove());
  aDir = a.path;
  await copyFile(ca.caFile, path.join(aDir, 'ca.crt'));
  for (const [folder, password] of [['login', PASSWORD], ['wrong-login', 'not-the-password'], ['expiring-login', 'not-the-password']] as const) {
    await mkdir(path.join(aDir, folder));
    await writeFile(path.join(aDir, folder, 'username'), `${USER}\n`);
    await writeFile(path.join(aDir, folder, 'password'), `${password}\n`);
  }
  const nextPort = { starttls: { port: starttlsPort, tls: 'starttls' as const }, implicit: { port: implicitPort, tls: 'implicit' as const } };
  const route = (ports: { port: number; tls: 'starttls' | 'implicit' }[], extra: Record<string, unknown> = {}) => ({
    hosts: ['127.0.0.1'],
    ports,
    tlsPolicy: 'verify' as const,
    caFile: 'ca.crt',
    auth: { secretPath: 'login', mechanism: 'auto' as const },
    connectTimeout: '1s',
    reprobeAfter: '1h',
    ...extra,
  });
  const classes = BLOCKED_KINDS.flatMap((kind) =>
    NEXT_PORTS.map((next) => ({
      match: classDomain(kind, next),
      // The greeting/STARTTLS class is re-probed quickly; the others keep what worked.
      smarthost: route([{ port: blocked.get(kind)!.port, tls: 'starttls' }, nextPort[next]], kind === 'greeting' && next === 'starttls' ? { reprobeAfter: '1s' } : {}),
    })),
  );
  aPort = await freePort();
  const aAdmin = await freePort();
  await writeRelayConfig(
    aDir,
    loopbackRelayConfig(aPort, aAdmin, {
      pool: {
        name: 'pool-a',
        domainDefaults: [
          { match: '*', smtpHost: PARKING_SMTP_HOST, retryAfter: ['1s'] },
          ...classes,
          { match: 'plain-login.test', smarthost: route([nextPort.starttls], { auth: { secretPath: 'login', mechanism: 'PLAIN' } }) },
          { match: 'login-login.test', smarthost: route([nextPort.implicit], { auth: { secretPath: 'login', mechanism: 'LOGIN' } }) },
          { match: 'wrong-login.test', smarthost: route([nextPort.starttls, { port: neverTried.port, tls: 'starttls' }], { auth: { secretPath: 'wrong-login', mechanism: 'auto' } }) },
          { match: 'expiring-login.test', bounceAfter: '3s', smarthost: route([nextPort.starttls], { auth: { secretPath: 'expiring-login', mechanism: 'auto' } }) },
          { match: 'untrusted.test', smarthost: route([nextPort.starttls, nextPort.implicit], { caFile: undefined }) },
          { match: 'plaintext.test', smarthost: route([{ port: plainSink.port, tls: 'starttls' }, { port: plainSink.port, tls: 'implicit' }], { tlsPolicy: 'required' }) },
        ],
        virtualMtas: [{ name: 'vmta-a', hostname: 'out.a.test' }],
      },
      delivery: { accounting: { file: 'accounting.jsonl' } },
    }),
  );
  relayA = await startRelayProcess({ configDir: aDir, adminPort: aAdmin });
  cleanups.push(() => relayA.kill('SIGKILL').then(() => undefined));
});

after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

async function records(): Promise<AccountingRecord[]> {
  const text = await readFile(path.join(aDir, 'accounting.jsonl'), 'utf8').catch(() => '');
  return text
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => JSON.parse(line) as AccountingRecord);
}

function recordOf(recipient: string, result: AccountingRecord['result'], nth = 0): Promise<AccountingRecord> {
  return waitForRelay(`a ${result} record for ${recipient}`, async () => (await records()).filter((record) => record.recipient === recipient && record.result === result)[nth], [relayA, relayB], 45_000);
}

function arrived(marker: string) {
  return waitForRelay(`${marker} at the ESP's sink`, () => sink.messages.find((message) => message.body.toString().includes(marker)), [relayA, relayB], 45_000);
}

test('each kind of blocked first port falls through to each kind of next port, and the accounting says which port and why', async () => {
  const cases = BLOCKED_KINDS.flatMap((kind) => NEXT_PORTS.map((next) => ({ kind, next, recipient: `rcpt@${classDomain(kind, next)}`, marker: `fallback-${kind}-${next}` })));
  await Promise.all(cases.map(({ recipient, marker }) => sendMarkedMessage(aPort, 'app@example.com', recipient, marker)));
  for (const { kind, next, recipient, marker } of cases) {
    const message = await arrived(marker);
    assert.deepEqual(message.to, [recipient]);
    const record = await recordOf(recipient, 'delivered');
    assert.equal(record.portFallbacks?.length, 1, `${kind} then ${next}: ${JSON.stringify(record.portFallbacks)}`);
    const [fallback] = record.portFallbacks!;
    assert.equal(fallback!.port, blocked.get(kind)!.port, `${kind} then ${next}`);
    assert.equal(fallback!.reason, EXPECTED_REASON[kind], `${kind} then ${next}: ${fallback!.detail}`);
    assert.ok(record.tlsVersion?.startsWith('TLSv1.'), `${kind} then ${next}: delivered over TLS`);
  }
  for (const reason of new Set(BLOCKED_KINDS.map((kind) => EXPECTED_REASON[kind]))) {
    const expected = BLOCKED_KINDS.filter((kind) => EXPECTED_REASON[kind] === reason).length * NEXT_PORTS.length;
    assert.ok((await portFailures(reason)) >= expected, `vmta_smarthost_port_failures_total{reason="${reason}"} counts at least ${expected}`);
  }
  const logins = relayB.logs.filter((log) => log.msg === 'authenticated');
  assert.ok(logins.length >= cases.length && logins.every((log) => log.user === USER && log.mechanism === 'PLAIN'), 'auto logs in with PLAIN');
});

test('the port that worked is used again without waiting on the silent port, and a fallback is re-probed after reprobeAfter', async () => {
  const silent = blocked.get('silent')!;
  const greeting = blocked.get('greeting')!;
  const silentDomain = classDomain('silent', 'starttls');
  const greetingDomain = classDomain('greeting', 'starttls');
  const first = await recordOf(`rcpt@${silentDomain}`, 'delivered');
  const firstGreeting = await recordOf(`rcpt@${greetingDomain}`, 'delivered');
  const [silentConnections, greetingConnections] = [silent.connections, greeting.connections];
  await new Promise((resolve) => setTimeout(resolve, 1200));
  await sendMarkedMessage(aPort, 'app@example.com', `again@${silentDomain}`, 'remembered-silent');
  await sendMarkedMessage(aPort, 'app@example.com', `again@${greetingDomain}`, 'reprobed-greeting');
  await arrived('remembered-silent');
  await arrived('reprobed-greeting');
  const remembered = await recordOf(`again@${silentDomain}`, 'delivered');
  assert.equal(silent.connections, silentConnections, 'the silent port is not tried again within reprobeAfter');
  assert.deepEqual(remembered.portFallbacks, first.portFallbacks, 'the record carries the remembered fallback and when it happened');
  const reprobed = await recordOf(`again@${greetingDomain}`, 'delivered');
  assert.equal(greeting.connections, greetingConnections + 1, 'after reprobeAfter the first port is tried again');
  assert.notEqual(reprobed.portFallbacks?.[0]?.at, firstGreeting.portFallbacks?.[0]?.at);
});

test('AUTH PLAIN and AUTH LOGIN are used as configured, on STARTTLS and on implicit TLS', async () => {
  await sendMarkedMessage(aPort, 'app@example.com', 'rcpt@plain-login.test', 'mechanism-plain');
  await sendMarkedMessage(aPort, 'app@example.com', 'rcpt@login-login.test', 'mechanism-login');
  await arrived('mechanism-plain');
  await arrived('mechanism-login');
  assert.equal((await recordOf('rcpt@plain-login.test', 'delivered')).portFallbacks, undefined, 'no fallback, no fallback field');
  await waitForRelay('a LOGIN at B', () => relayB.logs.find((log) => log.msg === 'authenticated' && log.mechanism === 'LOGIN'), [relayB]);
});

test('refused credentials defer with 4.7.8, try no other port, are retried with the repaired Secret, and bounce at bounceAfter', async () => {
  await sendMarkedMessage(aPort, 'app@example.com', 'rcpt@wrong-login.test', 'wrong-login');
  await sendMarkedMessage(aPort, 'app@example.com', 'rcpt@expiring-login.test', 'expiring-login');
  const refused = await recordOf('rcpt@wrong-login.test', 'deferred');
  assert.equal(refused.dsnStatus, '4.7.8');
  assert.match(refused.diagnostic, /AUTH refused by 127\.0\.0\.1\[127\.0\.0\.1\]:\d+: .*535/);
  // The retries that follow do not offer the refused login again: B would lock the relay out.
  const held = await recordOf('rcpt@wrong-login.test', 'deferred', 2);
  assert.equal(held.dsnStatus, '4.7.8');
  assert.match(held.diagnostic, /refused this login at .*535.*once the Secret changes/);
  assert.equal(relayB.logs.filter((log) => log.event === 'refusal auth_rate_limited').length, 0, 'B never locked the relay out');
  assert.equal(neverTried.connections, 0, 'a refused login is not tried on the next port');
  assert.equal(await portFailures('auth'), 2, 'one refused login per route: the held retries do not connect');
  const bounced = await recordOf('rcpt@expiring-login.test', 'bounced');
  assert.match(bounced.diagnostic, /535/);
  await writeFile(path.join(aDir, 'wrong-login', 'password'), `${PASSWORD}\n`);
  await arrived('wrong-login');
  assert.equal(neverTried.connections, 0);
});

test('a smarthost offering AUTH without STARTTLS gets no credentials and no mail: deferred as a TLS failure on every port', async () => {
  await sendMarkedMessage(aPort, 'app@example.com', 'rcpt@plaintext.test', 'plaintext-only');
  const deferred = await recordOf('rcpt@plaintext.test', 'deferred');
  assert.equal(deferred.dsnStatus, '4.7.5');
  assert.deepEqual(deferred.portFallbacks?.map((fallback) => [fallback.port, fallback.tls, fallback.reason]), [[plainSink.port, 'starttls', 'tls'], [plainSink.port, 'implicit', 'tls']]);
  assert.match(deferred.diagnostic, /no port usable/);
  assert.deepEqual(plainSink.authAttempts, []);
  assert.deepEqual(plainSink.messages, []);
});

test('a smarthost whose certificate does not chain to a trusted CA is passed over on every port and gets no login', async () => {
  const loginsBefore = relayB.logs.filter((log) => log.msg === 'authenticated').length;
  await sendMarkedMessage(aPort, 'app@example.com', 'rcpt@untrusted.test', 'untrusted-certificate');
  const deferred = await recordOf('rcpt@untrusted.test', 'deferred');
  assert.equal(deferred.dsnStatus, '4.7.5');
  assert.deepEqual(deferred.portFallbacks?.map((fallback) => [fallback.tls, fallback.reason]), [['starttls', 'tls'], ['implicit', 'tls']]);
  assert.match(deferred.portFallbacks![0]!.detail, /certificate/i);
  assert.equal(relayB.logs.filter((log) => log.msg === 'authenticated').length, loginsBefore, 'no login reached B');
});

test('the smarthost password appears nowhere in the relay logs or the accounting', async () => {
  await recordOf('rcpt@wrong-login.test', 'delivered');
  const text = `${JSON.stringify(relayA.logs)}${await readFile(path.join(aDir, 'accounting.jsonl'), 'utf8')}`;
  for (const secret of [PASSWORD, 'not-the-password', Buffer.from(`\0${USER}\0${PASSWORD}`).toString('base64'), Buffer.from(PASSWORD).toString('base64')]) assert.ok(!text.includes(secret), 'a secret in the logs or accounting');
});
