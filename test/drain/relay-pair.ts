// Two (or more) real relay processes of one pool for drain tests: the same admin token, the same
// VirtualMTA, every listener on loopback, mail for blocked.test routed to a sink that refuses
// connections until the test unblocks it and everything else to a sink that accepts. Helpers
// send messages with raw SMTP and call the admin API with the token.
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { DrainReport } from '../../mta/drain/queue-drain.ts';
import { RawSmtpClient } from '../fixtures/smtp-clients.ts';
export { eventually } from '../kube/helpers.ts';
import { startSinkMx, type SinkMx } from '../fixtures/sink-mx.ts';
import { freePort, loopbackRelayConfig, startRelayProcess, temporaryDirectory, writeRelayConfig, type RelayProcess } from '../fixtures/relay-process.ts';

export const TOKEN = 'drain-test-token-0123456789';
export const BLOCKED_DOMAIN = 'blocked.test';
export const OPEN_DOMAIN = 'open.test';
const BLOCKED_REPLY = '421 4.7.0 blocked by the test';

export interface TestRelay {
  process: RelayProcess;
  smtpPort: number;
  adminPort: number;
  /** host:port of its admin API, as a peer names it. */
  peer: string;
  directory: string;
}

export interface RelayPool {
  relays: TestRelay[];
  open: SinkMx;
  blocked: SinkMx;
  unblock(): void;
  close(): Promise<void>;
}

export async function startRelayPool(count: number, options: { token?: boolean } = {}): Promise<RelayPool> {
  const open = await startSinkMx({ address: '127.0.0.1' });
  const blocked = await startSinkMx({ address: '127.0.0.1', connectReply: BLOCKED_REPLY });
  const relays: TestRelay[] = [];
  const removers: (() => Promise<void>)[] = [];
  for (let index = 0; index < count; index += 1) {
    const directory = await temporaryDirectory(`vmta-drain-${index}-`);
    removers.push(directory.remove);
    const smtpPort = await freePort();
    const adminPort = await freePort();
    const config = loopbackRelayConfig(smtpPort, adminPort, {
      pool: {
        name: 'pool-a',
        domainDefaults: [
          { match: BLOCKED_DOMAIN, smtpHost: `127.0.0.1:${blocked.port}` },
          { match: '*', smtpHost: `127.0.0.1:${open.port}` },
        ],
        virtualMtas: [{ name: 'vmta-1', hostname: 'out1.relay.test' }],
      },
      admin: { address: '127.0.0.1', port: adminPort, ...(options.token === false ? {} : { tokenFile: 'admin-token' }) },
    });
    config.listeners[0]!.limits = { greetingDelay: '0s' };
    await writeFile(path.join(directory.path, 'admin-token'), `${TOKEN}\n`);
    await writeRelayConfig(directory.path, config);
    const process = await startRelayProcess({ configDir: directory.path, adminPort });
    relays.push({ process, smtpPort, adminPort, peer: `127.0.0.1:${adminPort}`, directory: directory.path });
  }
  return {
    relays,
    open,
    blocked,
    unblock() {
      blocked.options = { ...blocked.options, connectReply: undefined };
    },
    async close() {
      await Promise.all(relays.map((relay) => relay.process.kill()));
      await open.close();
      await blocked.close();
      for (const remove of removers) await remove();
    },
  };
}

/** One SMTP transaction; resolves with the queue id of the 250. */
export async function sendMessage(port: number, from: string, to: readonly string[], body: string): Promise<string> {
  const client = await RawSmtpClient.connect(port);
  try {
    const expect = async (reply: Promise<{ code: number; text: string }>, code: number) => {
      const answered = await reply;
      if (answered.code !== code) throw new Error(`expected ${code}, got ${answered.text}`);
      return answered;
    };
    await expect(client.read(), 220);
    await expect(client.command('EHLO client.test'), 250);
    await expect(client.command(`MAIL FROM:<${from}>`), 250);
    for (const recipient of to) await expect(client.command(`RCPT TO:<${recipient}>`), 250);
    await expect(client.command('DATA'), 354);
    client.write(body.endsWith('\r\n') ? body : `${body}\r\n`);
    const done = await expect(client.command('.'), 250);
    const id = /queued as (\S+)/.exec(done.text)?.[1];
    if (!id) throw new Error(`250 without a queue id: ${done.text}`);
    await client.command('QUIT').catch(() => undefined);
    return id;
  } finally {
    client.close();
  }
}

/** What the admin endpoints used here answer: a drain report, a queue action's count, a message, or an error. */
export type AdminBody = Partial<DrainReport> & { error?: string; messages?: number; recipients?: { address: string; status: string; attempts: number }[]; queues?: unknown[] };

export async function admin(relay: TestRelay, method: string, pathname: string, body?: unknown, token = TOKEN): Promise<{ status: number; body: AdminBody }> {
  const response = await fetch(`${relay.process.adminUrl}${pathname}`, {
    method,
    headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  return { status: response.status, body: (await response.json()) as AdminBody };
}

/** Recipient -> how many times a sink received a message for it. */
export function deliveries(sink: SinkMx): Map<string, number> {
  const counts = new Map<string, number>();
  for (const message of sink.messages) for (const recipient of message.to) counts.set(recipient, (counts.get(recipient) ?? 0) + 1);
  return counts;
}
