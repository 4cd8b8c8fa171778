// TLS handshakes that fail, after STARTTLS as on an implicit-TLS port: every way a client can
// fail one (going away in the middle, clear text where the ClientHello belongs, a ClientHello
// with no cipher the relay accepts, a protocol version below the relay's minimum, silence) is
// counted in vmta_inbound_tls_handshake_failures_total under its listener, TLS mode and reason,
// and never as a finished tls_version="none" session: the next real session on the listener is
// the only one vmta_inbound_connections_total gains.
import assert from 'node:assert/strict';
import net from 'node:net';
import tls from 'node:tls';
import { after, before, describe, test } from 'node:test';
import { RawSmtpClient } from '../fixtures/smtp-clients.ts';
import { waitFor } from '../delivery/harness.ts';
import { expectCode, seriesValue, startHarness, type Harness } from './harness.ts';

type Reason = 'timeout' | 'closed' | 'error';

/** A way to fail a handshake on a socket the relay now expects a ClientHello on. */
interface Failure {
  reason: Reason;
  fail: (socket: net.Socket) => void;
}

const FAILURES: Record<string, Failure> = {
  'the client goes away after half a ClientHello': {
    reason: 'closed',
    fail: (socket) => socket.write(Buffer.from('16030100c8010000c40303', 'hex'), () => setTimeout(() => socket.destroy(), 100)),
  },
  'the client goes away without a byte': { reason: 'closed', fail: (socket) => setTimeout(() => socket.destroy(), 100) },
  'clear-text SMTP where the ClientHello belongs': { reason: 'error', fail: (socket) => socket.write('EHLO client.test\r\nMAIL FROM:<a@outside.example>\r\n') },
  'an HTTP request where the ClientHello belongs': { reason: 'error', fail: (socket) => socket.write('GET / HTTP/1.1\r\nHost: relay.test\r\n\r\n') },
  'a ClientHello offering no cipher the relay accepts': {
    reason: 'error',
    fail: (socket) => tls.connect({ socket, servername: 'localhost', rejectUnauthorized: false, maxVersion: 'TLSv1.2', ciphers: 'AES128-SHA:@SECLEVEL=0' }).on('error', () => undefined),
  },
  'a ClientHello for TLS 1.1, below the minimum version': {
    reason: 'error',
    fail: (socket) => tls.connect({ socket, servername: 'localhost', rejectUnauthorized: false, minVersion: 'TLSv1', maxVersion: 'TLSv1.1', ciphers: 'DEFAULT:@SECLEVEL=0' }).on('error', () => undefined),
  },
  'silence until the handshake deadline': { reason: 'timeout', fail: () => undefined },
};

const LISTENERS = [
  { name: 'relay', tlsMode: 'starttls' },
  { name: 'submission', tlsMode: 'starttls' },
  { name: 'submissions', tlsMode: 'implicit' },
] as const;

describe('failed TLS handshakes are counted by reason, and never as plain sessions', () => {
  let harness: Harness;
  before(async () => {
    harness = await startHarness({
      mutate: (input) => {
        // The handshake deadline is dataRateGrace: short, so silence fails quickly.
        for (const listener of input.listeners) listener.limits = { dataRateGrace: '1s', idleTimeout: '1m' };
      },
    });
  });
  after(() => harness.close());

  const failures = async (series: string): Promise<number> => seriesValue(await harness.metric('vmta_inbound_tls_handshake_failures_total'), series);
  const sessions = async (listener: string): Promise<Record<string, number>> => {
    const counts: Record<string, number> = {};
    for (const line of (await harness.metric('vmta_inbound_connections_total')).split('\n')) {
      const match = new RegExp(`^vmta_inbound_connections_total\\{listener="${listener}",tls_mode="\\w+",tls_version="([^"]+)"\\} (\\d+)$`).exec(line);
      if (match) counts[match[1]!] = Number(match[2]);
    }
    return counts;
  };

  /** A socket on which the relay now waits for a ClientHello: after STARTTLS's 220, or just connected on an implicit-TLS port. */
  const awaitingClientHello = async (listener: (typeof LISTENERS)[number]): Promise<net.Socket> => {
    if (listener.tlsMode === 'implicit') {
      const socket = net.connect({ host: '127.0.0.1', port: harness.port(listener.name) });
      await new Promise((resolve) => socket.once('connect', resolve));
      return socket;
    }
    const client = await RawSmtpClient.connect(harness.port(listener.name));
    expectCode(await client.read(), 220);
    expectCode(await client.command('EHLO client.test'), 250);
    expectCode(await client.command('STARTTLS'), 220);
    client.socket.removeAllListeners('data');
    return client.socket;
  };

  /** One real session that ends with QUIT: plain on STARTTLS listeners, TLS on implicit ones. */
  const controlSession = async (listener: (typeof LISTENERS)[number]): Promise<void> => {
    const client = await RawSmtpClient.connect(harness.port(listener.name), listener.tlsMode === 'implicit' ? { implicitTls: { ca: harness.ca.ca } } : {});
    expectCode(await client.read(), 220);
    expectCode(await client.command('QUIT'), 221);
    await client.waitClosed();
  };

  for (const listener of LISTENERS) {
    for (const [failureName, { reason, fail }] of Object.entries(FAILURES)) {
      test(`${listener.name} (${listener.tlsMode}): ${failureName} counts one reason="${reason}" failure and no session`, async () => {
        const series = `vmta_inbound_tls_handshake_failures_total{listener="${listener.name}",tls_mode="${listener.tlsMode}",reason="${reason}"}`;
        const failuresBefore = await failures(series);
        const sessionsBefore = await sessions(listener.name);
        const socket = await awaitingClientHello(listener);
        socket.on('error', () => undefined);
        try {
          fail(socket);
          await waitFor(async () => (await failures(series)) > failuresBefore, `${series} counted`, 5_000);
          assert.equal(await failures(series), failuresBefore + 1);
        } finally {
          socket.destroy();
        }
        await controlSession(listener);
        const expected = listener.tlsMode === 'implicit' ? 'TLSv1.3' : 'none';
        await waitFor(async () => (await sessions(listener.name))[expected] !== sessionsBefore[expected], 'the control session counted', 2_000).catch(() => undefined);
        assert.deepEqual(await sessions(listener.name), { ...sessionsBefore, [expected]: (sessionsBefore[expected] ?? 0) + 1 }, 'only the control session was counted');
      });
    }
  }
});
