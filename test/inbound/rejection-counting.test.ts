// Observability that tells the truth about refusals and TLS: every refusal the SMTP library makes
// itself (501 bad address syntax, 500 unknown command, 503 bad sequence) is counted exactly once
// among the listener's rejections, like the relay's own; and on an implicit-TLS listener a
// connection whose handshake never completes (plain text, a TLS version below the floor, a
// client that rejects the certificate, a hang-up, silence) is a handshake failure by reason, never
// a session with tls_version="none". Real sockets and openssl s_client.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import net from 'node:net';
import { after, before, describe, test } from 'node:test';
import { opensslClient } from '../fixtures/smtp-clients.ts';
import { createTestCa } from '../fixtures/tls.ts';
import { expectCode, openSession, startHarness, type Harness } from './harness.ts';

let harness: Harness;

before(async () => {
  harness = await startHarness({
    mutate: (input) => {
      for (const listener of input.listeners) listener.limits = { ...listener.limits, maxErrors: 1000, idleTimeout: '2s' };
    },
  });
});
after(() => harness.close());

/** The rejections of one listener by reason, from the registry. */
async function rejections(listener: string): Promise<Map<string, number>> {
  const counts = new Map<string, number>();
  for (const line of (await harness.metric('vmta_inbound_rejections_total')).split('\n')) {
    const match = new RegExp(`^vmta_inbound_rejections_total\\{listener="${listener}",reason="([a-z_]+)"\\} (\\d+)$`).exec(line);
    if (match) counts.set(match[1]!, Number(match[2]));
  }
  return counts;
}

const total = (counts: Map<string, number>) => [...counts.values()].reduce((sum, value) => sum + value, 0);

/** Malformed forms of a good address: each is a syntax error however the parser is built. */
function malformedAddresses(good: string): string[] {
  const [local, domain] = good.split('@') as [string, string];
  return [
    `<${good}`,
    `${good}>`,
    good,
    `<${local} x@${domain}>`,
    `<${local}@@${domain}>`,
    `<@${domain}>`,
    `<${local}@>`,
    `<${local}@${domain}`.replace('<', '< '),
    `<"${local}@${domain}>`,
    '',
  ];
}

describe('refusals the library makes itself are counted once each', () => {
  test('malformed MAIL FROM and RCPT TO addresses, unknown commands, bare verbs and commands out of sequence', async () => {
    const client = await openSession(harness, 'relay');
    try {
      const refusals: { line: string; reason: string; setup?: string }[] = [
        ...malformedAddresses('sender@allowed.example').map((form) => ({ line: `MAIL FROM:${form}`, reason: 'syntax' })),
        ...malformedAddresses('rcpt@allowed.example').filter((form) => form !== '').map((form) => ({ line: `RCPT TO:${form}`, reason: 'syntax', setup: 'MAIL FROM:<sender@allowed.example>' })),
        { line: 'MAIL TO:<sender@allowed.example>', reason: 'syntax' },
        { line: 'RCPT FROM:<rcpt@allowed.example>', reason: 'syntax', setup: 'MAIL FROM:<sender@allowed.example>' },
        { line: 'RCPT TO:<>', reason: 'syntax', setup: 'MAIL FROM:<sender@allowed.example>' },
        { line: 'HELO', reason: 'syntax' },
        { line: 'VRFY', reason: 'syntax' },
        { line: 'XYZZY now', reason: 'syntax' },
        { line: 'RCPT TO:<rcpt@allowed.example>', reason: 'bad_sequence' },
        { line: 'DATA', reason: 'bad_sequence' },
      ];
      for (const refusal of refusals) {
        await client.command('RSET');
        if (refusal.setup) expectCode(await client.command(refusal.setup), 250);
        const before = await rejections('relay');
        const reply = await client.command(refusal.line);
        assert.ok(reply.code >= 500 && reply.code < 600, `${refusal.line}: refused with 5xx (got ${reply.code} ${reply.text})`);
        const after = await rejections('relay');
        assert.equal(total(after) - total(before), 1, `${refusal.line}: counted exactly once (${reply.text})`);
        assert.equal((after.get(refusal.reason) ?? 0) - (before.get(refusal.reason) ?? 0), 1, `${refusal.line}: counted as ${refusal.reason}`);
      }
    } finally {
      client.close();
    }
  });
});

/** The sessions counted on a listener, by tls_version. */
async function sessions(listener: string): Promise<Map<string, number>> {
  const counts = new Map<string, number>();
  for (const line of (await harness.metric('vmta_inbound_connections_total')).split('\n')) {
    const match = new RegExp(`^vmta_inbound_connections_total\\{listener="${listener}",tls_mode="implicit",tls_version="([^"]+)"\\} (\\d+)$`).exec(line);
    if (match) counts.set(match[1]!, Number(match[2]));
  }
  return counts;
}

async function handshakeFailures(): Promise<Map<string, number>> {
  const counts = new Map<string, number>();
  for (const line of (await harness.metric('vmta_inbound_tls_handshake_failures_total')).split('\n')) {
    const match = /^vmta_inbound_tls_handshake_failures_total\{([^}]*)\} (\d+)$/.exec(line);
    const labels = match?.[1] ?? '';
    const reason = /reason="([a-z]+)"/.exec(labels)?.[1];
    if (match && reason && labels.includes('listener="submissions"')) counts.set(reason, (counts.get(reason) ?? 0) + Number(match[2]));
  }
  return counts;
}

async function eventually<T>(what: string, check: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** A raw TCP client that does `act` and waits until the server closes. */
function rawConnection(port: number, act: (socket: net.Socket) => void): Promise<void> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port }, () => act(socket));
    socket.on('error', () => undefined);
    socket.on('close', () => resolve());
    socket.resume();
  });
}

/** openssl s_client with extra arguments, stdin closed at once; resolves when it exits. */
function opensslAttempt(port: number, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn('openssl', ['s_client', '-connect', `127.0.0.1:${port}`, '-servername', 'localhost', ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.on('error', reject);
    child.on('close', () => resolve(output));
    child.stdin.end();
  });
}

describe('failed implicit-TLS handshakes are not sessions', () => {
  test('plain text, TLS 1.1, an untrusting client, a hang-up and silence are handshake failures by reason; tls_version="none" is never counted', async () => {
    const port = harness.port('submissions');
    const otherCa = createTestCa();
    try {
      const attempts: { name: string; reason: string; run: () => Promise<unknown> }[] = [
        { name: 'a plain-text EHLO', reason: 'error', run: () => rawConnection(port, (socket) => socket.write('EHLO plain.example\r\n')) },
        { name: 'HTTP on the TLS port', reason: 'error', run: () => rawConnection(port, (socket) => socket.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n')) },
        { name: 'openssl s_client -tls1_1 (below the TLS 1.2 floor)', reason: 'error', run: () => opensslAttempt(port, ['-tls1_1', '-cipher', 'DEFAULT@SECLEVEL=0']) },
        { name: 'openssl s_client that does not trust the certificate', reason: 'error', run: () => opensslAttempt(port, ['-CAfile', otherCa.caFile, '-verify_return_error']) },
        { name: 'a hang-up right after connecting', reason: 'closed', run: () => rawConnection(port, (socket) => socket.end()) },
        { name: 'half a ClientHello, then silence until the handshake timeout', reason: 'timeout', run: () => rawConnection(port, (socket) => socket.write(Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00]))) },
      ];
      for (const attempt of attempts) {
        const [failuresBefore, sessionsBefore] = [await handshakeFailures(), await sessions('submissions')];
        await attempt.run();
        const failures = await eventually(`${attempt.name}: a handshake failure`, async () => {
          const now = await handshakeFailures();
          return total(now) > total(failuresBefore) ? now : undefined;
        });
        assert.equal(total(failures) - total(failuresBefore), 1, `${attempt.name}: one failure`);
        assert.equal((failures.get(attempt.reason) ?? 0) - (failuresBefore.get(attempt.reason) ?? 0), 1, `${attempt.name}: reason ${attempt.reason} (${JSON.stringify([...failures])})`);
        assert.deepEqual(await sessions('submissions'), sessionsBefore, `${attempt.name}: no session counted`);
      }
      assert.equal((await sessions('submissions')).get('none'), undefined, 'no tls_version="none" on an implicit-TLS listener');

      const completed = await opensslClient({ port, caFile: harness.ca.caFile, starttls: false, input: ['EHLO client.example', 'QUIT'] });
      assert.match(completed.stdout, /^221 /m, completed.stdout + completed.stderr);
      const counted = await eventually('the completed session counted', async () => {
        const now = await sessions('submissions');
        return total(now) > 0 ? now : undefined;
      });
      assert.deepEqual([...counted.keys()], ['TLSv1.3'], 'a completed session is counted with its TLS version');
    } finally {
      otherCa.cleanup();
    }
  });
});
