// Slow clients against the minimum transfer rate (`minDataRate` after `dataRateGrace`, like
// Postfix's smtpd_min_data_rate): for every kind of request a client sends — a command line
// before and after TLS, AUTH continuation lines (LOGIN and PLAIN), a DATA section, the TLS
// handshake after STARTTLS and on an implicit-TLS port — a client dripping one byte a second,
// or keeping up only half the minimum rate, is cut off (421 4.4.2 where a reply can still be
// read, counted as too_slow; a closed connection inside a handshake, whose deadline is the
// grace, counted as a handshake timeout) long before the command and idle timeouts;
// a client sending at twice the minimum rate for several times the grace is served in full.
import assert from 'node:assert/strict';
import net from 'node:net';
import tls from 'node:tls';
import { after, before, describe, test } from 'node:test';
import { RawSmtpClient } from '../fixtures/smtp-clients.ts';
import { expectCode, openSession, seriesValue, startHarness, type Harness } from './harness.ts';

const MIN_DATA_RATE = 5_000;
const GRACE_MS = 1_000;
const CUT_REPLY = `421 4.4.2 Transfer slower than ${MIN_DATA_RATE} bytes per second, closing connection`;

/** The first flight of a real TLS client (its ClientHello), captured from node:tls. */
async function captureClientHello(): Promise<Buffer> {
  const server = net.createServer();
  server.listen(0, '127.0.0.1');
  await new Promise((resolve) => server.once('listening', resolve));
  const { port } = server.address() as net.AddressInfo;
  try {
    return await new Promise<Buffer>((resolve) => {
      server.once('connection', (socket) => socket.once('data', (chunk: Buffer) => {
        resolve(chunk);
        socket.destroy();
      }));
      tls.connect({ host: '127.0.0.1', port, servername: 'localhost' }).on('error', () => undefined);
    });
  } finally {
    server.close();
  }
}

/** Writes `bytes` as `chunkSize`-byte pieces every `intervalMs`; stops when the socket closes or `stop()` is called. */
function drip(socket: net.Socket, bytes: Buffer, chunkSize: number, intervalMs: number): { stop: () => void; done: Promise<void> } {
  let offset = 0;
  let timer: NodeJS.Timeout | undefined;
  let finish: () => void = () => undefined;
  const done = new Promise<void>((resolve) => (finish = resolve));
  const stop = () => {
    clearInterval(timer);
    finish();
  };
  const step = () => {
    if (socket.destroyed || offset >= bytes.length) return stop();
    socket.write(bytes.subarray(offset, offset + chunkSize));
    offset += chunkSize;
  };
  step();
  timer = setInterval(step, intervalMs);
  return { stop, done };
}

/** A drip that would take far longer than the test: one byte a second. */
const ONE_BYTE_A_SECOND = { chunkSize: 1, intervalMs: 1_000 };
/** Half the minimum rate, in 100 ms steps. */
const HALF_THE_RATE = { chunkSize: MIN_DATA_RATE / 20, intervalMs: 100 };
const DRIPS = { 'one byte a second': ONE_BYTE_A_SECOND, 'half the minimum rate': HALF_THE_RATE };
/** A handshake has the grace as its deadline, whatever the rate: a ClientHello (a few hundred bytes) dripped a byte at a time. */
const HANDSHAKE_DRIPS = { 'one byte a second': 1_000, 'fifty bytes a second': 20 };

describe('a client slower than minDataRate is cut off, whatever it is sending', () => {
  let harness: Harness;
  let clientHello: Buffer;
  before(async () => {
    clientHello = await captureClientHello();
    harness = await startHarness({
      mutate: (input) => {
        for (const listener of input.listeners) {
          // Idle and command timeouts far beyond the test: only the rate can cut a session.
          listener.limits = { minDataRate: MIN_DATA_RATE, dataRateGrace: `${GRACE_MS}ms`, idleTimeout: '5m', commandTimeout: '10m' };
        }
      },
    });
  });
  after(() => harness.close());

  /** What each kind of request looks like on the wire (12 KB or more: longer than half the rate sends before the cut), once the session is where it is sent. */
  const requests: Record<string, { open: () => Promise<RawSmtpClient>; payload: () => Buffer }> = {
    'a command line (clear text)': {
      open: async () => {
        const client = await RawSmtpClient.connect(harness.port('relay'));
        expectCode(await client.read(), 220);
        return client;
      },
      payload: () => Buffer.from(`EHLO ${'drip.'.repeat(2400)}example\r\n`),
    },
    'a command line after STARTTLS': {
      open: () => openSession(harness, 'submission', { starttls: true }),
      payload: () => Buffer.from(`NOOP ${'x'.repeat(12_000)}\r\n`),
    },
    'an AUTH LOGIN continuation line': {
      open: async () => {
        const client = await openSession(harness, 'submissions');
        assert.equal((await client.command('AUTH LOGIN')).text, '334 VXNlcm5hbWU6');
        return client;
      },
      payload: () => Buffer.from(`${Buffer.from('alice'.repeat(1800)).toString('base64')}\r\n`),
    },
    'an AUTH PLAIN continuation line': {
      open: async () => {
        const client = await openSession(harness, 'submission', { starttls: true });
        expectCode(await client.command('AUTH PLAIN'), 334);
        return client;
      },
      payload: () => Buffer.from(`${Buffer.from(`\0alice\0${'p'.repeat(9000)}`).toString('base64')}\r\n`),
    },
    'a DATA section': {
      open: async () => {
        const client = await openSession(harness, 'relay');
        expectCode(await client.command('MAIL FROM:<a@outside.example>'), 250);
        expectCode(await client.command('RCPT TO:<x@allowed.example>'), 250);
        expectCode(await client.command('DATA'), 354);
        return client;
      },
      payload: () => Buffer.from(`Subject: drip\r\n\r\n${'line of a slow message\r\n'.repeat(2000)}.\r\n`),
    },
  };

  for (const [request, { open, payload }] of Object.entries(requests)) {
    for (const [dripName, { chunkSize, intervalMs }] of Object.entries(DRIPS)) {
      test(`${request} sent at ${dripName} gets ${CUT_REPLY.slice(0, 9)} and is closed`, async () => {
        const accepted = harness.collected.length;
        const tooSlow = 'vmta_inbound_rejections_total{listener="%s",reason="too_slow"}';
        const client = await open();
        const listener = harness.server.boundAddresses().find((entry) => entry.port === client.socket.remotePort)!.listener;
        const slowBefore = seriesValue(await harness.metric('vmta_inbound_rejections_total'), tooSlow.replace('%s', listener));
        const started = Date.now();
        const dripping = drip(client.socket, payload(), chunkSize, intervalMs);
        try {
          assert.equal((await client.read(15_000)).text, CUT_REPLY);
          await client.waitClosed();
          const elapsed = Date.now() - started;
          // Not before the grace; long before the payload could have been sent in full.
          assert.ok(elapsed >= GRACE_MS - 50, `cut after ${elapsed} ms`);
          assert.ok(elapsed < 8_000, `cut after ${elapsed} ms`);
          assert.equal(harness.collected.length, accepted, 'nothing was accepted');
          assert.equal(seriesValue(await harness.metric('vmta_inbound_rejections_total'), tooSlow.replace('%s', listener)), slowBefore + 1);
        } finally {
          dripping.stop();
          client.close();
        }
      });
    }
  }

  const handshakes: Record<string, { listener: string; tlsMode: string; open: () => Promise<net.Socket> }> = {
    'the TLS handshake after STARTTLS': {
      listener: 'submission',
      tlsMode: 'starttls',
      open: async () => {
        const client = await openSession(harness, 'submission');
        expectCode(await client.command('STARTTLS'), 220);
        return client.socket;
      },
    },
    'the implicit TLS handshake': {
      listener: 'submissions',
      tlsMode: 'implicit',
      open: async () => {
        const socket = net.connect({ host: '127.0.0.1', port: harness.port('submissions') });
        await new Promise((resolve) => socket.once('connect', resolve));
        return socket;
      },
    },
  };

  for (const [handshake, { listener, tlsMode, open }] of Object.entries(handshakes)) {
    for (const [dripName, intervalMs] of Object.entries(HANDSHAKE_DRIPS)) {
      test(`${handshake} with its ClientHello sent at ${dripName} is closed after the grace and counted as a handshake timeout`, async () => {
        const series = `vmta_inbound_tls_handshake_failures_total{listener="${listener}",tls_mode="${tlsMode}",reason="timeout"}`;
        const before = seriesValue(await harness.metric('vmta_inbound_tls_handshake_failures_total'), series);
        const socket = await open();
        socket.on('error', () => undefined);
        const closed = new Promise((resolve) => socket.once('close', resolve));
        const started = Date.now();
        const dripping = drip(socket, clientHello, 1, intervalMs);
        try {
          await closed;
          const elapsed = Date.now() - started;
          assert.ok(elapsed >= GRACE_MS - 50 && elapsed < 8_000, `closed after ${elapsed} ms`);
          assert.equal(seriesValue(await harness.metric('vmta_inbound_tls_handshake_failures_total'), series), before + 1);
        } finally {
          dripping.stop();
          socket.destroy();
        }
      });
    }
  }

  test('a client at twice the minimum rate for five times the grace gets its message accepted', async () => {
    const client = await openSession(harness, 'relay', { starttls: true });
    try {
      expectCode(await client.command('MAIL FROM:<a@outside.example>'), 250);
      expectCode(await client.command('RCPT TO:<x@allowed.example>'), 250);
      expectCode(await client.command('DATA'), 354);
      const body = Buffer.from(`Subject: steady\r\n\r\n${'a steady client sends its message line by line\r\n'.repeat(1100)}.\r\n`);
      const started = Date.now();
      // 2 x MIN_DATA_RATE bytes per second in 100 ms steps.
      const sending = drip(client.socket, body, MIN_DATA_RATE / 5, 100);
      await sending.done;
      assert.match((await client.read(15_000)).text, /^250 2\.0\.0 Ok: queued as /);
      assert.ok(Date.now() - started >= 4 * GRACE_MS, 'the transfer lasted several times the grace');
    } finally {
      client.close();
    }
  });
});
