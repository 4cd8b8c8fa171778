// What happens to a connection once it passed the PROXY and connection-limit checks: on an
// implicit-TLS port the TLS handshake (bounded in time), then a session of the listener's
// smtp-server. Run by whichever process serves the session: the primary when it has no session
// processes, otherwise the session process it handed the socket to (mta/sessions/).
import type net from 'node:net';
import type { RuntimeConfig } from '../config/schema.ts';
import type { ListenerSnapshot, InboundDeps } from './listener-session.ts';
import { HandshakeFailure, implicitTlsHandshake, preSessionTimeoutMs } from './tls-handshake.ts';

/** The client as the session sees it (after a trusted PROXY header). */
export interface SessionPeer {
  remoteAddress: string;
  remotePort: number;
}

/** `release` runs once when the session ends (or the handshake fails and the socket closes). */
export async function startAdmittedSession(snapshot: ListenerSnapshot, socket: net.Socket, peer: SessionPeer, release: () => void, deps: Pick<InboundDeps, 'metrics' | 'logger'>): Promise<void> {
  const listener = snapshot.config.name;
  let sessionSocket: net.Socket = socket;
  if (snapshot.config.tls.mode === 'implicit' && snapshot.tls) {
    try {
      sessionSocket = await implicitTlsHandshake(socket, snapshot.tls, preSessionTimeoutMs(snapshot.config.limits));
    } catch (error) {
      const reason = error instanceof HandshakeFailure ? error.reason : 'error';
      deps.metrics.tlsHandshakeFailures.inc({ listener, tls_mode: 'implicit', reason });
      deps.logger.debug({ listener, client: peer.remoteAddress, reason, err: (error as Error).message }, 'TLS handshake failed');
      return;
    }
  }
  snapshot.smtp.connectSession(sessionSocket, peer, release);
  socket.resume();
}

/** The primary's side of its session processes, as the listeners use it (mta/sessions/session-workers.ts). */
export interface SessionDispatch {
  /**
   * Hands an admitted socket to a session process; false when none is running (the caller serves
   * it). `release`, the socket's 'close' listener, is taken off the socket (which closes here once
   * sent) and runs when the session ends there.
   */
  dispatch(listener: string, socket: net.Socket, peer: SessionPeer, release: () => void): boolean;
  /** Gives every session process the config new sessions use; throws when one refuses it. */
  configure(config: RuntimeConfig): Promise<void>;
  /** Ends every session the processes still serve (a drain's or shutdown's bound has passed). */
  closeSessions(): void;
}
