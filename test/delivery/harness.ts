// Shared set-up for delivery engine tests: a real DNS server, a runtime config built through
// the real schema, the real FileSpool in a temp directory, and the engine under test.
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { RuntimeConfig, type RuntimeConfigInput } from '../../mta/config/schema.ts';
import type { Clock } from '../../mta/delivery/clock.ts';
import { DeliveryEngine } from '../../mta/delivery/delivery-engine.ts';
import type { MessageState } from '../../mta/delivery/queue-view.ts';
import { MxResolver } from '../../mta/delivery/mx-resolver.ts';
import { RelayMetrics } from '../../mta/observe/metrics.ts';
import type { TlsSessionRecorder } from '../../mta/reporting/tls-rpt-sessions.ts';
import type { RecipientState, SpooledMessage } from '../../mta/spool/types.ts';
import { startDnsServer, type DnsZoneEntry, type TestDnsServer } from '../fixtures/dns-server.ts';
import { RecordingSpool } from './recording-spool.ts';

type PoolInput = RuntimeConfigInput['pool'];

export interface Harness {
  dns: TestDnsServer;
  spool: RecordingSpool;
  metrics: RelayMetrics;
  engine: DeliveryEngine;
  config: RuntimeConfig;
  accountingFile: string;
  /** Attempts recorded for a message at one destination that the engine reported (onMessageAttempted), so far. */
  messagesAttempted(): number;
  submit(options: { from?: string; to: string[]; subject?: string; virtualMta?: string; body?: string; eightBitMime?: boolean; smtpUtf8?: boolean }): Promise<SpooledMessage>;
  accountingLines(): Promise<Record<string, unknown>[]>;
  /** A message's recipient state as read back from the spool on disk; undefined once removed. */
  durableRecipients(id: string): Promise<RecipientState[] | undefined>;
  /** A message's recipients as an engine restarted on this spool and state folder holds them (everything paused: it tries nothing). */
  recoveredRecipients(id: string): Promise<MessageState['recipients'] | undefined>;
  close(): Promise<void>;
}

export function buildConfig(options: { pool: PoolInput; mxPort: number; resolvers: string[]; accountingFile?: string; delivery?: Partial<RuntimeConfigInput['delivery']> }): RuntimeConfig {
  return RuntimeConfig.parse({
    apiVersion: 'vmta.dev/relay-config/v1',
    hostname: 'relay.sender.test',
    pool: options.pool,
    listeners: [],
    relayPolicies: [],
    spool: { path: '/nonexistent' },
    delivery: {
      resolvers: options.resolvers,
      mxPort: options.mxPort,
      accounting: options.accountingFile ? { file: options.accountingFile } : {},
      ...options.delivery,
    },
  });
}

export async function startHarness(options: {
  zone: Record<string, DnsZoneEntry>;
  pool: PoolInput;
  mxPort: number;
  clock?: Clock;
  trustedCa?: Buffer;
  mtaStsFetch?: { connectAddress?: string; port?: number; ca?: Buffer };
  delivery?: Partial<RuntimeConfigInput['delivery']>;
  tlsSessions?: TlsSessionRecorder;
}): Promise<Harness> {
  const dns = await startDnsServer(options.zone);
  const dir = mkdtempSync(path.join(os.tmpdir(), 'vmta-delivery-'));
  const accountingFile = path.join(dir, 'acct.jsonl');
  const config = buildConfig({ pool: options.pool, mxPort: options.mxPort, resolvers: [dns.server], accountingFile, ...(options.delivery ? { delivery: options.delivery } : {}) });
  const spool = await RecordingSpool.open(path.join(dir, 'spool'));
  const metrics = new RelayMetrics({ processMetrics: false });
  const logger = pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' });
  const clock = options.clock;
  const stateDir = path.join(dir, 'state');
  let attempted = 0;
  const engine = await DeliveryEngine.start({
    onMessageAttempted: () => void (attempted += 1),
    config,
    spool,
    metrics,
    logger,
    stateDir,
    ...(clock ? { clock, resolver: new MxResolver({ servers: [dns.server], clock, timeoutMs: 2_000 }) } : {}),
    ...(options.trustedCa ? { trustedCa: options.trustedCa } : {}),
    ...(options.mtaStsFetch ? { mtaStsFetch: options.mtaStsFetch } : {}),
    ...(options.tlsSessions ? { tlsSessions: options.tlsSessions } : {}),
  });
  let counter = 0;
  return {
    dns,
    spool,
    metrics,
    engine,
    config,
    accountingFile,
    messagesAttempted: () => attempted,
    async submit({ from = 'sender@sender.test', to, subject = 'test', virtualMta, body: text, eightBitMime = false, smtpUtf8 = false }) {
      counter += 1;
      const body = Buffer.from(`From: <${from}>\r\nTo: ${to.map((address) => `<${address}>`).join(', ')}\r\nSubject: ${subject}\r\nMessage-ID: <m${counter}@sender.test>\r\n\r\n${text ?? `Hello number ${counter}.`}\r\n`);
      const stored = await spool.store(
        {
          mailFrom: from,
          recipients: to.map((address) => ({ address, domain: address.slice(address.lastIndexOf('@') + 1).toLowerCase(), status: 'pending', attempts: 0, nextAttemptAt: 0 })),
          virtualMta: virtualMta ?? config.pool.virtualMtas[0]!.name,
          receivedAt: (clock ?? Date).now(),
          listener: 'test',
          clientAddress: '127.0.0.1',
          eightBitMime,
          smtpUtf8,
        },
        body,
      );
      engine.enqueue(stored);
      return stored;
    },
    async accountingLines() {
      await engine.flushAccounting();
      const { readFile } = await import('node:fs/promises');
      const text = await readFile(accountingFile, 'utf8').catch(() => '');
      return text.split('\n').filter(Boolean).map((line) => JSON.parse(line) as Record<string, unknown>);
    },
    async durableRecipients(id) {
      return (await spool.contents()).find((message) => message.id === id)?.envelope.recipients;
    },
    async recoveredRecipients(id) {
      const restarted = await DeliveryEngine.start({ config, spool, metrics: new RelayMetrics({ processMetrics: false }), logger, stateDir, pauses: [{}], ...(clock ? { clock } : {}) });
      try {
        return restarted.showMessage(id)?.recipients;
      } finally {
        await restarted.stop();
      }
    },
    async close() {
      await engine.stop();
      await spool.close();
      await dns.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Poll until `check` is truthy (real time; generous for a loaded 2-core machine). */
export async function waitFor<T>(check: () => T | Promise<T>, what: string, timeoutMs = 20_000): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value as NonNullable<T>;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** Let pending I/O settle for a moment (to show that something did NOT happen). */
export function settle(ms = 300): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
