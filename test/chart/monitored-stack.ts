// What the dashboard test scrapes: a real relay process (`vmta mta`) that delivers to sink MX
// servers on loopback (one accepting over STARTTLS, one answering 4xx, one answering 5xx) and
// resolves a missing domain through a test DNS server, with traffic kept flowing between
// scrapes; and a real VmtaOperator reconciling examples/ against the fake API server, which
// fails for a moment so reconcile errors are counted.
import { setTimeout as sleep } from 'node:timers/promises';
import type { VmtaOperator } from '../../operator/controller/operator.ts';
import { startDnsServer, type TestDnsServer } from '../fixtures/dns-server.ts';
import type { FakeKubeApi, JsonObject } from '../fixtures/fake-kube-api.ts';
import { baseRelayConfig, freePort, startRelayProcess, temporaryDirectory, LISTENER_TLS_FILES, writeListenerFiles, writeRelayConfig, type RelayProcess } from '../fixtures/relay-process.ts';
import { startSinkMx, type SinkMx } from '../fixtures/sink-mx.ts';
import { RawSmtpClient, smtplibSend } from '../fixtures/smtp-clients.ts';
import { createTestCa, type TestCa } from '../fixtures/tls.ts';
import { loadExamples, NAMESPACE, startOperator } from '../controller/harness.ts';
import { startFakeApi } from '../kube/helpers.ts';

/** The recipient domains of the test traffic: what each one makes the relay do. */
export const DOMAINS = { delivered: 'accept.test', deferred: 'defer.test', bounced: 'bounce.test', noSuchDomain: 'nxdomain.test' } as const;

export interface RelayUnderTraffic {
  relay: RelayProcess;
  /** Submissions sent so far (each to one recipient of every domain). */
  readonly submissions: number;
  /** Stops the traffic and the relay, sinks and DNS server. */
  stop(): Promise<void>;
}

/** Starts the relay with its sinks and DNS server and keeps submitting mail every `everyMs` until stopped. */
export async function startRelayUnderTraffic(everyMs = 1000): Promise<RelayUnderTraffic> {
  const ca: TestCa = createTestCa();
  const directory = await temporaryDirectory('vmta-dashboards-relay-');
  const sinks: SinkMx[] = [];
  let dns: TestDnsServer | undefined;
  let relay: RelayProcess | undefined;
  const ports = { submission: 0, relay: 0 };
  const cleanup = async () => {
    await relay?.kill('SIGKILL');
    for (const sink of sinks) await sink.close();
    await dns?.close();
    await directory.remove();
    ca.cleanup();
  };
  try {
    const mxCertificate = ca.issue(['mx.accept.test']);
    sinks.push(await startSinkMx({ address: '127.0.0.1', tls: { key: mxCertificate.key, cert: mxCertificate.cert } }));
    sinks.push(await startSinkMx({ address: '127.0.0.1', mailReply: '421 4.7.0 Too many messages, try later' }));
    sinks.push(await startSinkMx({ address: '127.0.0.1', rcptReplies: { [`user@${DOMAINS.bounced}`]: '550 5.1.1 No such user' } }));
    const [accepting, deferring, bouncing] = sinks as [SinkMx, SinkMx, SinkMx];
    dns = await startDnsServer({ [DOMAINS.noSuchDomain]: { rcode: 'NXDOMAIN' } });

    const dir = directory.path;
    const listenerCertificate = ca.issue(['smtp.relay.test']);
    await writeListenerFiles(dir, listenerCertificate, { alice: 'alice-password' });
    ports.submission = await freePort();
    ports.relay = await freePort();
    const adminPort = await freePort();
    const quickRetry = { retryAfter: ['1s'], bounceAfter: '1h' };
    await writeRelayConfig(
      dir,
      baseRelayConfig({
        listeners: [
          // The traffic fails AUTH on purpose every round: keep this client from being rate limited.
          { name: 'submission', address: '127.0.0.1', port: ports.submission, relayPolicy: 'submission', tls: { mode: 'starttls', required: true, ...LISTENER_TLS_FILES }, auth: { required: true, mechanisms: ['PLAIN', 'LOGIN'], maxFailures: 1000, failureWindow: '1s' } },
          { name: 'relay', address: '127.0.0.1', port: ports.relay, relayPolicy: 'inbound', auth: { mechanisms: [] } },
        ],
        relayPolicies: [
          { name: 'submission', users: { secretPath: 'users', defaultAllowedSenderDomains: ['example.com'] } },
          { name: 'inbound', relayDomains: [DOMAINS.delivered] },
        ],
        pool: {
          name: 'pool-a',
          domainDefaults: [
            { match: DOMAINS.delivered, smtpHost: `127.0.0.1:${accepting.port}`, tlsPolicy: 'opportunistic' },
            { match: DOMAINS.deferred, smtpHost: `127.0.0.1:${deferring.port}`, ...quickRetry, backoff: { replyPatterns: ['^421'], retryAfter: '1s', returnAfter: '1h' } },
            { match: DOMAINS.bounced, smtpHost: `127.0.0.1:${bouncing.port}` },
            { match: DOMAINS.noSuchDomain, ...quickRetry },
            // Bounce notifications go back to the sender's domain: park them.
            { match: 'example.com', smtpHost: '127.0.0.1:1', ...quickRetry },
          ],
          virtualMtas: [
            { name: 'vmta-1', hostname: 'out1.relay.test' },
            { name: 'vmta-2', hostname: 'out2.relay.test' },
          ],
        },
        admin: { address: '127.0.0.1', port: adminPort },
        delivery: { resolvers: [dns.server], trackedDomains: [DOMAINS.delivered, DOMAINS.deferred, DOMAINS.bounced] },
      }),
    );
    relay = await startRelayProcess({ configDir: dir, adminPort });
  } catch (error) {
    await cleanup();
    throw error;
  }

  const started = relay;
  let submissions = 0;
  let running = true;
  const submit = async () => {
    // Authenticated submission over STARTTLS to every kind of destination.
    const result = await smtplibSend({
      host: '127.0.0.1', port: ports.submission, mode: 'starttls', caFile: ca.caFile, user: 'alice', password: 'alice-password',
      from: 'app@example.com', to: Object.values(DOMAINS).map((domain) => `user@${domain}`), message: `Subject: traffic ${submissions}\r\n\r\nhello\r\n`,
    });
    if (!result.stdout.startsWith('OK 250')) throw new Error(`submission refused: ${result.stdout}${result.stderr}\nrelay log:\n${started.logs.slice(-10).map((record) => JSON.stringify(record)).join('\n')}`);
    submissions += 1;
    // A wrong password (AUTH failure) and an unauthenticated relay attempt (relay_denied).
    await smtplibSend({ host: '127.0.0.1', port: ports.submission, mode: 'starttls', caFile: ca.caFile, user: 'alice', password: 'wrong', from: 'app@example.com', to: [`user@${DOMAINS.delivered}`], message: 'Subject: x\r\n\r\nx\r\n' });
    const client = await RawSmtpClient.connect(ports.relay);
    try {
      await client.read();
      await client.command('EHLO client.test');
      await client.command('MAIL FROM:<someone@remote.test>');
      await client.command(`RCPT TO:<user@${DOMAINS.deferred}>`);
      await client.command('QUIT');
    } finally {
      client.close();
    }
  };
  await submit();
  const loop = (async () => {
    while (running) {
      await sleep(everyMs);
      if (running) await submit();
    }
  })();
  let loopError: unknown;
  loop.catch((error: unknown) => (loopError = error));
  return {
    relay: started,
    get submissions() {
      if (loopError) throw loopError;
      return submissions;
    },
    async stop() {
      running = false;
      await loop.catch(() => undefined);
      await cleanup();
    },
  };
}

export interface OperatorUnderTest {
  operator: VmtaOperator;
  metricsUrl: string;
  stop(): Promise<void>;
}

/** A VmtaOperator with its metrics endpoint, reconciling examples/ against the fake API, which fails for `failForMs` just as a pool changes. */
export async function startOperatorWithErrors(failForMs = 3000): Promise<OperatorUnderTest> {
  const { api, kubeconfig }: { api: FakeKubeApi; kubeconfig: string } = await startFakeApi({ bookmarkIntervalMs: 500 });
  await loadExamples(api);
  const operator = startOperator(api, kubeconfig, { healthPort: 0, healthHost: '127.0.0.1', resyncPeriodMs: 1000 });
  await operator.start();
  await sleep(2000);
  // A spec change reaches the operator over its open watch, and its apply meets a failing API.
  const pool = api.get('vmta.dev/v1alpha1', 'VirtualMtaPool', NAMESPACE, 'outbound');
  if (!pool) throw new Error('examples/ has no VirtualMtaPool "outbound"');
  api.put({ ...pool, spec: { ...(pool.spec as JsonObject), replicas: 3 } });
  api.failAllWith = 500;
  await sleep(failForMs);
  api.failAllWith = undefined;
  return {
    operator,
    metricsUrl: `http://127.0.0.1:${operator.healthPort}/metrics`,
    async stop() {
      await operator.stop();
      await api.close();
    },
  };
}
