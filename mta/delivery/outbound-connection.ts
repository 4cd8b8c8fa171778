// One outbound SMTP session to one MX host address, on nodemailer's SMTP client: bound to the
// VirtualMTA's source address (or over the socket its egress proxy opened), greeting with its
// EHLO name, and applying the domain's TLS policy — none (never STARTTLS), opportunistic
// (STARTTLS when offered, certificate not checked, plain text when not offered or when the
// handshake fails), required (STARTTLS or nothing: never sends in clear) and verify (required
// plus chain and MX host name checked).
// With DANE (TLSA records of the host, tls-route.ts) the session requires TLS and the certificate
// chain must match the records (dane.ts) before any mail is sent. Towards a smarthost the session
// may start in TLS (implicit, port 465) and authenticates (AUTH PLAIN or LOGIN) only once encrypted.
// PIPELINING, SIZE, 8BITMIME, SMTPUTF8 and DSN (RFC 3461: RET and ENVID on MAIL FROM, each
// recipient's own NOTIFY and ORCPT on its RCPT TO) are used as the peer advertises them.
import net from 'node:net';
import type { Readable } from 'node:stream';
import { X509Certificate } from 'node:crypto';
import type { DetailedPeerCertificate, TLSSocket } from 'node:tls';
import SMTPConnection from 'nodemailer/lib/smtp-connection';
import { verifyDane, type TlsaRecord } from './dane.ts';
import { rcptDsnParameters, type DsnEnvelope, type DsnRecipient } from './dsn-request.ts';
import type { SessionTlsPolicy } from './tls-route.ts';

export interface MxTarget {
  /** MX host name: SNI and the name a `verify` certificate must carry. */
  name: string;
  address: string;
  port: number;
}

export interface OutboundConnectionOptions {
  target: MxTarget;
  sourceAddress?: string;
  ehloName: string;
  tlsPolicy: SessionTlsPolicy;
  /** TLSA records the server's certificate chain must match (DANE); implies TLS required. */
  dane?: TlsaRecord[];
  /** Trust anchors for `verify` instead of the system roots (tests, private CAs). */
  trustedCa?: Buffer | Buffer[];
  connectTimeoutMs?: number;
  socketTimeoutMs?: number;
  /** TLS from the first byte (RFC 8314, port 465) instead of STARTTLS; the session then requires TLS. */
  implicitTls?: boolean;
  /** Log in after TLS (a smarthost); a session that is not encrypted never sends credentials. */
  auth?: OutboundAuth;
  /** Opens the TCP connection to the target instead of a direct connect from sourceAddress (an egress proxy, egress-proxy.ts); rejects with ConnectionFailure. */
  dial?: () => Promise<net.Socket>;
}

export interface OutboundAuth {
  user: string;
  pass: string;
  /** auto: PLAIN when the server offers it, else LOGIN. */
  mechanism: 'PLAIN' | 'LOGIN' | 'auto';
}

export type TlsOutcome = { kind: 'plain' } | { kind: 'tls'; version: string; cipher: string; dane?: 'dane-ee' | 'dane-ta' | 'unauthenticated' };

/** An SMTP reply as "code text". */
export interface Reply {
  code: number;
  text: string;
}

/** Why a session could not be set up, or broke. `reply` when the peer refused in words; `code` the socket or client error code (ECONNREFUSED, ETIMEDOUT...). */
export class ConnectionFailure extends Error {
  readonly kind: 'connection' | 'tls' | 'auth';
  readonly reply?: Reply;
  readonly code?: string;
  constructor(kind: 'connection' | 'tls' | 'auth', message: string, reply?: Reply, code?: string) {
    super(message);
    this.name = 'ConnectionFailure';
    this.kind = kind;
    if (reply) this.reply = reply;
    if (code) this.code = code;
  }
}

export interface OutboundEnvelope {
  /** '' for the null sender. */
  from: string;
  to: string[];
  size: number;
  eightBitMime: boolean;
  /** RET and ENVID, sent when the peer advertises DSN. */
  dsn?: DsnEnvelope;
  /** Each recipient's NOTIFY and ORCPT, sent when the peer advertises DSN. */
  dsnRecipients?: ReadonlyMap<string, DsnRecipient>;
}

/** Per-recipient replies of one transaction, or a transport failure that left them unknown. */
export type SendOutcome = { kind: 'replies'; replies: Map<string, Reply> } | { kind: 'failure'; failure: ConnectionFailure };

interface SmtpError extends Error {
  code?: string;
  response?: string;
  responseCode?: number;
  command?: string;
  recipient?: string;
  rejectedErrors?: SmtpError[];
}

/** The extension keywords of an EHLO reply (every line after the first), upper-cased; none for a HELO reply or no reply. */
export function ehloKeywords(reply: string | false): Set<string> {
  if (!reply || !/^250[ -]/.test(reply)) return new Set();
  return new Set(reply.split(/\r?\n/).slice(1).map((line) => line.replace(/^\d{3}[ -]/, '').trim().split(/\s+/)[0]!.toUpperCase()).filter((keyword) => keyword !== ''));
}

/** The SASL mechanisms of an EHLO reply's AUTH line, upper-cased. */
export function ehloAuthMechanisms(reply: string | false): Set<string> {
  const line = reply ? reply.split(/\r?\n/).find((text) => /^250[ -]AUTH[ =]/i.test(text)) : undefined;
  return new Set(line ? line.slice(9).trim().toUpperCase().split(/\s+/) : []);
}

function replyOf(error: SmtpError): Reply | undefined {
  if (!error.responseCode) return undefined;
  return { code: error.responseCode, text: (error.response ?? `${error.responseCode} ${error.message}`).replace(/\r?\n/g, ' ').trim() };
}

export class OutboundConnection {
  readonly target: MxTarget;
  readonly tls: TlsOutcome;
  private readonly connection: SMTPConnection;
  private closed = false;
  private needsReset = false;
  private lastError: SmtpError | undefined;
  /** True when the peer advertised SMTPUTF8 (needed for non-ASCII addresses). */
  readonly supportsSmtpUtf8: boolean;
  /** True when the peer advertised DSN: it takes over the notices the sender asked for (RFC 3461 §5.2). */
  readonly supportsDsn: boolean;

  private constructor(connection: SMTPConnection, target: MxTarget, dane: 'dane-ee' | 'dane-ta' | 'unauthenticated' | undefined, ehloReply: string | false) {
    this.connection = connection;
    this.target = target;
    const keywords = ehloKeywords(ehloReply);
    this.supportsSmtpUtf8 = keywords.has('SMTPUTF8');
    this.supportsDsn = keywords.has('DSN');
    const tlsSocket = secureSocket(connection);
    this.tls = tlsSocket ? { kind: 'tls', version: tlsSocket.getProtocol() ?? 'unknown', cipher: tlsSocket.getCipher()?.name ?? 'unknown', ...(dane ? { dane } : {}) } : { kind: 'plain' };
    connection.on('error', (error: SmtpError) => {
      this.lastError = error;
      this.closed = true;
    });
    connection.on('end', () => (this.closed = true));
  }

  /** Connect, greet and apply the TLS policy; rejects with ConnectionFailure. */
  static async open(options: OutboundConnectionOptions): Promise<OutboundConnection> {
    try {
      return await OutboundConnection.attempt(options, false);
    } catch (error) {
      // Opportunistic TLS never makes mail undeliverable: a broken handshake falls back to plain text.
      if (options.tlsPolicy === 'opportunistic' && error instanceof ConnectionFailure && error.kind === 'tls') {
        return OutboundConnection.attempt(options, true);
      }
      throw error;
    }
  }

  private static async attempt(options: OutboundConnectionOptions, plainOnly: boolean): Promise<OutboundConnection> {
    const { target, tlsPolicy, dane } = options;
    const implicitTls = options.implicitTls ?? false;
    const socket = options.dial ? await options.dial() : undefined;
    const requireTls = tlsPolicy === 'required' || tlsPolicy === 'verify' || dane !== undefined || implicitTls;
    // SNI carries host names only (RFC 6066); a smarthost given as an address is verified against that address.
    const servername = net.isIP(target.name) ? undefined : target.name;
    const connection = new SMTPConnection({
      host: target.address,
      port: target.port,
      name: options.ehloName,
      ...(socket ? { connection: socket } : options.sourceAddress ? { localAddress: options.sourceAddress } : {}),
      ...(servername ? { servername } : {}),
      secure: implicitTls,
      requireTLS: requireTls && !implicitTls,
      ignoreTLS: tlsPolicy === 'none' || plainOnly,
      connectionTimeout: options.connectTimeoutMs ?? 30_000,
      greetingTimeout: options.connectTimeoutMs ?? 30_000,
      socketTimeout: options.socketTimeoutMs ?? 300_000,
      socketCloseTimeout: 0,
      logger: false,
      tls: {
        ...(servername ? { servername } : {}),
        // DANE authenticates by TLSA records, not by the web PKI (RFC 7672 §3).
        rejectUnauthorized: tlsPolicy === 'verify' && dane === undefined,
        minVersion: 'TLSv1.2',
        ...(tlsPolicy === 'verify' && options.trustedCa ? { ca: options.trustedCa } : {}),
      },
    });
    return new Promise((resolve, reject) => {
      let settled = false;
      const peer = `${target.name}[${target.address}]:${target.port}`;
      const fail = (error: SmtpError) => {
        if (settled) return;
        settled = true;
        connection.close();
        const reply = replyOf(error);
        if (error.code === 'EAUTH') return reject(new ConnectionFailure('auth', `AUTH refused by ${peer}: ${error.message}`, reply, error.code));
        // Certificate checks fail as socket errors during the handshake, not as ETLS.
        const isTls = error.code === 'ETLS' || /certificate|altname|\bTLS\b|SSL|handshake|STARTTLS/i.test(error.message);
        reject(new ConnectionFailure(isTls ? 'tls' : 'connection', isTls ? `TLS failure with ${peer}: ${error.message}` : `${peer}: ${error.message}`, reply, error.code));
      };
      connection.once('error', fail);
      connection.connect(() => {
        if (settled) return;
        if (requireTls && !connection.secure) return fail(Object.assign(new Error('STARTTLS required but the session is not encrypted'), { code: 'ETLS' }));
        let verdict: ReturnType<typeof verifyDane> | undefined;
        if (dane) {
          verdict = verifyDane(peerChain(secureSocket(connection)), dane, [target.name]);
          if (!verdict.ok) return fail(Object.assign(new Error(`DANE: ${verdict.reason} (TLSA of ${target.name})`), { code: 'ETLS' }));
        }
        // At 'connect' nodemailer's last reply is the (post-STARTTLS) EHLO reply: read through its public field,
        // not its private extension list (test/inbound/library-guard.test.ts checks this on the pinned version).
        const ehloReply = connection.lastServerResponse;
        const opened = () => {
          if (settled) return;
          settled = true;
          connection.off('error', fail);
          resolve(new OutboundConnection(connection, target, verdict?.ok ? verdict.usage : undefined, ehloReply));
        };
        if (!options.auth) return opened();
        if (!connection.secure) return fail(Object.assign(new Error('credentials are never sent on an unencrypted session'), { code: 'ETLS' }));
        const offered = ehloAuthMechanisms(ehloReply);
        const wanted = options.auth.mechanism;
        const method = wanted === 'auto' ? ['PLAIN', 'LOGIN'].find((mechanism) => offered.has(mechanism)) : offered.has(wanted) ? wanted : undefined;
        if (!method) return fail(Object.assign(new Error(`AUTH ${wanted === 'auto' ? 'PLAIN or LOGIN' : wanted} not offered (offered: ${[...offered].join(' ') || 'none'})`), { code: 'EAUTH' }));
        connection.login({ user: options.auth.user, pass: options.auth.pass, method }, (error) => (error ? fail(error as SmtpError) : opened()));
      });
    });
  }

  get usable(): boolean {
    return !this.closed;
  }

  /**
   * nodemailer gives every recipient the same NOTIFY and ORCPT; DSN gives each its own. Its RCPT
   * TO arguments are replaced for this transaction by the ones of the recipient just queued
   * (test/delivery/dsn-relay.test.ts shows them arriving at a sink).
   */
  private useRecipientDsn(envelope: OutboundEnvelope): void {
    const client = this.connection as unknown as { _recipientQueue: string[]; _getDsnRcptToArgs: () => string };
    client._getDsnRcptToArgs = () => {
      const address = client._recipientQueue[client._recipientQueue.length - 1];
      if (!this.supportsDsn || address === undefined) return '';
      return ` ${rcptDsnParameters({ address, ...envelope.dsnRecipients?.get(address) }).join(' ')}`;
    };
  }

  /** One transaction; per-recipient replies (a message-level reply applies to every recipient). */
  async send(envelope: OutboundEnvelope, body: Readable): Promise<SendOutcome> {
    if (this.needsReset) {
      const reset = await new Promise<SmtpError | null>((resolve) => this.connection.reset((error) => resolve(error)));
      if (reset) {
        this.close();
        return { kind: 'failure', failure: new ConnectionFailure('connection', `RSET failed: ${reset.message}`, replyOf(reset)) };
      }
    }
    this.needsReset = true;
    this.useRecipientDsn(envelope);
    // nodemailer xtext-encodes ENVID itself.
    const dsn = envelope.dsn ? { ...(envelope.dsn.ret ? { ret: envelope.dsn.ret } : {}), ...(envelope.dsn.envid ? { envid: envelope.dsn.envid } : {}) } : undefined;
    return new Promise((resolve) => {
      this.connection.send({ from: envelope.from, to: envelope.to, size: envelope.size, use8BitMime: envelope.eightBitMime, ...(dsn ? { dsn } : {}) }, body, (error, info) => {
        const replies = new Map<string, Reply>();
        if (error) {
          const smtpError = error as SmtpError;
          const reply = replyOf(smtpError);
          if (!reply || this.closed) {
            this.closed = true;
            body.destroy();
            return resolve({ kind: 'failure', failure: new ConnectionFailure('connection', smtpError.message, reply) });
          }
          for (const rejected of smtpError.rejectedErrors ?? []) {
            const rejectedReply = replyOf(rejected);
            if (rejected.recipient && rejectedReply) replies.set(rejected.recipient, rejectedReply);
          }
          for (const address of envelope.to) if (!replies.has(address)) replies.set(address, reply);
          body.destroy();
          return resolve({ kind: 'replies', replies });
        }
        this.needsReset = false;
        const accepted: Reply = { code: Number(info?.response?.slice(0, 3)) || 250, text: (info?.response ?? '250 OK').trim() };
        for (const rejected of info?.rejectedErrors ?? []) {
          const rejectedReply = replyOf(rejected as SmtpError);
          const recipient = (rejected as SmtpError).recipient;
          if (recipient && rejectedReply) replies.set(recipient, rejectedReply);
        }
        for (const address of envelope.to) if (!replies.has(address)) replies.set(address, accepted);
        resolve({ kind: 'replies', replies });
      });
    });
  }

  /** The error that closed the session, if one did. */
  get closeReason(): string | undefined {
    return this.lastError?.message;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.connection.quit();
  }
}

function secureSocket(connection: SMTPConnection): TLSSocket | undefined {
  const socket = connection._socket;
  return connection.secure && socket ? (socket as TLSSocket) : undefined;
}

/** The certificates the server sent, leaf first (the issuer links stop at a self-signed one). */
function peerChain(socket: TLSSocket | undefined): X509Certificate[] {
  const chain: X509Certificate[] = [];
  let current: DetailedPeerCertificate | undefined = socket?.getPeerCertificate(true);
  while (current?.raw && chain.length < 16) {
    chain.push(new X509Certificate(current.raw));
    const next: DetailedPeerCertificate | undefined = current.issuerCertificate;
    if (!next || next === current || next.fingerprint256 === current.fingerprint256) break;
    current = next;
  }
  return chain;
}
