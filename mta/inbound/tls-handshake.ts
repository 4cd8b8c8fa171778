// The TLS handshakes of inbound connections and their bound: the implicit-TLS handshake that
// inbound-server.ts runs on an admitted socket, the deadline every handshake (implicit or
// STARTTLS) and PROXY header must meet, and the bounded reasons a handshake failure is
// counted under in `vmta_inbound_tls_handshake_failures_total`.
import type net from 'node:net';
import tls from 'node:tls';
import type { ListenerConfig } from '../config/schema.ts';
import type { TlsCredentials } from './tls-credentials.ts';

/** The upper bound of any pre-session step, whatever the limits say. */
const PRE_SESSION_TIMEOUT_MS = 30_000;

/** The bounded values of the `reason` label. */
export type HandshakeFailureReason = 'timeout' | 'closed' | 'error';

/**
 * How long a connection may take to send its PROXY header or to finish a TLS handshake: the
 * grace a request gets before `minDataRate` applies (a handshake is a few KB, so a client that
 * keeps up the rate finishes well within it), never more than the idle timeout or 30 s.
 */
export function preSessionTimeoutMs(limits: ListenerConfig['limits']): number {
  return Math.min(PRE_SESSION_TIMEOUT_MS, limits.idleTimeout, limits.dataRateGrace);
}

export class HandshakeFailure extends Error {
  readonly reason: HandshakeFailureReason;
  constructor(reason: HandshakeFailureReason, message: string) {
    super(message);
    this.reason = reason;
  }
}

/** Runs the server side of an implicit-TLS handshake on an accepted socket; on failure both sockets are destroyed. */
export function implicitTlsHandshake(socket: net.Socket, credentials: TlsCredentials, timeoutMs: number): Promise<tls.TLSSocket> {
  return new Promise((resolve, reject) => {
    const tlsSocket = new tls.TLSSocket(socket, {
      isServer: true,
      secureContext: credentials.defaultContext,
      SNICallback: (name, cb) => cb(null, credentials.sniContexts.get(name.toLowerCase()) ?? credentials.defaultContext),
    });
    const timer = setTimeout(() => fail(new HandshakeFailure('timeout', 'TLS handshake timeout')), timeoutMs);
    timer.unref();
    const fail = (error: Error) => {
      clearTimeout(timer);
      tlsSocket.destroy();
      socket.destroy();
      reject(error);
    };
    const onClose = () => fail(new HandshakeFailure('closed', 'connection closed during the TLS handshake'));
    const onError = (error: Error) => fail(new HandshakeFailure('error', error.message));
    tlsSocket.once('error', onError);
    tlsSocket.once('close', onClose);
    tlsSocket.once('secure', () => {
      clearTimeout(timer);
      tlsSocket.removeListener('error', onError);
      tlsSocket.removeListener('close', onClose);
      resolve(tlsSocket);
    });
    socket.resume();
  });
}
