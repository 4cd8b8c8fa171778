// DANE through the real relay process: MX lookups and DNSSEC answers come from a validating
// resolver (Unbound) over zones signed here (NSD serves them), and sink MX servers on 127.x hold
// the certificates. tlsPolicy dane: DANE-EE with a self-signed certificate and DANE-TA with the
// MX name are delivered; a TLSA mismatch, a DANE-TA name mismatch, a bogus signature and an MX
// without STARTTLS are deferred and never sent in clear; an insecure zone falls back to
// opportunistic TLS. tlsPolicy dane-only defers the insecure zone.
import assert from 'node:assert/strict';
import { createHash, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { dnssecToolsSkip, missingDnssecTools, startDnssecResolver } from '../fixtures/dnssec-resolver.ts';
import { adminGet, freePort, loopbackRelayConfig, metricValue, startRelayProcess, temporaryDirectory, writeRelayConfig, writeTestAdminToken, type RelayProcess } from '../fixtures/relay-process.ts';
import { startSinkGroup, type SinkMx } from '../fixtures/sink-mx.ts';
import { sendMarkedMessage } from '../fixtures/smtp-clients.ts';
import { createTestCa, type TestCertificate } from '../fixtures/tls.ts';

const missing = missingDnssecTools();

function spkiSha256(pem: Buffer): string {
  return createHash('sha256').update(new X509Certificate(pem).publicKey.export({ type: 'spki', format: 'der' })).digest('hex');
}
function certSha256(pem: Buffer): string {
  return createHash('sha256').update(new X509Certificate(pem).raw).digest('hex');
}

describe('DANE through a relay process', { skip: dnssecToolsSkip(missing) }, () => {
  const cleanups: (() => unknown)[] = [];
  let relay: RelayProcess;
  let relayPort: number;
  const sinks: Record<string, SinkMx> = {};

  before(async () => {
    assert.deepEqual(missing, [], 'CI installs nsd, unbound and ldnsutils (scripts/install-dnssec-tools.sh)');
    const ca = createTestCa('dane e2e CA');
    const selfSigned = createTestCa('mx.ee.test');
    cleanups.push(() => ca.cleanup(), () => selfSigned.cleanup());
    const selfSignedCert: TestCertificate = { certFile: selfSigned.caFile, keyFile: path.join(selfSigned.dir, 'ca.key'), cert: selfSigned.ca, key: readFileSync(path.join(selfSigned.dir, 'ca.key')) };
    const withChain = (certificate: TestCertificate): TestCertificate => ({ ...certificate, cert: Buffer.concat([certificate.cert, ca.ca]) });
    const names = ['ee', 'ta', 'taname', 'mismatch', 'bogus', 'notls', 'insecure', 'insecureonly'] as const;
    const group = await startSinkGroup([
      { tls: selfSignedCert },
      { tls: withChain(ca.issue(['mx.ta.test'])) },
      { tls: withChain(ca.issue(['somebody.else.test'])) },
      { tls: ca.issue(['mx.mismatch.test']) },
      { tls: ca.issue(['mx.bogus.test']) },
      {},
      { tls: ca.issue(['mx.insecure.test']) },
      { tls: ca.issue(['mx.insecureonly.test']) },
    ]);
    names.forEach((name, index) => (sinks[name] = group[index]!));
    cleanups.push(() => Promise.all(group.map((sink) => sink.close())));
    const port = group[0]!.port;
    const zone = (name: string, signed: boolean, tlsa?: string, tamper?: (text: string) => string) => ({
      name: `${name}.test`,
      signed,
      records: ['@ IN MX 10 mx', `mx IN A ${sinks[name]!.address}`, ...(tlsa ? [`_${port}._tcp.mx IN TLSA ${tlsa}`] : [])],
      ...(tamper ? { tamper } : {}),
    });
    const resolver = await startDnssecResolver([
      zone('ee', true, `3 1 1 ${spkiSha256(selfSigned.ca)}`),
      zone('ta', true, `2 0 1 ${certSha256(ca.ca)}`),
      zone('taname', true, `2 0 1 ${certSha256(ca.ca)}`),
      zone('mismatch', true, `3 1 1 ${'00'.repeat(32)}`),
      zone('bogus', true, `3 1 1 ${'11'.repeat(32)}`, (text) => text.replace(/(TLSA\s+3 1 1 )11/, '$122')),
      zone('notls', true, `3 1 1 ${'33'.repeat(32)}`),
      zone('insecure', false),
      zone('insecureonly', false),
    ]);
    cleanups.push(() => resolver.close());

    const dir = await temporaryDirectory('vmta-dane-');
    cleanups.push(() => dir.remove());
    relayPort = await freePort();
    const adminPort = await freePort();
    await writeRelayConfig(dir.path, loopbackRelayConfig(relayPort, adminPort, {
      pool: {
        name: 'pool-a',
        domainDefaults: [{ match: '*', tlsPolicy: 'dane', retryAfter: ['10m'] }, { match: 'insecureonly.test', tlsPolicy: 'dane-only' }],
        virtualMtas: [{ name: 'vmta-1', hostname: 'out1.relay.test' }],
      },
      delivery: { resolvers: [resolver.server], dnssecResolvers: [resolver.server], mxPort: port },
      admin: { address: '127.0.0.1', port: adminPort, tokenFile: await writeTestAdminToken(dir.path) },
    }));
    relay = await startRelayProcess({ configDir: dir.path, adminPort });
    cleanups.push(() => relay.kill('SIGKILL'));
    for (const name of names) await send(`user@${name}.test`, name);
  });

  after(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup();
  });

  const send = (to: string, marker: string) => sendMarkedMessage(relayPort, 'app@relay.test', to, marker);

  async function queueError(domain: string): Promise<string> {
    const deadline = Date.now() + 30_000;
    for (;;) {
      const { queues } = await adminGet<{ queues: { domain: string; lastError: string | null }[] }>(relay.adminUrl, '/api/v1/queues');
      const found = queues.find((queue) => queue.domain === domain && queue.lastError);
      if (found?.lastError) return found.lastError;
      if (Date.now() > deadline) throw new Error(`no deferral for ${domain}: ${JSON.stringify(queues)}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }

  async function delivered(name: string): Promise<SinkMx['messages'][number]> {
    const deadline = Date.now() + 30_000;
    for (;;) {
      const message = sinks[name]!.messages.find((candidate) => candidate.body.toString().includes(name));
      if (message) return message;
      if (Date.now() > deadline) throw new Error(`${name}.test was not delivered`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }

  test('DANE-EE with a self-signed certificate and DANE-TA with the MX name are delivered over TLS', async () => {
    assert.equal((await delivered('ee')).secure, true);
    assert.equal((await delivered('ta')).secure, true);
    assert.ok(((await metricValue(relay.adminUrl, 'vmta_dane_sessions_total{result="dane_ee"}')) ?? 0) >= 1);
    assert.ok(((await metricValue(relay.adminUrl, 'vmta_dane_sessions_total{result="dane_ta"}')) ?? 0) >= 1);
  });

  test('a TLSA mismatch, a DANE-TA name mismatch, a bogus signature and a DANE host without STARTTLS are deferred, never sent in clear', async () => {
    assert.match(await queueError('mismatch.test'), /DANE: no TLSA record .* matches/);
    assert.match(await queueError('taname.test'), /DANE: .*names none of mx\.taname\.test/);
    assert.match(await queueError('bogus.test'), /SERVFAIL|DNSSEC/);
    assert.match(await queueError('notls.test'), /STARTTLS|not encrypted|TLS/i);
    for (const name of ['mismatch', 'taname', 'bogus', 'notls']) assert.equal(sinks[name]!.messages.length, 0, `${name}.test got nothing`);
    assert.ok(((await metricValue(relay.adminUrl, 'vmta_dane_lookups_total{result="dnssec_invalid"}')) ?? 0) >= 1);
  });

  test('an insecure zone falls back to opportunistic TLS under dane and is deferred under dane-only', async () => {
    assert.equal((await delivered('insecure')).secure, true, 'opportunistic STARTTLS still used');
    assert.match(await queueError('insecureonly.test'), /dane-only: the MX records of insecureonly\.test are not DNSSEC-validated/);
    assert.equal(sinks.insecureonly!.messages.length, 0);
  });
});
