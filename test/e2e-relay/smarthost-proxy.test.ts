// Smarthost relaying through a VirtualMTA's SOCKS5 egress proxy (docs/smarthost.md): relay A's
// VirtualMTA with sourceAddress S and a Dante proxy on S (`same-same`, so it sends from S) routes
// its mail to relay B, a submission server requiring AUTH over TLS. For each TLS mode of the port
// (STARTTLS, implicit TLS), and for a first port that refuses followed by either, the session goes
// through the proxy: B's accounting records the client address S, the login is accepted, the
// message reaches B's sink, and A's record names the port passed over. With the proxy down the
// mail is deferred with a reason naming the proxy, and nothing leaves from the pod's own address.
import assert from 'node:assert/strict';
import { copyFile, mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { startBlockedPort, type BlockedPort } from '../fixtures/blocked-ports.ts';
import { baseRelayConfig, freePort, LISTENER_TLS_FILES, loopbackRelayConfig, startRelayProcess, temporaryDirectory, writeListenerFiles, writeRelayConfig, type RelayProcess } from '../fixtures/relay-process.ts';
import { loopbackAddresses, startSinkMx, type SinkMx } from '../fixtures/sink-mx.ts';
import { sendMarkedMessage } from '../fixtures/smtp-clients.ts';
import { danteSkip, missingDante, startDante } from '../fixtures/socks-proxy.ts';
import { createTestCa } from '../fixtures/tls.ts';
import { waitForRelay } from '../fixtures/wait-for-relay.ts';

const USER = 'acme';
const PASSWORD = 'acme-proxied-smarthost-7c2q';
const missing = missingDante();
let relayA: RelayProcess;
let relayB: RelayProcess;
let sink: SinkMx;
let aDir: string;
let bDir: string;
let aPort: number;
let source: string;
const cleanups: (() => Promise<unknown> | void)[] = [];

const records = async (dir: string, recipient: string) =>
  (await readFile(path.join(dir, 'accounting.jsonl'), 'utf8').catch(() => ''))
    .split('\n')
    .filter(Boolean)
    .map((line) => JSON.parse(line) as Record<string, unknown>)
    .filter((record) => record.recipient === recipient);

describe('smarthost sessions through a SOCKS5 egress proxy (Dante)', { skip: danteSkip(missing) }, () => {
  let refused: BlockedPort;
  before(async () => {
    const ca = createTestCa();
    cleanups.push(() => ca.cleanup());
    [source] = loopbackAddresses(1) as [string];
    sink = await startSinkMx({ address: '127.0.0.1' });
    refused = await startBlockedPort('refused');
    cleanups.push(() => Promise.all([sink.close(), refused.close()]));
    const proxyPort = await freePort();
    const dante = await startDante({ addresses: [source], port: proxyPort });
    cleanups.push(() => dante.close());

    const b = await temporaryDirectory('vmta-smarthost-proxy-b-');
    cleanups.push(() => b.remove());
    bDir = b.path;
    await writeListenerFiles(bDir, ca.issue(['localhost']), { [USER]: PASSWORD });
    const [starttlsPort, implicitPort, bAdmin] = [await freePort(), await freePort(), await freePort()];
    const submission = (name: string, port: number, mode: 'starttls' | 'implicit') => ({ name, address: '127.0.0.1', port, relayPolicy: 'submission', tls: { mode, required: true, ...LISTENER_TLS_FILES }, auth: { required: true, mechanisms: ['PLAIN' as const, 'LOGIN' as const] } });
    await writeRelayConfig(bDir, baseRelayConfig({
      pool: { name: 'esp', domainDefaults: [{ match: '*', smtpHost: `127.0.0.1:${sink.port}`, tlsPolicy: 'none', retryAfter: ['1s'] }], virtualMtas: [{ name: 'esp-out', hostname: 'out.esp.test' }] },
      listeners: [submission('alternate', starttlsPort, 'starttls'), submission('submissions', implicitPort, 'implicit')],
      relayPolicies: [{ name: 'submission', users: { secretPath: 'users', defaultAllowedSenderDomains: ['example.com'] } }],
      admin: { address: '127.0.0.1', port: bAdmin },
      delivery: { accounting: { file: 'accounting.jsonl' } },
    }));
    relayB = await startRelayProcess({ configDir: bDir, adminPort: bAdmin });
    cleanups.push(() => relayB.kill('SIGKILL'));

    const a = await temporaryDirectory('vmta-smarthost-proxy-a-');
    cleanups.push(() => a.remove());
    aDir = a.path;
    await copyFile(ca.caFile, path.join(aDir, 'ca.crt'));
    await mkdir(path.join(aDir, 'login'));
    await writeFile(path.join(aDir, 'login', 'username'), `${USER}\n`);
    await writeFile(path.join(aDir, 'login', 'password'), `${PASSWORD}\n`);
    const route = (ports: { port: number; tls: 'starttls' | 'implicit' }[]) => ({ hosts: ['127.0.0.1'], ports, tlsPolicy: 'verify' as const, caFile: 'ca.crt', auth: { secretPath: 'login', mechanism: 'auto' as const }, connectTimeout: '15s', reprobeAfter: '1h' });
    const port = { starttls: { port: starttlsPort, tls: 'starttls' as const }, implicit: { port: implicitPort, tls: 'implicit' as const }, refused: { port: refused.port, tls: 'starttls' as const } };
    aPort = await freePort();
    const aAdmin = await freePort();
    const deadProxy = await freePort();
    await writeRelayConfig(aDir, loopbackRelayConfig(aPort, aAdmin, {
      pool: {
        name: 'pool-a',
        domainDefaults: [
          { match: 'starttls.test', smarthost: route([port.starttls]) },
          { match: 'implicit.test', smarthost: route([port.implicit]) },
          { match: 'refused-starttls.test', smarthost: route([port.refused, port.starttls]) },
          { match: 'refused-implicit.test', smarthost: route([port.refused, port.implicit]) },
          { match: 'down.test', retryAfter: ['1h'], smarthost: route([port.starttls, port.implicit]) },
        ],
        virtualMtas: [
          { name: 'proxied', hostname: 'out.a.test', sourceAddress: source, proxies: [{ server: `${source}:${proxyPort}` }] },
          // Its only proxy is down.
          { name: 'stranded', hostname: 'stranded.a.test', sourceAddress: source, proxies: [{ server: `${source}:${deadProxy}` }] },
        ],
      },
      relayPolicies: [{ name: 'loopback', allowedCidrs: ['127.0.0.0/8'], routing: { rules: [{ recipientDomain: 'down.test', virtualMta: 'stranded' }], defaultVirtualMta: 'proxied' } }],
      delivery: { accounting: { file: 'accounting.jsonl' }, proxyRecheckAfter: '1h' },
    }));
    relayA = await startRelayProcess({ configDir: aDir, adminPort: aAdmin });
    cleanups.push(() => relayA.kill('SIGKILL'));
  });

  after(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup();
  });

  for (const domain of ['starttls.test', 'implicit.test', 'refused-starttls.test', 'refused-implicit.test']) {
    test(`${domain}: the smarthost session leaves through the proxy from the VirtualMTA's address, logs in over TLS and delivers`, async () => {
      const recipient = `user@${domain}`;
      await sendMarkedMessage(aPort, 'app@example.com', recipient, `proxied-${domain}`);
      const atB = await waitForRelay(`${domain} accepted by B`, async () => (await records(bDir, recipient)).find((record) => record.type === 'r'), [relayA, relayB]);
      assert.equal(atB.clientAddress, source, `B saw the proxy's sending address, not the relay's: ${JSON.stringify(atB)}`);
      assert.equal(atB.user, USER, 'B accepted the login');
      await waitForRelay(`${domain} at B's sink`, () => sink.messages.find((message) => message.to.includes(recipient)), [relayB]);
      const atA = await waitForRelay(`${domain} delivered in A's accounting`, async () => (await records(aDir, recipient)).find((record) => record.type === 'd'), [relayA]);
      assert.equal(atA.sourceAddress, source);
      assert.match(String(atA.tlsVersion), /^TLSv1\.[23]$/);
      const fallbacks = (atA.portFallbacks as { port: number; reason: string }[] | undefined) ?? [];
      assert.deepEqual(fallbacks.map((fallback) => [fallback.port, fallback.reason]), domain.startsWith('refused') ? [[refused.port, 'refused']] : [], 'the port passed over, through the proxy');
    });
  }

  test('with its only proxy down the mail is deferred with the proxy named, and never sent from the relay\'s own address', async () => {
    const recipient = 'user@down.test';
    await sendMarkedMessage(aPort, 'app@example.com', recipient, 'stranded');
    const deferred = await waitForRelay('down.test deferred', async () => (await records(aDir, recipient)).find((record) => record.type === 't'), [relayA]);
    assert.match(String(deferred.diagnostic), /egress proxy/, `the reason names the proxies: ${deferred.diagnostic}`);
    assert.equal((await records(bDir, recipient)).length, 0, 'B never heard of it');
    const { proxies } = (await (await fetch(`${relayA.adminUrl}/egress-proxies`)).json()) as { proxies: { virtualMta: string; healthy?: boolean }[] };
    assert.deepEqual(proxies.map((proxy) => [proxy.virtualMta, proxy.healthy]), [['proxied', true], ['stranded', false]], 'the smarthost sessions used the proxies and their health shows it');
  });
});
