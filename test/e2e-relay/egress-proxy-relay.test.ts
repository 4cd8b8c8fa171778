// Source addresses through SOCKS5 egress proxies, end to end: a relay process whose VirtualMTAs
// send through a real Dante server on loopback (`external.rotation: same-same`, so each
// VirtualMTA reaches it at its own address and leaves from it), a sink MX offering STARTTLS that
// records each session's peer address. Covers per-VirtualMTA source addresses, failover past a
// dead proxy (remembered: the next message does not try it again), every proxy down (deferred with
// a reason naming them), a proxy that refuses to send from the address, a proxy that sends from
// another address than the VirtualMTA's (nothing sent), STARTTLS required over the proxied
// socket, and the health in GET /egress-proxies and the vmta_egress_proxy_* metrics.
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { createTestCa, loopbackAddresses, startSinkMx, type SinkMx, type TestCa } from '../fixtures/sink-mx.ts';
import { RawSmtpClient } from '../fixtures/smtp-clients.ts';
import { danteSkip, missingDante, startDante, type DanteProxy } from '../fixtures/socks-proxy.ts';
import { freePort, loopbackRelayConfig, startRelayProcess, temporaryDirectory, writeRelayConfig, type RelayProcess } from '../fixtures/relay-process.ts';
import { waitForRelay } from '../fixtures/wait-for-relay.ts';
import { egressProxyStatus, httpEgressProxyReader } from '../../operator/controller/egress-proxy-status.ts';
import type { VirtualMtaPool } from '../../operator/api/virtual-mta-pool.ts';
import type { KubeObject } from '../../operator/kube/types.ts';

const missing = missingDante();

interface World {
  dir: string;
  relay: RelayProcess;
  sink: SinkMx;
  /** The relay's listener. */
  port: number;
  proxyPort: number;
  deadPorts: number[];
  /** Source address per VirtualMTA name. */
  source: Record<string, string>;
}

let world: World;
const cleanups: (() => Promise<void> | void)[] = [];

describe('egress through SOCKS5 proxies (Dante)', { skip: danteSkip(missing) }, () => {
  before(async () => {
    const ca: TestCa = createTestCa();
    cleanups.push(() => ca.close());
    const [sinkAddress, a, b, refused, down, wrong] = loopbackAddresses(6) as [string, string, string, string, string, string];
    const sink = await startSinkMx({ address: sinkAddress, tls: ca.issue(['mx.proxy.test']) });
    cleanups.push(() => sink.close());
    const proxyPort = await freePort();
    // Nothing listens on these: proxies that are down.
    const deadPorts = [await freePort(), await freePort()];
    const dante: DanteProxy = await startDante({ addresses: [a, b], refuse: [refused], port: proxyPort });
    cleanups.push(() => dante.close());
    const directory = await temporaryDirectory('vmta-egress-proxy-');
    cleanups.push(() => directory.remove());
    const port = await freePort();
    const adminPort = await freePort();
    const proxy = (address: string, proxyPortOf: number) => ({ server: `${address}:${proxyPortOf}` });
    await writeRelayConfig(directory.path, loopbackRelayConfig(port, adminPort, {
      pool: {
        name: 'pool-a',
        domainDefaults: [{ match: '*', smtpHost: `${sink.address}:${sink.port}`, tlsPolicy: 'required', retryAfter: ['1h'] }],
        virtualMtas: [
          { name: 'vmta-a', hostname: 'a.proxy.test', sourceAddress: a, proxies: [proxy(a, proxyPort)] },
          { name: 'vmta-b', hostname: 'b.proxy.test', sourceAddress: b, proxies: [proxy(b, deadPorts[0]!), proxy(b, proxyPort)] },
          { name: 'vmta-refused', hostname: 'refused.proxy.test', sourceAddress: refused, proxies: [proxy(refused, proxyPort)] },
          { name: 'vmta-down', hostname: 'down.proxy.test', sourceAddress: down, proxies: [proxy(down, deadPorts[0]!), proxy(down, deadPorts[1]!)] },
          // Reaches the proxy at a's address, so the proxy sends from a: never from the wrong address.
          { name: 'vmta-wrong', hostname: 'wrong.proxy.test', sourceAddress: wrong, proxies: [proxy(a, proxyPort)] },
        ],
      },
      relayPolicies: [{ name: 'loopback', allowedCidrs: ['127.0.0.0/8'], routing: { honorVirtualMtaHeader: true } }],
      delivery: { accounting: { file: 'accounting.jsonl' }, proxyRecheckAfter: '1h' },
    }));
    const relay = await startRelayProcess({ configDir: directory.path, adminPort });
    cleanups.push(async () => {
      await relay.kill('SIGKILL');
    });
    world = { dir: directory.path, relay, sink, port, proxyPort, deadPorts, source: { 'vmta-a': a, 'vmta-b': b, 'vmta-refused': refused, 'vmta-down': down, 'vmta-wrong': wrong } };
  });

  after(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup();
  });

  async function send(virtualMta: string, marker: string): Promise<void> {
    const client = await RawSmtpClient.connect(world.port);
    try {
      await client.read();
      for (const command of ['EHLO client.test', 'MAIL FROM:<app@example.com>', `RCPT TO:<${marker}@example.net>`]) assert.equal((await client.command(command)).code, 250, command);
      assert.equal((await client.command('DATA')).code, 354);
      assert.equal((await client.command(`X-Virtual-MTA: ${virtualMta}\r\nSubject: ${marker}\r\n\r\n${marker}\r\n.`)).code, 250);
    } finally {
      client.close();
    }
  }

  async function accounting(marker: string): Promise<Record<string, string>[]> {
    const text = await readFile(path.join(world.dir, 'accounting.jsonl'), 'utf8').catch(() => '');
    return text.split('\n').filter(Boolean).map((line) => JSON.parse(line) as Record<string, string>).filter((line) => line.recipient === `${marker}@example.net`);
  }

  async function proxyStates(): Promise<{ virtualMta: string; proxy: string; healthy?: boolean; lastError?: string; consecutiveFailures: number }[]> {
    const response = await fetch(`${world.relay.adminUrl}/egress-proxies`);
    assert.equal(response.status, 200);
    return ((await response.json()) as { proxies: [] }).proxies;
  }

  async function metric(name: string, virtualMta: string, proxy: string): Promise<number | undefined> {
    const text = await (await fetch(`${world.relay.adminUrl}/metrics`)).text();
    const line = text.split('\n').find((entry) => entry.startsWith(`${name}{`) && entry.includes(`virtual_mta="${virtualMta}"`) && entry.includes(`proxy="${proxy}"`));
    return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(' ') + 1));
  }

  const delivered = (marker: string) => waitForRelay(`${marker} at the sink`, () => world.sink.messages.find((message) => message.body.includes(marker)), [world.relay]);
  const deferral = (marker: string) => waitForRelay(`${marker} deferred`, async () => (await accounting(marker)).find((line) => line.result === 'deferred'), [world.relay]) as Promise<{ diagnostic: string }>;

  test('each VirtualMTA leaves from its own address through the proxy, over STARTTLS', async () => {
    for (const vmta of ['vmta-a', 'vmta-b']) {
      const marker = `own-${vmta}-${Date.now()}`;
      await send(vmta, marker);
      const received = await delivered(marker);
      assert.equal(received.remoteAddress, world.source[vmta], `${vmta} must reach the MX from its sourceAddress`);
      assert.equal(received.secure, true, 'tlsPolicy required: STARTTLS over the proxied socket');
      assert.equal(received.ehloName, `${vmta.slice(5)}.proxy.test`);
      const line = await waitForRelay(`${marker} delivered in the accounting log`, async () => (await accounting(marker)).find((entry) => entry.result === 'delivered'), [world.relay]);
      assert.equal(line.sourceAddress, world.source[vmta]);
      assert.match(line.tlsVersion ?? '', /^TLSv1\.[23]$/);
    }
  });

  test('a dead first proxy fails over to the next, and is passed over afterwards', async () => {
    const dead = `${world.source['vmta-b']}:${world.deadPorts[0]}`;
    const live = `${world.source['vmta-b']}:${world.proxyPort}`;
    assert.equal(await metric('vmta_egress_proxy_connect_failures_total', 'vmta-b', dead), 1, 'the first message tried the dead proxy once');
    const marker = `again-${Date.now()}`;
    await send('vmta-b', marker);
    assert.equal((await delivered(marker)).remoteAddress, world.source['vmta-b']);
    assert.equal(await metric('vmta_egress_proxy_connect_failures_total', 'vmta-b', dead), 1, 'a proxy that failed is not tried again before proxyRecheckAfter');
    assert.equal(await metric('vmta_egress_proxy_up', 'vmta-b', dead), 0);
    assert.equal(await metric('vmta_egress_proxy_up', 'vmta-b', live), 1);
    const states = (await proxyStates()).filter((state) => state.virtualMta === 'vmta-b');
    assert.deepEqual(states.map((state) => [state.proxy, state.healthy]), [[dead, false], [live, true]]);
    assert.match(states[0]!.lastError ?? '', /ECONNREFUSED/);
  });

  test('every proxy down: deferred with a reason naming each proxy, nothing sent', async () => {
    const marker = `down-${Date.now()}`;
    const before = world.sink.connections;
    await send('vmta-down', marker);
    const line = await deferral(marker);
    for (const port of world.deadPorts) assert.ok(line.diagnostic.includes(`${world.source['vmta-down']}:${port}`), `the reason names proxy port ${port}: ${line.diagnostic}`);
    assert.match(line.diagnostic, /ECONNREFUSED/);
    assert.equal(world.sink.connections, before);
    const states = (await proxyStates()).filter((state) => state.virtualMta === 'vmta-down');
    assert.equal(states.length, 2);
    assert.ok(states.every((state) => state.healthy === false && state.consecutiveFailures === 1));
  });

  test('a proxy that refuses to send from the address defers the mail and is reported unhealthy', async () => {
    const marker = `refused-${Date.now()}`;
    await send('vmta-refused', marker);
    const line = await deferral(marker);
    const server = `${world.source['vmta-refused']}:${world.proxyPort}`;
    assert.ok(line.diagnostic.includes(server), line.diagnostic);
    assert.match(line.diagnostic, /rejected connection - NetworkUnreachable/);
    const [state] = (await proxyStates()).filter((entry) => entry.virtualMta === 'vmta-refused');
    assert.equal(state?.healthy, false);
    assert.equal(await metric('vmta_egress_proxy_up', 'vmta-refused', server), 0);
  });

  test('a proxy that sends from another address than the VirtualMTA\'s is closed before any SMTP', async () => {
    const marker = `wrong-${Date.now()}`;
    const sessions = world.sink.sessions.length;
    await send('vmta-wrong', marker);
    const line = await deferral(marker);
    assert.match(line.diagnostic, new RegExp(`sent from ${world.source['vmta-a']!.replaceAll('.', '\\.')}, not the VirtualMTA's sourceAddress ${world.source['vmta-wrong']!.replaceAll('.', '\\.')}`));
    assert.equal(world.sink.sessions.length, sessions, 'no SMTP session reached the sink');
    assert.ok(!world.sink.messages.some((message) => message.body.includes(marker)));
  });

  test('the operator reads the health from the pod and puts it per VirtualMTA and proxy in the pool status', async () => {
    const url = new URL(world.relay.adminUrl);
    const pod = { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'outbound-0' }, status: { podIP: url.hostname } } as KubeObject;
    // A second pod that has not tried any proxy: it neither hides a failure nor claims health.
    const idle = { ...pod, metadata: { name: 'outbound-1' }, status: { podIP: '127.0.0.1' } } as KubeObject;
    const reader = httpEgressProxyReader({ port: Number(url.port) });
    const readers = async (which: KubeObject) => (which === idle ? [] : reader(which));
    const b = world.source['vmta-b']!;
    const pool = { spec: { virtualMtas: [
      { name: 'vmta-a', proxies: [{ server: `${world.source['vmta-a']}:${world.proxyPort}` }] },
      { name: 'vmta-b', proxies: [{ server: `${b}:${world.deadPorts[0]}` }, { server: `${b}:${world.proxyPort}` }] },
      { name: 'vmta-plain' },
    ] } } as unknown as VirtualMtaPool;
    const status = await egressProxyStatus(pool, [pod, idle], readers);
    assert.deepEqual([...status.keys()], ['vmta-a', 'vmta-b'], 'only VirtualMTAs with proxies get proxy status');
    assert.deepEqual(status.get('vmta-a'), [{ server: `${world.source['vmta-a']}:${world.proxyPort}`, healthy: true }]);
    const [dead, live] = status.get('vmta-b')!;
    assert.equal(dead?.healthy, false);
    assert.equal(dead?.pod, 'outbound-0');
    assert.match(dead?.lastError ?? '', /ECONNREFUSED/);
    assert.deepEqual(live, { server: `${b}:${world.proxyPort}`, healthy: true });
  });
});
