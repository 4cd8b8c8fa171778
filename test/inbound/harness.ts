// A relay inbound side for tests: a test CA and certificates, a users directory (Kubernetes
// Secret layout with ..data symlinks), three listener kinds on 127.0.0.1 port 0, an in-test
// collector as the MessageAcceptor, and a metrics registry to read back.
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { pino } from 'pino';
import path from 'node:path';
import type { RuntimeConfig, RuntimeConfigInput } from '../../mta/config/schema.ts';
import { validateRuntimeConfig } from '../../mta/config/parse.ts';
import { hashPassword } from '../../mta/inbound/credentials.ts';
import { InboundServer } from '../../mta/inbound/inbound-server.ts';
import type { AcceptedTransaction } from '../../mta/inbound/transaction.ts';
import { createLogger } from '../../mta/observe/log.ts';
import { RelayMetrics } from '../../mta/observe/metrics.ts';
import { RawSmtpClient, type SmtpReply } from '../fixtures/smtp-clients.ts';
import { createTestCa, type TestCa, type TestCertificate } from '../fixtures/tls.ts';

export interface Collected {
  transaction: AcceptedTransaction;
  message: Buffer;
  queueId: string;
}

export const USERS = {
  alice: { password: 'alice-secret', domains: ['alice.example'] },
  /** Stored as a {SCRYPT} hash. */
  bob: { password: 'bob-secret', domains: ['bob.example', '*.bob.example'] },
} as const;

export interface Harness {
  server: InboundServer;
  config: RuntimeConfig;
  ca: TestCa;
  cert: TestCertificate;
  dir: string;
  usersDir: string;
  collected: Collected[];
  metrics: RelayMetrics;
  /** When set, the acceptor rejects (to test 451). */
  failAccept: boolean;
  /** How long the acceptor takes (a slow spool). */
  acceptDelayMs: number;
  port(listener: string): number;
  metric(name: string): Promise<string>;
  buildConfig(mutate?: (input: RuntimeConfigInput) => void): RuntimeConfig;
  close(): Promise<void>;
}

export interface HarnessOptions {
  /** Users with clear-text secrets only (so CRAM-MD5 can be offered). */
  clearUsersOnly?: boolean;
  mutate?: (input: RuntimeConfigInput) => void;
  /** Collect the relay's pino JSON log lines (level info) here instead of discarding them. */
  logLines?: string[];
}

export async function startHarness(options: HarnessOptions = {}): Promise<Harness> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'vmta-inbound-'));
  const ca = createTestCa();
  const cert = ca.issue(['localhost', 'mx.test']);
  const usersDir = path.join(dir, 'users');
  writeUsersDir(usersDir, { alice: USERS.alice.password, bob: options.clearUsersOnly ? USERS.bob.password : hashPassword(USERS.bob.password, { N: 1024 }) });
  const collected: Collected[] = [];
  const metrics = new RelayMetrics({ processMetrics: false });
  const buildConfig = (mutate?: (input: RuntimeConfigInput) => void): RuntimeConfig => {
    const input = baseConfig(dir, usersDir, cert);
    options.mutate?.(input);
    mutate?.(input);
    return withEphemeralPorts(validateRuntimeConfig(input));
  };
  const config = buildConfig();
  let sequence = 0;
  const harness: Harness = {
    server: undefined as unknown as InboundServer,
    config,
    ca,
    cert,
    dir,
    usersDir,
    collected,
    metrics,
    failAccept: false,
    acceptDelayMs: 0,
    port(listener) {
      const bound = harness.server.boundAddresses().find((entry) => entry.listener === listener);
      if (!bound) throw new Error(`no listener ${listener}`);
      return bound.port;
    },
    async metric(name) {
      return (await metrics.registry.getSingleMetricAsString(name)) ?? '';
    },
    buildConfig,
    async close() {
      await harness.server.close();
      ca.cleanup();
      rmSync(dir, { recursive: true, force: true });
    },
  };
  harness.server = await InboundServer.start(config, {
    metrics,
    logger: options.logLines
      ? pino({ level: 'info' }, { write: (line: string) => void options.logLines?.push(line) })
      : createLogger('inbound-test', process.env.LOG_LEVEL ?? 'silent'),
    accept: async (transaction, message) => {
      if (harness.acceptDelayMs > 0) await new Promise((resolve) => setTimeout(resolve, harness.acceptDelayMs));
      if (harness.failAccept) throw new Error('spool unavailable');
      const queueId = `Q${String(++sequence).padStart(6, '0')}`;
      collected.push({ transaction, message, queueId });
      return { queueId };
    },
  });
  return harness;
}

/** A Secret-like directory: files live in a timestamped dir, `..data` points at it, users are symlinks. */
export function writeUsersDir(usersDir: string, users: Record<string, string>): void {
  rmSync(usersDir, { recursive: true, force: true });
  const stamp = `..${Date.now()}_${Math.random().toString(36).slice(2)}`;
  mkdirSync(path.join(usersDir, stamp), { recursive: true });
  for (const [user, secret] of Object.entries(users)) writeFileSync(path.join(usersDir, stamp, user), `${secret}\n`);
  symlinkSync(stamp, path.join(usersDir, '..data'));
  for (const user of Object.keys(users)) symlinkSync(path.join('..data', user), path.join(usersDir, user));
  writeFileSync(path.join(usersDir, '.hidden'), 'not-a-user');
}

function baseConfig(dir: string, usersDir: string, cert: TestCertificate): RuntimeConfigInput {
  const tlsFiles = { certFile: cert.certFile, keyFile: cert.keyFile };
  return {
    apiVersion: 'vmta.dev/relay-config/v1',
    hostname: 'relay.test',
    pool: { name: 'pool', virtualMtas: [{ name: 'vmta-1', hostname: 'out.relay.test' }] },
    listeners: [
      // Port 25 style: STARTTLS optional, no auth required; relay only for listed domains/addresses/CIDRs.
      { name: 'relay', address: '127.0.0.1', port: 1, relayPolicy: 'inbound', tls: { mode: 'starttls', ...tlsFiles }, auth: { mechanisms: ['PLAIN', 'LOGIN'] } },
      // Port 587 style: STARTTLS required, AUTH required.
      { name: 'submission', address: '127.0.0.1', port: 2, relayPolicy: 'submit', tls: { mode: 'starttls', required: true, ...tlsFiles }, auth: { required: true, mechanisms: ['PLAIN', 'LOGIN', 'CRAM-MD5'] } },
      // Port 465 style: implicit TLS, AUTH required.
      { name: 'submissions', address: '127.0.0.1', port: 3, relayPolicy: 'submit', tls: { mode: 'implicit', required: true, ...tlsFiles }, auth: { required: true, mechanisms: ['PLAIN', 'LOGIN', 'CRAM-MD5'] } },
    ],
    relayPolicies: [
      {
        name: 'inbound',
        relayDomains: ['allowed.example', 'xn--bcher-kva.example'],
        relayAddresses: ['bounces@return.example', '/fbl-[0-9]+@feedback\\.example/'],
        allowedCidrs: ['192.0.2.0/24'],
        users: { secretPath: usersDir, allowedSenderDomains: { alice: [...USERS.alice.domains], bob: [...USERS.bob.domains] } },
      },
      {
        name: 'submit',
        users: { secretPath: usersDir, allowedSenderDomains: { alice: [...USERS.alice.domains], bob: [...USERS.bob.domains] } },
      },
    ],
    spool: { path: path.join(dir, 'spool') },
  };
}

/** The schema wants ports 1..65535; tests validate with placeholders, then bind port 0 (ephemeral). */
export function withEphemeralPorts(config: RuntimeConfig): RuntimeConfig {
  return { ...config, listeners: config.listeners.map((listener) => ({ ...listener, port: 0 })) };
}

export interface SessionOptions {
  /** STARTTLS on starttls listeners (implicit TLS listeners are always encrypted). */
  starttls?: boolean;
  auth?: { user: string; password: string };
  localAddress?: string;
}

/** Connects, reads the greeting, says EHLO (again after STARTTLS) and authenticates with AUTH PLAIN. */
export async function openSession(harness: Harness, listener: string, options: SessionOptions = {}): Promise<RawSmtpClient> {
  const listenerConfig = harness.config.listeners.find((entry) => entry.name === listener);
  const implicit = listenerConfig?.tls.mode === 'implicit';
  const client = await RawSmtpClient.connect(harness.port(listener), {
    ...(implicit ? { implicitTls: { ca: harness.ca.ca } } : {}),
    ...(options.localAddress ? { localAddress: options.localAddress } : {}),
  });
  expectCode(await client.read(), 220);
  expectCode(await client.command('EHLO client.test'), 250);
  if (options.starttls && !implicit) {
    expectCode(await client.command('STARTTLS'), 220);
    await client.startTls(harness.ca.ca);
    expectCode(await client.command('EHLO client.test'), 250);
  }
  if (options.auth) {
    const token = Buffer.from(`\0${options.auth.user}\0${options.auth.password}`).toString('base64');
    expectCode(await client.command(`AUTH PLAIN ${token}`), 235);
  }
  return client;
}

export function expectCode(reply: SmtpReply, code: number): SmtpReply {
  if (reply.code !== code) throw new Error(`expected ${code}, got: ${reply.text}`);
  return reply;
}

/** The value of one series (`name{labels}`, labels as the registry writes them) in a metric's text; 0 when absent. */
export function seriesValue(text: string, series: string): number {
  const line = text.split('\n').find((entry) => entry.startsWith(`${series} `));
  return line ? Number(line.slice(series.length + 1)) : 0;
}
