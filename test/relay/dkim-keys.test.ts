// DKIM keys under a running relay process: a key file rotated in place signs the next message
// without a restart (dkimpy verifies it against the new DNS record), a bad key refuses the config
// version while the previous key keeps signing, and a relay whose key is bad from the start does
// not start and names the field and the problem. The class of bad keys and the choice of keys
// (VirtualMTA before pool, organizational domain on or off) are checked on the signer itself.
import assert from 'node:assert/strict';
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, test } from 'node:test';
import type { RuntimeConfigInput } from '../../mta/config/schema.ts';
import { RuntimeConfig } from '../../mta/config/schema.ts';
import { dkimPublicKeyRecord } from '../../mta/signing/dkim-keys.ts';
import { DkimSigner } from '../../mta/signing/dkim-signer.ts';
import { sendWithSmtplib, startDkimWorld, verifyWithDkimpy } from '../fixtures/dkim-verifier.ts';
import type { TestDnsServer } from '../fixtures/dns-server.ts';
import { freePort, loopbackRelayConfig, metricValue, startRelayProcess, writeRelayConfig, type RelayProcess } from '../fixtures/relay-process.ts';
import type { SinkMx } from '../fixtures/sink-mx.ts';

const pem = (key: KeyObject) => key.export({ type: 'pkcs8', format: 'pem' }) as string;
const rsa = (bits = 2048) => generateKeyPairSync('rsa', { modulusLength: bits }).privateKey;
const ed25519 = () => generateKeyPairSync('ed25519').privateKey;

let dir: string;
let dns: TestDnsServer;
let sink: SinkMx;
let relay: RelayProcess;
let relayPort: number;
let adminPort: number;
const cleanups: (() => Promise<void> | void)[] = [];

function relayConfig(keyFile = 'rotating.pem'): RuntimeConfigInput {
  const config = loopbackRelayConfig(relayPort, adminPort);
  config.pool.domainDefaults = [{ match: '*', smtpHost: `${sink.address}:${sink.port}`, retryAfter: ['1s'] }];
  config.pool.dkim = { keys: [{ domain: 'rotate.test', selector: 'sel', keyFile }] };
  return config;
}

before(async () => {
  ({ dir, sink, dns } = await startDkimWorld('vmta-dkim-keys-', cleanups));
  relayPort = await freePort();
  adminPort = await freePort();
});

after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

let sent = 0;
async function sendAndVerify(): Promise<{ valid: boolean; error?: string }[]> {
  sent += 1;
  const marker = `rotation-${sent}`;
  await sendWithSmtplib('127.0.0.1', relayPort, [{ from: 'a@rotate.test', to: ['b@dest.test'], message: Buffer.from(`From: a@rotate.test\r\nTo: b@dest.test\r\nSubject: ${marker}\r\n\r\nbody ${marker}\r\n`) }]);
  const deadline = Date.now() + 30_000;
  let received: Buffer | undefined;
  while (!(received = sink.messages.find((message) => message.body.includes(`Subject: ${marker}`))?.body)) {
    if (Date.now() > deadline) throw new Error(`${marker} did not reach the sink`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return (await verifyWithDkimpy([received], dns.server))[0]!;
}

test('a relay whose DKIM key is too short does not start, and says which key and why', async () => {
  await writeFile(path.join(dir, 'short.pem'), pem(rsa(1024)));
  await writeRelayConfig(dir, relayConfig('short.pem'));
  await assert.rejects(startRelayProcess({ configDir: dir, adminPort, readyTimeoutMs: 30_000 }), /pool\.dkim\.keys\[0\]\.keyFile .*rotate\.test selector sel.*RSA key of 1024 bits is too short; rsa-sha256 needs at least 2048 bits/);
});

test('a rotated key file signs the next message without a restart; a bad one is refused and the old key keeps signing', async () => {
  const first = rsa();
  await writeFile(path.join(dir, 'rotating.pem'), pem(first));
  dns.set('sel._domainkey.rotate.test', { txt: [dkimPublicKeyRecord(first)], ttl: 0 });
  await writeRelayConfig(dir, relayConfig());
  relay = await startRelayProcess({ configDir: dir, adminPort, args: ['--config-poll-interval', '500ms'] });
  cleanups.push(async () => void (await relay.kill('SIGKILL')));
  const pid = relay.child.pid;
  assert.deepEqual((await sendAndVerify()).map((check) => check.valid), [true]);

  const second = rsa();
  const reloads = (await metricValue(relay.adminUrl, 'vmta_config_reloads_total{result="success"}')) ?? 0;
  await writeFile(path.join(dir, 'rotating.pem'), pem(second));
  dns.set('sel._domainkey.rotate.test', { txt: [dkimPublicKeyRecord(second)], ttl: 0 });
  const deadline = Date.now() + 20_000;
  while (((await metricValue(relay.adminUrl, 'vmta_config_reloads_total{result="success"}')) ?? 0) <= reloads) {
    if (Date.now() > deadline) throw new Error('the rotated key was not reloaded');
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  assert.deepEqual((await sendAndVerify()).map((check) => check.valid), [true], 'signed with the new key, which DNS now publishes');
  assert.equal(relay.child.pid, pid, 'same process');

  for (const [bad, why] of [[pem(rsa(1024)), /RSA key of 1024 bits is too short/], [pem(ed25519()), /a ed25519 key cannot sign rsa-sha256/], ['not a key\n', /not a PEM private key/]] as const) {
    const failures = (await metricValue(relay.adminUrl, 'vmta_config_reloads_total{result="failure"}')) ?? 0;
    await writeFile(path.join(dir, 'rotating.pem'), bad);
    const refused = await relay.waitForLog((record) => /runtime config refused/.test(record.msg) && why.test(record.msg) && !seenRefusals.has(record), 20_000);
    seenRefusals.add(refused);
    assert.equal(await metricValue(relay.adminUrl, 'vmta_config_reloads_total{result="failure"}'), failures + 1);
    assert.deepEqual((await sendAndVerify()).map((check) => check.valid), [true], 'the previous key keeps signing');
  }
});
const seenRefusals = new Set<object>();

test('keys are chosen VirtualMTA first, then pool, then the organizational domain unless turned off', async () => {
  const files: Record<string, string> = {};
  for (const name of ['pool', 'vmta', 'org']) {
    files[name] = path.join(dir, `choose-${name}.pem`);
    await writeFile(files[name]!, pem(ed25519()));
  }
  const config = (organizationalDomain: boolean) =>
    RuntimeConfig.parse({
      ...relayConfig(),
      pool: {
        name: 'p',
        virtualMtas: [
          { name: 'v1', hostname: 'v1.test', dkimKeys: [{ domain: 'brand.test', selector: 'v1', algorithm: 'ed25519-sha256', keyFile: files.vmta }] },
          { name: 'v2', hostname: 'v2.test' },
        ],
        dkim: {
          organizationalDomain,
          keys: [
            { domain: 'brand.test', selector: 'pool', algorithm: 'ed25519-sha256', keyFile: files.pool },
            { domain: 'parent.co.uk', selector: 'org', algorithm: 'ed25519-sha256', keyFile: files.org },
          ],
        },
      },
    });
  const on = await DkimSigner.load(config(true));
  const selectors = (signer: DkimSigner, domain: string, vmta: string) => {
    const chosen = signer.choose(domain, vmta);
    return chosen ? `${chosen.match}:${chosen.signingDomain}:${chosen.keys.map((key) => key.config.selector).join(',')}` : 'none';
  };
  assert.equal(selectors(on, 'brand.test', 'v1'), 'direct:brand.test:v1');
  assert.equal(selectors(on, 'brand.test', 'v2'), 'direct:brand.test:pool');
  assert.equal(selectors(on, 'mail.news.parent.co.uk', 'v2'), 'organizational:parent.co.uk:org', 'the public suffix list knows co.uk');
  assert.equal(selectors(on, 'co.uk', 'v2'), 'none', 'a public suffix has no organizational domain');
  assert.equal(selectors(on, 'other.test', 'v1'), 'none');
  const off = await DkimSigner.load(config(false));
  assert.equal(selectors(off, 'mail.news.parent.co.uk', 'v2'), 'none');
  assert.equal(selectors(off, 'parent.co.uk', 'v2'), 'direct:parent.co.uk:org');
});
