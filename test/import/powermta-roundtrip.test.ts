// Round trip of the source article's PowerMTA configuration: `vmta import powermta` -> the
// resources -> the relay config the operator renders from them -> a real relay process, which
// must behave as each <domain> block of the original says. mta1 (require-starttls, retry-after
// 10m) delivers only over STARTTLS and retries a plain-only MX in 10 minutes; mta2 (no STARTTLS,
// retry-after 45m) delivers in clear even where STARTTLS is offered and retries in 45 minutes;
// the default source (the pool-wide <domain *> requires STARTTLS) does the same as mta1. Port 25
// relays only for relay-domain and relay-address recipients. The seed routes no mail to mta1 or
// mta2 (as in PowerMTA, where nothing names them); the test turns on X-Virtual-MTA to reach them.
import assert from 'node:assert/strict';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { startDnsServer } from '../fixtures/dns-server.ts';
import { startImportedRelay } from '../fixtures/imported-relay.ts';
import { REPO_ROOT, temporaryDirectory, type RelayProcess } from '../fixtures/relay-process.ts';
import { startSinkGroup, type SinkMx } from '../fixtures/sink-mx.ts';
import { smtplibSend } from '../fixtures/smtp-clients.ts';
import { createTestCa } from '../fixtures/tls.ts';
import { readPowerMtaConfig } from '../../operator/import/powermta-config.ts';
import { importPowerMta } from '../../operator/import/powermta-import.ts';
import { localPoolDir, localSecretDir } from '../../operator/local/local-config.ts';

const SEED = path.join(REPO_ROOT, '..', 'shared', 'powermta-seed.conf');
const ADMIN_TOKEN = 'roundtrip-token';
const MINUTE = 60_000;

let relay: RelayProcess;
let plainMx: SinkMx;
let tlsMx: SinkMx;
let submissionPort: number;
let relayPort: number;
let certFile: string;
const cleanups: (() => Promise<unknown> | unknown)[] = [];

before(async () => {
  const ca = createTestCa();
  cleanups.push(() => ca.cleanup());
  [plainMx, tlsMx] = (await startSinkGroup([{}, { tls: ca.issue(['mx.tls.test']) }])) as [SinkMx, SinkMx];
  cleanups.push(() => plainMx.close(), () => tlsMx.close());
  const dns = await startDnsServer({
    'plain.test': { mx: [{ preference: 10, exchange: 'mx.plain.test' }] },
    'mx.plain.test': { a: [plainMx.address] },
    'tls.test': { mx: [{ preference: 10, exchange: 'mx.tls.test' }] },
    'mx.tls.test': { a: [tlsMx.address] },
  });
  cleanups.push(() => dns.close());
  const work = await temporaryDirectory('vmta-pmta-roundtrip-');
  cleanups.push(() => work.remove());

  const imported = importPowerMta(readPowerMtaConfig(SEED), { poolName: 'outbound' });
  for (const resource of imported.resources as { kind: string; metadata: { name: string }; spec: Record<string, any> }[]) {
    if (resource.kind === 'RelayPolicy' && resource.metadata.name === 'outbound-submission') resource.spec.routing.honorVirtualMtaHeader = true;
  }
  const started = await startImportedRelay(imported.resources, work.path, 'outbound', async (config) => {
    // Test placement only: the test DNS server, the sinks' port, a token for the admin API.
    const configDir = path.join(localPoolDir(path.join(work.path, 'work'), 'outbound'), 'config');
    await mkdir(configDir, { recursive: true });
    await writeFile(path.join(configDir, 'admin-token'), ADMIN_TOKEN);
    config.admin = { ...config.admin, tokenFile: 'admin-token' };
    config.delivery = { ...config.delivery, resolvers: [dns.server], mxPort: plainMx.port };
    relayPort = config.listeners.find((listener) => listener.name === 'outbound-smtp-25')!.port;
    submissionPort = config.listeners.find((listener) => listener.name === 'outbound-smtp-587')!.port;
  });
  relay = started.relay;
  certFile = path.join(localSecretDir(started.workDir, 'outbound-tls'), 'tls.crt');
  cleanups.push(() => relay.kill('SIGKILL'));
});

after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

async function submit(to: string, virtualMta: string | undefined, marker: string): Promise<void> {
  const header = virtualMta ? `X-Virtual-MTA: ${virtualMta}\r\n` : '';
  const result = await smtplibSend({ host: '127.0.0.1', port: submissionPort, mode: 'starttls', caFile: certFile, user: 'foo', password: 'barbaz', from: 'app@example.com', to: [to], message: `${header}Subject: ${marker}\r\n\r\n${marker}\r\n` });
  assert.match(result.stdout, /^OK 250/, `${marker}: ${result.stdout}${result.stderr}`);
}

async function adminGet(pathname: string): Promise<any> {
  const response = await fetch(`${relay.adminUrl}${pathname}`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
  return response.json();
}

async function eventually<T>(what: string, probe: () => Promise<T | undefined> | T | undefined, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

const received = (sink: SinkMx, marker: string) => sink.messages.find((message) => message.body.toString().includes(marker));

/** The deferred queue of (virtualMta, domain): its next retry must be `wait` after the attempt. */
async function deferredFor(virtualMta: string, domain: string, wait: number, submittedAt: number): Promise<void> {
  const queue = await eventually(`a deferral of ${virtualMta}/${domain}`, async () => {
    const { queues } = await adminGet('/api/v1/queues');
    return (queues as { virtualMta: string; domain: string; nextRetryAt: string | null; lastError: string | null }[]).find((entry) => entry.virtualMta === virtualMta && entry.domain === domain && entry.nextRetryAt !== null);
  });
  const retryIn = Date.parse(queue.nextRetryAt!) - submittedAt;
  assert.ok(retryIn > wait - MINUTE && retryIn <= wait + MINUTE, `${virtualMta}/${domain}: next retry in ${Math.round(retryIn / 1000)} s, expected about ${wait / MINUTE} min (${queue.lastError})`);
}

test('mta1 (require-starttls yes): delivered over STARTTLS where offered; a plain-only MX is deferred and retried after 10 minutes', async () => {
  await submit('user@tls.test', 'mta1', 'mta1-tls');
  const message = await eventually('mta1 at the STARTTLS MX', () => received(tlsMx, 'mta1-tls'));
  assert.equal(message.secure, true);
  const submittedAt = Date.now();
  await submit('user@plain.test', 'mta1', 'mta1-plain');
  await deferredFor('mta1', 'plain.test', 10 * MINUTE, submittedAt);
  assert.equal(received(plainMx, 'mta1-plain'), undefined, 'never sent in clear');
});

test('mta2 (use-starttls no): delivered in clear even where STARTTLS is offered; a deferral is retried after 45 minutes', async () => {
  await submit('user@tls.test', 'mta2', 'mta2-tls');
  assert.equal((await eventually('mta2 at the STARTTLS MX', () => received(tlsMx, 'mta2-tls'))).secure, false);
  await submit('user@plain.test', 'mta2', 'mta2-plain');
  assert.equal((await eventually('mta2 at the plain MX', () => received(plainMx, 'mta2-plain'))).secure, false);
  plainMx.options.mailReply = '451 4.3.0 try again later';
  try {
    const submittedAt = Date.now();
    await submit('other@plain.test', 'mta2', 'mta2-deferred');
    await deferredFor('mta2', 'plain.test', 45 * MINUTE, submittedAt);
  } finally {
    delete plainMx.options.mailReply;
  }
});

test('the default source (pool-wide <domain *> require-starttls yes): STARTTLS or nothing, retried on the pool default', async () => {
  await submit('someone@tls.test', undefined, 'default-tls');
  assert.equal((await eventually('default at the STARTTLS MX', () => received(tlsMx, 'default-tls'))).secure, true);
  await submit('someone@plain.test', undefined, 'default-plain');
  await eventually('a deferral of default/plain.test', async () => {
    const { queues } = await adminGet('/api/v1/queues');
    return (queues as { virtualMta: string; domain: string; lastError: string | null }[]).find((entry) => entry.virtualMta === 'default' && entry.domain === 'plain.test' && entry.lastError !== null);
  });
  assert.equal(received(plainMx, 'default-plain'), undefined);
});

test('port 25 (relay-domain, relay-address) relays only for those recipients, never for anyone else', async () => {
  const send = (to: string) => smtplibSend({ host: '127.0.0.1', port: relayPort, mode: 'plain', from: 'sender@elsewhere.test', to: [to], message: 'Subject: bounce\r\n\r\nbounce\r\n' });
  for (const accepted of ['user@some.domain', 'bounce@bounce.yourdomain.com', 'x@foo.com', 'x@foobar.com']) {
    assert.match((await send(accepted)).stdout, /^OK 250/, accepted);
  }
  for (const refused of ['user@other.domain', 'other@bounce.yourdomain.com', 'x@foobaz.com', 'x@foo.com.evil.test']) {
    assert.match((await send(refused)).stdout, /^ERROR SMTPRecipientsRefused .*55[0-9]/, refused);
  }
});
