// DKIM signing end to end: Python's smtplib hands a class of messages to a real relay process,
// which signs them and delivers them to a sink MX; dkimpy (an independent implementation)
// verifies every signature of every message as the sink received it, with the public keys
// served as TXT records by the test DNS server. The class: both algorithms, every
// canonicalization pair, dual signing, 8-bit bodies, 998-octet lines, bodies ending in blank
// lines or trailing whitespace, an empty body, folded and repeated headers, an X-Virtual-MTA
// field the relay removes, and a From sub-domain signed by its organizational domain. Tampered
// copies (a body byte, a second From) must fail, so the verifier is not vacuous.
import assert from 'node:assert/strict';
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, test } from 'node:test';
import type { DkimAlgorithm, DkimCanonicalization } from '../../mta/config/schema.ts';
import { dkimPublicKeyRecord, dkimRecordName } from '../../mta/signing/dkim-keys.ts';
import { sendWithSmtplib, startDkimWorld, verifyWithDkimpy, type SignatureCheck } from '../fixtures/dkim-verifier.ts';
import type { TestDnsServer } from '../fixtures/dns-server.ts';
import { freePort, loopbackRelayConfig, metricValue, startRelayProcess, writeRelayConfig, type RelayProcess } from '../fixtures/relay-process.ts';
import type { SinkMx } from '../fixtures/sink-mx.ts';

interface KeySpec {
  domain: string;
  selector: string;
  algorithm: DkimAlgorithm;
  canonicalization: DkimCanonicalization;
}

/** Each signing domain gets an RSA and an Ed25519 key, so every message of these domains is dual-signed. */
const KEYS: KeySpec[] = [
  { domain: 'relaxed.test', selector: 'rsa1', algorithm: 'rsa-sha256', canonicalization: 'relaxed/relaxed' },
  { domain: 'relaxed.test', selector: 'ed1', algorithm: 'ed25519-sha256', canonicalization: 'relaxed/relaxed' },
  { domain: 'simple.test', selector: 'rsa1', algorithm: 'rsa-sha256', canonicalization: 'simple/simple' },
  { domain: 'simple.test', selector: 'ed1', algorithm: 'ed25519-sha256', canonicalization: 'simple/simple' },
  { domain: 'mixed.test', selector: 'rsa1', algorithm: 'rsa-sha256', canonicalization: 'relaxed/simple' },
  { domain: 'mixed.test', selector: 'ed1', algorithm: 'ed25519-sha256', canonicalization: 'simple/relaxed' },
];

/** From domains: each key domain directly, one sub-domain that only its organizational domain can sign, one with no key. */
const FROM_DOMAINS = ['relaxed.test', 'simple.test', 'mixed.test', 'news.relaxed.test'];
const UNSIGNED_DOMAIN = 'nokey.example';

const BODIES: Record<string, Buffer> = {
  plain: Buffer.from('Hello,\r\n\r\nA short plain message.\r\n'),
  eightBit: Buffer.from('Grüße aus Köln — ünïcödé bytes, € and 日本語.\r\nZweite Zeile.\r\n', 'utf8'),
  longLines: Buffer.from(`${'x'.repeat(998)}\r\n${'y'.repeat(997)} \r\nend\r\n`),
  trailingBlankLines: Buffer.from('Body that ends in blank lines.\r\n\r\n\r\n\r\n'),
  whitespace: Buffer.from('tabs\tand  double  spaces \t \r\n   leading and trailing   \r\n\t\r\n'),
  empty: Buffer.alloc(0),
  dotLines: Buffer.from('.\r\n..leading dots\r\n.\r\nlast\r\n'),
};

function headers(from: string, marker: string, variant: number): string {
  const common = [
    `From: "Sender ${variant}" <sender@${from}>`,
    `To: rcpt@dest.test`,
    `Subject: dkim ${marker}`,
    `Date: Thu, 03 Dec 2026 08:00:00 +0000`,
    `Message-ID: <${marker}@${from}>`,
    'MIME-Version: 1.0',
    'Content-Type: text/plain; charset=utf-8',
    'Content-Transfer-Encoding: 8bit',
  ];
  // Variants: folded and oddly spaced fields, a repeated To, list headers, an X-Virtual-MTA hint.
  if (variant % 3 === 1) common.push('Cc:   first@dest.test,\r\n\t  second@dest.test  ', 'To: another@dest.test', 'X-Virtual-MTA: vmta-1');
  if (variant % 3 === 2) common.push(`List-Unsubscribe: <https://${from}/u/${marker}>,\r\n <mailto:unsubscribe@${from}>`, 'List-Unsubscribe-Post: List-Unsubscribe=One-Click', 'subject:  lower-case second subject ');
  return common.join('\r\n') + '\r\n';
}

let dir: string;
let dns: TestDnsServer;
let sink: SinkMx;
let relay: RelayProcess;
let relayPort: number;
const cleanups: (() => Promise<void> | void)[] = [];

function keyPair(algorithm: DkimAlgorithm): KeyObject {
  return algorithm === 'rsa-sha256' ? generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey : generateKeyPairSync('ed25519').privateKey;
}

before(async () => {
  ({ dir, sink, dns } = await startDkimWorld('vmta-dkim-', cleanups));
  await mkdir(path.join(dir, 'dkim'));
  const keys = [];
  for (const spec of KEYS) {
    const privateKey = keyPair(spec.algorithm);
    const keyFile = `dkim/${spec.domain}-${spec.selector}.pem`;
    await writeFile(path.join(dir, keyFile), privateKey.export({ type: 'pkcs8', format: 'pem' }));
    dns.set(dkimRecordName(spec.selector, spec.domain), { txt: [dkimPublicKeyRecord(privateKey)] });
    keys.push({ ...spec, keyFile });
  }
  relayPort = await freePort();
  const adminPort = await freePort();
  const config = loopbackRelayConfig(relayPort, adminPort, { delivery: { resolvers: [dns.server] } });
  config.pool.domainDefaults = [{ match: '*', smtpHost: `${sink.address}:${sink.port}`, retryAfter: ['1s'] }];
  config.pool.dkim = { keys, expireAfter: '7d' };
  config.relayPolicies![0]!.routing = { honorVirtualMtaHeader: true };
  await writeRelayConfig(dir, config);
  relay = await startRelayProcess({ configDir: dir, adminPort });
  cleanups.push(async () => void (await relay.kill('SIGKILL')));
});

after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

async function deliveredMessages(markers: string[]): Promise<Map<string, Buffer>> {
  const deadline = Date.now() + 60_000;
  for (;;) {
    const found = new Map<string, Buffer>();
    for (const message of sink.messages) {
      const marker = markers.find((candidate) => message.body.includes(`dkim ${candidate}`));
      if (marker) found.set(marker, message.body);
    }
    if (found.size === markers.length) return found;
    if (Date.now() > deadline) throw new Error(`only ${found.size} of ${markers.length} messages reached the sink`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

function summarize(checks: SignatureCheck[][]): Record<string, { verified: number; failed: number }> {
  const summary: Record<string, { verified: number; failed: number }> = {};
  for (const check of checks.flat()) {
    const key = `${check.algorithm} ${check.canonicalization}`;
    summary[key] ??= { verified: 0, failed: 0 };
    summary[key][check.valid ? 'verified' : 'failed'] += 1;
  }
  return summary;
}

test('every message of the class is dual-signed and dkimpy verifies every signature; tampered copies fail', async () => {
  const sent: { marker: string; from: string; body: string }[] = [];
  const messages: { from: string; to: string[]; message: Buffer }[] = [];
  let variant = 0;
  for (const from of FROM_DOMAINS) {
    for (const [bodyName, body] of Object.entries(BODIES)) {
      variant += 1;
      const marker = `m${variant}-${bodyName}`;
      sent.push({ marker, from, body: bodyName });
      messages.push({ from: `sender@${from}`, to: ['rcpt@dest.test'], message: Buffer.concat([Buffer.from(`${headers(from, marker, variant)}\r\n`), body]) });
    }
  }
  await sendWithSmtplib('127.0.0.1', relayPort, messages);
  const received = await deliveredMessages(sent.map((entry) => entry.marker));
  const ordered = sent.map((entry) => received.get(entry.marker)!);
  const checks = await verifyWithDkimpy(ordered, dns.server);
  console.log('dkimpy results by algorithm and canonicalization:', JSON.stringify(summarize(checks)));

  sent.forEach((entry, index) => {
    const signatures = checks[index]!;
    const expectedDomain = entry.from === 'news.relaxed.test' ? 'relaxed.test' : entry.from;
    assert.deepEqual(signatures.map((check) => check.algorithm).sort(), ['ed25519-sha256', 'rsa-sha256'], `${entry.marker} from ${entry.from}: dual-signed`);
    for (const check of signatures) {
      assert.equal(check.domain, expectedDomain, `${entry.marker}: d=`);
      assert.ok(check.valid, `${entry.marker} (${entry.body} from ${entry.from}) ${check.algorithm} ${check.canonicalization}: ${check.error}`);
    }
    const text = ordered[index]!.toString('latin1');
    assert.doesNotMatch(text.slice(0, text.indexOf('\r\n\r\n')), /^X-Virtual-MTA:/im, 'the routing hint is removed before signing');
    assert.match(text, /^DKIM-Signature:[^]*?x=\d+/m, 'expireAfter puts an x= tag');
  });
  const canonicalizations = new Set(checks.flat().map((check) => `${check.algorithm} ${check.canonicalization}`));
  for (const spec of KEYS) assert.ok(canonicalizations.has(`${spec.algorithm} ${spec.canonicalization}`), `${spec.algorithm} ${spec.canonicalization} was exercised`);

  // Tampering: one body byte changed, or a second From added on top (From is oversigned).
  const tampered = ordered.flatMap((message) => {
    const text = message.toString('latin1');
    const bodyStart = text.indexOf('\r\n\r\n') + 4;
    const changedBody = Buffer.from(`${text.slice(0, bodyStart)}Z${text.slice(bodyStart)}`, 'latin1');
    const secondFrom = Buffer.from(`From: attacker@evil.test\r\n${text}`, 'latin1');
    return [changedBody, secondFrom];
  });
  const tamperedChecks = await verifyWithDkimpy(tampered, dns.server);
  tamperedChecks.forEach((signatures, index) => {
    assert.ok(signatures.length >= 2, `tampered copy ${index} still carries its signatures`);
    for (const check of signatures) assert.equal(check.valid, false, `tampered copy ${index} (${index % 2 === 0 ? 'body byte' : 'second From'}) ${check.algorithm} ${check.canonicalization} must fail`);
  });

  const signatures = (match: string, algorithm: string) => metricValue(relay.adminUrl, `vmta_dkim_signatures_total{match="${match}",algorithm="${algorithm}"}`);
  const bodies = Object.keys(BODIES).length;
  assert.equal(await signatures('direct', 'rsa-sha256'), 3 * bodies);
  assert.equal(await signatures('direct', 'ed25519-sha256'), 3 * bodies);
  assert.equal(await signatures('organizational', 'rsa-sha256'), bodies);
  assert.equal(await signatures('organizational', 'ed25519-sha256'), bodies);
});

test('a From domain without a key (or a message without From) is delivered unsigned and counted by reason', async () => {
  const before = { noKey: (await metricValue(relay.adminUrl, 'vmta_dkim_unsigned_messages_total{reason="no_key"}')) ?? 0, noFrom: (await metricValue(relay.adminUrl, 'vmta_dkim_unsigned_messages_total{reason="no_from_domain"}')) ?? 0 };
  await sendWithSmtplib('127.0.0.1', relayPort, [
    { from: `sender@${UNSIGNED_DOMAIN}`, to: ['rcpt@dest.test'], message: Buffer.from(`${headers(UNSIGNED_DOMAIN, 'unsigned-nokey', 0)}\r\nno key for this domain\r\n`) },
    { from: 'sender@relaxed.test', to: ['rcpt@dest.test'], message: Buffer.from('To: rcpt@dest.test\r\nSubject: dkim unsigned-nofrom\r\n\r\nno From header\r\n') },
  ]);
  const received = await deliveredMessages(['unsigned-nokey', 'unsigned-nofrom']);
  for (const message of received.values()) assert.doesNotMatch(message.toString('latin1'), /^DKIM-Signature:/im);
  assert.equal(await metricValue(relay.adminUrl, 'vmta_dkim_unsigned_messages_total{reason="no_key"}'), before.noKey + 1);
  assert.equal(await metricValue(relay.adminUrl, 'vmta_dkim_unsigned_messages_total{reason="no_from_domain"}'), before.noFrom + 1);
});
