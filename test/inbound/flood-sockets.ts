// Hostile sockets for the connection-cap tests: many connections from chosen loopback addresses
// that stop before TLS (silent from the first byte), inside the handshake (the first bytes of a
// ClientHello, after STARTTLS on STARTTLS ports) or right after it (TLS completed, then
// silence), each recording what it received, whether its handshake completed and how long the
// relay kept it.
import net from 'node:net';
import tls from 'node:tls';

export type ListenerKind = 'starttls' | 'implicit';
export type Phase = 'pre-handshake' | 'in-handshake' | 'post-handshake';

export interface FloodSocket {
  /** Clear-text bytes received (greeting, 421...); what arrives inside TLS is not recorded. */
  received: string;
  handshakeCompleted: boolean;
  connectedAt: number;
  /** Milliseconds from connect to close, once closed. */
  lifetimeMs: number | undefined;
  destroy(): void;
}

/** The first 11 bytes of a TLS 1.2 ClientHello record: the relay's TLS state waits for the rest. */
const CLIENT_HELLO_START = Buffer.from('16030100c8010000c40303', 'hex');

/** One connection that behaves as `phase` says on a listener of `kind`. */
export function floodSocket(port: number, localAddress: string, kind: ListenerKind, phase: Phase, secureContext: tls.SecureContext): FloodSocket {
  const raw = net.connect({ host: '127.0.0.1', port, localAddress });
  const flood: FloodSocket = {
    received: '',
    handshakeCompleted: false,
    connectedAt: Date.now(),
    lifetimeMs: undefined,
    destroy: () => raw.destroy(),
  };
  const closed = () => (flood.lifetimeMs ??= Date.now() - flood.connectedAt);
  const startTls = () => {
    raw.removeAllListeners('data');
    const secure = tls.connect({ socket: raw, secureContext, servername: 'localhost' }, () => (flood.handshakeCompleted = true));
    secure.on('error', () => undefined);
    secure.once('close', closed);
    flood.destroy = () => secure.destroy();
  };
  raw.on('error', () => undefined);
  raw.once('connect', () => {
    flood.connectedAt = Date.now();
    if (kind === 'implicit' && phase === 'in-handshake') raw.write(CLIENT_HELLO_START);
    else if (kind === 'implicit' && phase === 'post-handshake') startTls();
  });
  // STARTTLS in and after the handshake: greeting -> EHLO -> STARTTLS -> TLS (or half a
  // ClientHello), each step on its complete reply.
  let awaiting: 'greeting' | 'ehlo' | 'starttls' = 'greeting';
  let reply = '';
  raw.setEncoding('latin1');
  raw.on('data', (chunk: string) => {
    flood.received += chunk;
    if (kind !== 'starttls' || phase === 'pre-handshake') return;
    reply += chunk;
    if (!/(^|\r\n)\d{3} [^\r]*\r\n$/.test(reply)) return;
    const code = reply.trimEnd().split('\r\n').at(-1)!.slice(0, 3);
    reply = '';
    if (awaiting === 'greeting' && code === '220') {
      awaiting = 'ehlo';
      raw.write('EHLO flood.test\r\n');
    } else if (awaiting === 'ehlo') {
      awaiting = 'starttls';
      raw.write('STARTTLS\r\n');
    } else if (awaiting === 'starttls' && code === '220') {
      if (phase === 'post-handshake') startTls();
      else raw.write(CLIENT_HELLO_START);
    }
  });
  raw.once('close', closed);
  return flood;
}
