// A relay process with session processes (sessionProcesses: 2 and 3; mta/sessions/), driven by
// real clients over loopback: messages from concurrent smtplib clients are served by every
// session process, stored once by the primary and delivered once to a sink; connection limits
// and the per-client limit hold for the pod across processes (from 0 to past the limit); a
// client's failed AUTH attempts on connections served by different processes add up to one
// lockout that every process then enforces; a recipient on the pool's suppression list gets 550
// at RCPT from every session process; a session process killed with SIGKILL mid-DATA
// costs its client that unacknowledged message only, is started again and serves the next
// sessions, and every message acknowledged before was delivered; a hot reload reaches every
// process; SIGTERM closes sessions left open at the shutdown bound and ends every process;
// /metrics sums the processes.
import assert from 'node:assert/strict';
import { readFile, writeFile, mkdir } from 'node:fs/promises';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import type { RuntimeConfigInput } from '../../mta/config/schema.ts';
import { baseRelayConfig, freePort, metricValue, startRelayProcess, temporaryDirectory, TEST_ADMIN_TOKEN, writeRelayConfig, writeTestAdminToken, type RelayProcess } from '../fixtures/relay-process.ts';
import { startSinkMx, type SinkMx } from '../fixtures/sink-mx.ts';
import { RawSmtpClient, sendMarkedMessage, smtplibSend } from '../fixtures/smtp-clients.ts';
import { waitForRelay } from '../fixtures/wait-for-relay.ts';

const USER = 'app';
const PASSWORD = 'app-secret-password';
const MAX_CONNECTIONS = 5;
const PER_CLIENT = 3;
const MAX_FAILURES = 3;

interface Setup {
  relay: RelayProcess;
  port: number;
  sink: SinkMx;
  directory: string;
  config: RuntimeConfigInput;
}

const cleanups: (() => Promise<unknown>)[] = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

async function startRelay(processes: number): Promise<Setup> {
  const sink = await startSinkMx({ address: '127.0.0.1' });
  cleanups.push(() => sink.close());
  const directory = await temporaryDirectory('vmta-sessions-');
  cleanups.push(directory.remove);
  await mkdir(path.join(directory.path, 'users'));
  await writeFile(path.join(directory.path, 'users', USER), `${PASSWORD}\n`);
  const [port, adminPort] = [await freePort(), await freePort()];
  const config: RuntimeConfigInput = baseRelayConfig({
    sessionProcesses: processes,
    pool: { name: 'pool-a', domainDefaults: [{ match: '*', smtpHost: `127.0.0.1:${sink.port}`, tlsPolicy: 'none' }], virtualMtas: [{ name: 'vmta-1', hostname: 'out1.relay.test' }] },
    listeners: [{
      name: 'relay', address: '127.0.0.1', port, relayPolicy: 'loopback',
      auth: { mechanisms: ['PLAIN', 'LOGIN'], maxFailures: MAX_FAILURES, failureWindow: '10m' },
      limits: { maxConnections: MAX_CONNECTIONS, maxConnectionsPerClient: PER_CLIENT },
    }],
    relayPolicies: [{ name: 'loopback', allowedCidrs: ['127.0.0.0/8'], requireTlsForAuth: false, users: { secretPath: 'users' } }],
    admin: { address: '127.0.0.1', port: adminPort, tokenFile: await writeTestAdminToken(directory.path) },
    suppression: { mode: 'refuse' },
  });
  await writeRelayConfig(directory.path, config);
  const relay = await startRelayProcess({ configDir: directory.path, adminPort, args: ['--shutdown-timeout', '2s'] });
  cleanups.push(() => relay.kill());
  return { relay, port, sink, directory: directory.path, config };
}

/** The relay's child processes (its session processes), from /proc. */
async function sessionProcessIds(relay: RelayProcess): Promise<number[]> {
  const pid = relay.child.pid!;
  const text = await readFile(`/proc/${pid}/task/${pid}/children`, 'utf8');
  return text.trim().split(/\s+/).filter(Boolean).map(Number);
}

/** Opens a connection from `localAddress` and reads its first reply (220 or 421). */
async function greet(port: number, localAddress: string, relay?: RelayProcess): Promise<{ client: RawSmtpClient; code: number }> {
  const client = await RawSmtpClient.connect(port, { localAddress });
  const reply = await client.read().catch((error: Error) => Promise.reject(new Error(`${error.message}\n${relay?.logs.slice(-8).map((record) => JSON.stringify(record)).join('\n')}`)));
  return { client, code: reply.code };
}

for (const processes of [2, 3]) {
  describe(`sessionProcesses: ${processes}`, () => {
    let setup: Setup;
    /** The processes that wrote matching log lines, once `expected` of them have (lines reach the test through a pipe, after the replies). */
    const processesLogging = async (match: (record: Record<string, unknown>) => boolean, expected: number): Promise<Set<string | undefined>> => {
      const seen = () => new Set(setup.relay.logs.filter((record) => match(record as Record<string, unknown>)).map((record) => (record as { process?: string }).process));
      await waitForRelay(`log lines from ${expected} processes`, () => (seen().size >= expected ? true : undefined), [setup.relay], 10_000).catch(() => undefined);
      return seen();
    };
    /** Until the primary has heard that every session ended (its counts decide where the next one goes). */
    const settled = () => waitForRelay('no session open', async () => ((await metricValue(setup.relay.adminUrl, 'vmta_inbound_connections_active{listener="relay"}')) === 0 ? true : undefined), [setup.relay]);
    /** A command's reply; on a closed connection the error shows the relay's last log records. */
    const say = (session: RawSmtpClient, line: string) => session.command(line).catch((error: Error) => Promise.reject(new Error(`${line.split(' ')[0]}: ${error.message}\n${setup.relay.logs.slice(-8).map((record) => JSON.stringify(record)).join('\n')}`)));

    test('the relay runs that many session processes; concurrent smtplib clients are served by all of them, each message delivered once', async () => {
      setup = await startRelay(processes);
      assert.equal((await sessionProcessIds(setup.relay)).length, processes);
      const markers = Array.from({ length: 4 * processes }, (_, index) => `sessions-${processes}-${index}`);
      // PER_CLIENT at once from 127.0.0.1: the per-client limit would refuse more.
      for (let start = 0; start < markers.length; start += PER_CLIENT) {
        const wave = markers.slice(start, start + PER_CLIENT);
        const results = await Promise.all(wave.map((marker) => smtplibSend({ host: '127.0.0.1', port: setup.port, mode: 'plain', from: 'app@sender.test', to: [`${marker}@example.net`], message: `Subject: ${marker}\r\n\r\n${marker}\r\n` })));
        for (const result of results) assert.match(result.stdout, /^OK .*queued as/, result.stdout + result.stderr);
      }
      await waitForRelay('every message at the sink', () => (markers.every((marker) => setup.sink.messages.some((message) => message.to.includes(`${marker}@example.net`))) ? true : undefined), [setup.relay]);
      for (const marker of markers) assert.equal(setup.sink.messages.filter((message) => message.to.includes(`${marker}@example.net`)).length, 1, `${marker} delivered once`);
      const servedBy = await processesLogging((record) => record.msg === 'message accepted', processes);
      assert.equal(servedBy.size, processes, `accepted by ${[...servedBy].join(', ')}`);
      assert.ok([...servedBy].every((name) => name?.startsWith('session-')), 'no session served by the primary');
      assert.equal(await metricValue(setup.relay.adminUrl, 'vmta_inbound_messages_total{listener="relay"}'), markers.length, '/metrics sums the processes');
    });

    test('a suppressed recipient gets 550 at RCPT TO from every session process; the others 250', async () => {
      const added = await fetch(`${setup.relay.adminUrl}/api/v1/suppressions/add`, { method: 'POST', headers: { authorization: `Bearer ${TEST_ADMIN_TOKEN}`, 'content-type': 'application/json' }, body: JSON.stringify({ addresses: ['gone@example.net'] }) });
      assert.equal(added.status, 200, await added.text());
      for (let session = 0; session < 2 * processes; session++) {
        await settled();
        const { client } = await greet(setup.port, '127.0.0.60', setup.relay);
        await say(client, 'EHLO suppressed.client.test');
        assert.equal((await say(client, 'MAIL FROM:<app@sender.test>')).code, 250);
        const refused = await say(client, 'RCPT TO:<Gone@example.net>');
        assert.equal(refused.code, 550, refused.text);
        assert.equal((await say(client, 'RCPT TO:<kept@example.net>')).code, 250);
        client.close();
        await client.waitClosed();
      }
      const refusedBy = await processesLogging((record) => record.msg === 'refused: suppressed', processes);
      assert.equal(refusedBy.size, processes, `refused by ${[...refusedBy].join(', ')}`);
    });

    test(`maxConnections ${MAX_CONNECTIONS} and maxConnectionsPerClient ${PER_CLIENT} hold for the pod, however the sessions spread`, async () => {
      const open: RawSmtpClient[] = [];
      try {
        // From one client: PER_CLIENT admitted, the next refused as that client's.
        for (let index = 0; index < PER_CLIENT; index++) {
          const { client, code } = await greet(setup.port, '127.0.0.1');
          open.push(client);
          assert.equal(code, 220, `connection ${index + 1} from 127.0.0.1`);
        }
        const overClient = await greet(setup.port, '127.0.0.1');
        open.push(overClient.client);
        assert.equal(overClient.code, 421, 'one past the per-client limit');
        // From other clients: the rest of maxConnections admitted, then every one refused.
        for (let index = PER_CLIENT; index < MAX_CONNECTIONS; index++) {
          const { client, code } = await greet(setup.port, `127.0.0.${index + 2}`);
          open.push(client);
          assert.equal(code, 220, `connection ${index + 1} of the listener`);
        }
        for (const address of ['127.0.0.20', '127.0.0.21']) {
          const { client, code } = await greet(setup.port, address);
          open.push(client);
          assert.equal(code, 421, `past maxConnections from ${address}`);
        }
      } finally {
        for (const client of open) client.close();
      }
      // Released as the sessions end: a new connection is admitted again.
      await waitForRelay('a connection admitted after the others closed', async () => {
        const { client, code } = await greet(setup.port, '127.0.0.30');
        client.close();
        return code === 220 ? true : undefined;
      }, [setup.relay]);
    });

    test(`failed AUTH on connections served by different processes adds up to one lockout after ${MAX_FAILURES}, enforced by every process`, async () => {
      const client = '127.0.0.40';
      const held: RawSmtpClient[] = [];
      await settled();
      try {
        // Held open, so the primary hands each to the process with the fewest sessions: they spread.
        for (let attempt = 0; attempt < MAX_FAILURES; attempt++) {
          const { client: session } = await greet(setup.port, client, setup.relay);
          held.push(session);
          await say(session, 'EHLO auth.client.test');
          const reply = await say(session, `AUTH PLAIN ${Buffer.from(`\0${USER}\0wrong-${attempt}`).toString('base64')}`);
          assert.equal(reply.code, attempt === MAX_FAILURES - 1 ? 454 : 535, `attempt ${attempt + 1}: ${reply.text}`);
        }
      } finally {
        for (const session of held) session.close();
      }
      const failedAt = await processesLogging((record) => (record.event === 'refusal auth_failed' || record.event === 'lockout') && record.client === client, Math.min(processes, MAX_FAILURES));
      assert.equal(failedAt.size, Math.min(processes, MAX_FAILURES), `the failures were counted in ${[...failedAt].join(', ')}`);
      // One at a time (the per-client limit is below the checks), so the ties go round the processes.
      for (let check = 0; check < 2 * processes; check++) {
        await settled();
        const session = await waitForRelay('a connection admitted for the locked-out client', async () => {
          const { client: admitted, code } = await greet(setup.port, client, setup.relay);
          if (code === 220) return admitted;
          admitted.close();
          return undefined;
        }, [setup.relay]);
        await say(session, 'EHLO auth.client.test');
        const reply = await say(session, `AUTH PLAIN ${Buffer.from(`\0${USER}\0${PASSWORD}`).toString('base64')}`);
        assert.equal(reply.code, 454, `the right password is refused while locked out (check ${check + 1}): ${reply.text}`);
        session.close();
        await session.waitClosed();
      }
      const refusedBy = await processesLogging((record) => record.msg === 'refused: AUTH from a locked-out client' && record.client === client, processes);
      assert.equal(refusedBy.size, processes, `the lockout was enforced by ${[...refusedBy].join(', ')}`);
      const other = await greet(setup.port, '127.0.0.41');
      await say(other.client, 'EHLO auth.client.test');
      assert.equal((await say(other.client, `AUTH PLAIN ${Buffer.from(`\0${USER}\0${PASSWORD}`).toString('base64')}`)).code, 235, 'another client is not locked out');
      other.client.close();
    });

    test('a session process killed mid-DATA costs only that unacknowledged message; it is started again and the next sessions are served', async () => {
      const before = `before-kill-${processes}`;
      await sendMarkedMessage(setup.port, 'app@sender.test', `${before}@example.net`, before);
      const victims: RawSmtpClient[] = [];
      for (let index = 0; index < processes; index++) {
        const { client } = await greet(setup.port, '127.0.0.50');
        victims.push(client);
        for (const command of ['EHLO killed.client.test', 'MAIL FROM:<app@sender.test>', `RCPT TO:<killed-${index}@example.net>`]) assert.equal((await client.command(command)).code, 250, command);
        assert.equal((await client.command('DATA')).code, 354);
        client.write('Subject: never acknowledged\r\n\r\nhalf a message');
      }
      const killed = await sessionProcessIds(setup.relay);
      for (const pid of killed) process.kill(pid, 'SIGKILL');
      for (const client of victims) await client.waitClosed();
      await setup.relay.waitForLog((record) => record.msg === 'session process exited; starting it again');
      await waitForRelay('new session processes', async () => {
        const now = await sessionProcessIds(setup.relay);
        return now.length === processes && now.every((pid) => !killed.includes(pid)) ? true : undefined;
      }, [setup.relay]);
      const afterKill = `after-kill-${processes}`;
      await waitForRelay('a message accepted after the restart', async () => {
        try {
          await sendMarkedMessage(setup.port, 'app@sender.test', `${afterKill}@example.net`, afterKill);
          return true;
        } catch {
          return undefined;
        }
      }, [setup.relay]);
      await waitForRelay('both messages at the sink', () => ([before, afterKill].every((marker) => setup.sink.messages.some((message) => message.to.includes(`${marker}@example.net`))) ? true : undefined), [setup.relay]);
      assert.equal(setup.sink.messages.filter((message) => message.to.some((recipient) => recipient.startsWith('killed-'))).length, 0, 'no half message was delivered');
      assert.equal(setup.sink.messages.filter((message) => message.to.includes(`${before}@example.net`)).length, 1);
    });

    test('a hot reload reaches every session process: each new session greets with the new hostname', async () => {
      const hostname = `reloaded-${processes}.relay.test`;
      await writeRelayConfig(setup.directory, { ...setup.config, hostname });
      await setup.relay.waitForLog((record) => record.msg === 'runtime config reloaded');
      for (let session = 0; session < 2 * processes; session++) {
        await settled();
        const client = await RawSmtpClient.connect(setup.port, { localAddress: '127.0.0.70' });
        const greeting = await client.read();
        assert.match(greeting.text, new RegExp(`^220 ${hostname.replaceAll('.', '\\.')} `), `session ${session + 1}: ${greeting.text}`);
        client.close();
        await client.waitClosed();
      }
    });

    test('SIGTERM with a session still open: it is closed at --shutdown-timeout, the relay exits 0 and its session processes are gone', async () => {
      const children = await sessionProcessIds(setup.relay);
      const { client } = await greet(setup.port, '127.0.0.80', setup.relay);
      await say(client, 'EHLO lingering.client.test');
      const exit = await setup.relay.kill('SIGTERM');
      assert.equal(exit.code, 0, setup.relay.stderr());
      await client.waitClosed();
      for (const pid of children) assert.throws(() => process.kill(pid, 0), /ESRCH/, `session process ${pid} is gone`);
    });
  });
}
