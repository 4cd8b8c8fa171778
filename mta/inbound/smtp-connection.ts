// Our adaptation of smtp-server's SMTPConnection and SMTPServer, kept to public (documented
// or typed) members so a library upgrade that changes them fails the tests instead of
// silently changing behaviour:
// - Greeting delay: smtp-server 3.21 arms a fixed 100 ms timer in `init()` that calls
//   `connectionReady()` (early-talker detection). We arm our own timer with the listener's
//   `greetingDelay` right after `init()`, and `connectionReady()` does nothing until our timer
//   has fired (and runs once), so the library's timer becomes a no-op. Clients that
//   talk before the greeting still get the library's "421 You talk too soon". With a delay of
//   0 the greeting goes out at once; test/inbound/greeting-delay.test.ts measures both.
// - AUTH where TLS is required and the session is plain: answered `530 5.7.0` before the
//   mechanism or any argument is looked at (the library would answer 538 only when STARTTLS
//   is offered), and AUTH is not advertised in EHLO until the session is encrypted.
// - Replies whose text starts with an enhanced status code ("5.7.1 ...") are sent as is;
//   others get the library's code. Every 4xx/5xx counts toward `maxErrors` (then 421).
// - Command timeout: from each command, the next one (or the end of DATA) must complete
//   within `commandTimeout`, however slowly the client trickles bytes (the idle timeout,
//   smtp-server's `socketTimeout`, is reset by every byte).
// - Transfer rate (Postfix's smtpd_min_data_rate with per-request deadlines): from its first
//   byte, a command line or a DATA section must arrive within `dataRateGrace` plus one second
//   per `minDataRate` bytes received; a client that drips bytes is cut off with 421 4.4.2.
// - STARTTLS handshake: bounded like the implicit one (tls-handshake.ts); one that times out,
//   fails or is abandoned is reported once through `onHandshakeFailed`, and the session is
//   marked so it is not counted as a plain (tls_version="none") session.
// - Line hygiene (line-faults.ts): every byte passes through a BareLineFeedMarker before the
//   parser, and a command line with a bare LF, bare CR or NUL is answered 500 5.5.2.
// - MAIL/RCPT parameters are judged on the raw line against what EHLO advertised
//   (mail-parameters.ts) before the library parses them: 555 5.5.4 or 501 5.5.4.
// - Refusals the library makes itself (501 bad address syntax, 503 bad sequence, ...) are
//   counted as rejections like the relay's own.
// Private members of smtp-server used here (`_createParser`, `_onCommand`, `_onError`, `_closing`,
// `_closed`, `_handlerPending`, `_ready`, `_upgrading`, `_nextHandler`, `_server`, `_socket`) exist in the
// version pinned in package.json; test/inbound/library-guard.test.ts fails on any other version
// so they are checked again before an upgrade lands.
import { SMTPServer, type SMTPServerOptions, type SMTPServerSession } from 'smtp-server';
import { SMTPConnection, type SMTPConnectionOptions } from 'smtp-server/lib/smtp-connection.js';
import type net from 'node:net';
import type tls from 'node:tls';
import type { RejectionReason } from '../observe/metrics.ts';
import type { HandshakeFailureReason } from './tls-handshake.ts';
import { BareLineFeedMarker, commandLineFault, type CommandLineFault } from './line-faults.ts';
import { checkParameters, parameterTokens } from './mail-parameters.ts';

const ENHANCED_CODE = /^[245]\.\d{1,3}\.\d{1,3} /;

/** The SMTPConnection methods overridden or called here; a library without them fails at load. */
export const OVERRIDDEN_METHODS = ['init', 'connectionReady', 'send', 'close', 'upgrade', '_onClose', '_onError', '_onCommand', '_createParser', 'handler_EHLO', 'handler_AUTH', 'handler_MAIL', 'handler_RCPT'] as const;
for (const method of OVERRIDDEN_METHODS) {
  if (typeof SMTPConnection.prototype[method] !== 'function') {
    throw new Error(`smtp-server changed: SMTPConnection.${method} is gone; revisit mta/inbound/smtp-connection.ts`);
  }
}

/** RFC 5321 §4.2.2: 500 for a line that is not a command at all; 5.5.2 is "syntax error" (RFC 3463). */
const COMMAND_LINE_REPLIES: Record<CommandLineFault, string> = {
  'bare-line-feed': '5.5.2 Syntax error: command line not ended by CRLF',
  nul: '5.5.2 Syntax error: NUL character in command line',
  'bare-carriage-return': '5.5.2 Syntax error: bare CR in command line',
};

/** What a session needs from its listener, fixed when the session starts. */
export interface SessionPolicy {
  greetingDelayMs: number;
  commandTimeoutMs: number;
  /** Bytes per second a command line or DATA section must keep up, after `dataRateGraceMs`. */
  minDataRate: number;
  dataRateGraceMs: number;
  /** Time a STARTTLS handshake may take. */
  handshakeTimeoutMs: number;
  maxErrors: number;
  /** AUTH is refused with 530 until the session is encrypted. */
  authNeedsTls: boolean;
  /** No mechanism usable: AUTH is neither advertised nor accepted. */
  authDisabled: boolean;
  isAuthRateLimited(clientAddress: string): boolean;
  reject(reason: RejectionReason): void;
  /** Counts and logs an AUTH refused to a locked-out client; returns the 454 text, which says for how long. */
  onAuthRateLimited(clientAddress: string): string;
  onHandshakeFailed(reason: HandshakeFailureReason): void;
}

export class RelaySmtpConnection extends SMTPConnection {
  private readonly policy: SessionPolicy;
  private greetingDue = false;
  private greetingStarted = false;
  private errors = 0;
  private commandTimer: NodeJS.Timeout | undefined;
  /** The request (command line or DATA section) being received: since its first byte. */
  private transfer: { startedAt: number; bytes: number } | undefined;
  private rateTimer: NodeJS.Timeout | undefined;
  private handshakeTimer: NodeJS.Timeout | undefined;
  /** Set once a STARTTLS handshake did not complete: the session never became a usable one. */
  handshakeFailed = false;
  /** Set while the message is being stored, so the command timeout waits for the spool. */
  storing = false;
  /** Called once when the session's socket has closed. */
  onEnded: (() => void) | undefined;

  constructor(server: RelaySmtpServer, socket: net.Socket | tls.TLSSocket, options: SMTPConnectionOptions | undefined) {
    super(server, socket, options);
    this.policy = server.sessionPolicy;
  }

  override init(): void {
    super.init();
    setTimeout(() => {
      this.greetingDue = true;
      this.connectionReady();
    }, this.policy.greetingDelayMs).unref();
    this.armCommandTimer();
  }

  override connectionReady(next?: () => void): void {
    // The library's own fixed timer calls this too; only ours may start the greeting.
    if (!this.greetingDue || this.greetingStarted) return;
    this.greetingStarted = true;
    super.connectionReady(next);
  }

  /** Runs inside the library's constructor too (before this class's fields exist): no field reads here. */
  override _createParser(): ReturnType<SMTPConnection['_createParser']> {
    const parser = super._createParser();
    const marker = new BareLineFeedMarker();
    const write = parser.write.bind(parser) as (chunk: Buffer, callback?: (error?: Error | null) => void) => boolean;
    parser.write = ((chunk: Buffer, encodingOrCallback?: unknown, callback?: (error?: Error | null) => void) => {
      this.onBytesReceived(chunk.length);
      return write(marker.mark(chunk), typeof encodingOrCallback === 'function' ? (encodingOrCallback as typeof callback) : callback);
    }) as typeof parser.write;
    return parser;
  }

  override _onCommand(command: Buffer, callback?: () => void): void {
    this.armCommandTimer();
    const fault = this._ready && !this._upgrading && !this._nextHandler ? commandLineFault(command) : null;
    if (!fault) return super._onCommand(command, callback);
    this.policy.reject('bad_command');
    this.send(500, COMMAND_LINE_REPLIES[fault]);
    setImmediate(() => callback?.());
  }

  override handler_MAIL(command: Buffer, callback: () => void): void {
    if (this.refusedParameters('MAIL', command)) return callback();
    super.handler_MAIL(command, callback);
  }

  override handler_RCPT(command: Buffer, callback: () => void): void {
    if (this.refusedParameters('RCPT', command)) return callback();
    super.handler_RCPT(command, callback);
  }

  /** Answers a command whose parameters EHLO did not advertise (555) or that are malformed (501). */
  private refusedParameters(verb: 'MAIL' | 'RCPT', command: Buffer): boolean {
    const tokens = parameterTokens(command.toString());
    if (!tokens || tokens.length === 0) return false;
    const verdict = checkParameters(verb, tokens, { ehlo: this.openingCommand === 'EHLO', auth: this.authOffered() });
    if (verdict.ok) return false;
    this.policy.reject(verdict.code === 555 ? 'unsupported_parameter' : 'syntax');
    this.send(verdict.code, verdict.message);
    return true;
  }

  private authOffered(): boolean {
    return !this.policy.authDisabled && !(this.policy.authNeedsTls && !this.secure);
  }

  override handler_EHLO(command: Buffer, callback: () => void): void {
    if (this.authOffered()) return super.handler_EHLO(command, callback);
    const previous = this.session.disabledCommands;
    this.session.disabledCommands = [...(this._server.options.disabledCommands ?? []), 'AUTH'];
    try {
      super.handler_EHLO(command, callback);
    } finally {
      this.session.disabledCommands = previous;
    }
  }

  override handler_AUTH(command: Buffer, callback: () => void): void {
    if (this.policy.authNeedsTls && !this.secure) {
      // The mechanism and any initial response on this line are never parsed.
      this.policy.reject('tls_required');
      this.send(530, '5.7.0 Must issue a STARTTLS command first');
      return callback();
    }
    if (this.policy.authDisabled) {
      this.send(502, '5.5.1 Authentication not available');
      return callback();
    }
    if (this.policy.isAuthRateLimited(this.remoteAddress)) {
      // 454 and the session goes on (maxErrors still ends it): the client can show the reason.
      this.send(454, this.policy.onAuthRateLimited(this.remoteAddress));
      return callback();
    }
    super.handler_AUTH(command, callback);
  }

  override send(code: number, data?: string | string[] | null, context?: string | false): void {
    const ownCode = typeof data === 'string' && ENHANCED_CODE.test(data);
    super.send(code, data, ownCode ? false : context);
    // Every reply ends the request the client was sending; the next byte starts a new one.
    this.transfer = undefined;
    if (context === 'MESSAGE_TOO_BIG') this.policy.reject('message_too_large');
    // The library's own refusals ("Error: ..."); the relay's carry an enhanced code and count themselves.
    else if (code >= 500 && !ownCode) this.policy.reject(code === 503 ? 'bad_sequence' : 'syntax');
    if (code === 421) {
      this.clearCommandTimer();
      return;
    }
    if (code >= 400 && !this._closing) {
      this.errors++;
      if (this.errors >= this.policy.maxErrors) {
        this.policy.reject('too_many_errors');
        super.send(421, '4.7.0 Too many errors, closing connection', false);
      }
    }
  }

  override close(): void {
    this.clearCommandTimer();
    super.close();
  }

  override upgrade(callback: () => void, secureCallback?: () => void): void {
    this.handshakeTimer = setTimeout(() => {
      if (!this._upgrading || this._closed) return;
      this.handshakeFailure('timeout');
      // Nothing can be answered in the middle of a handshake: close.
      this._socket.destroy();
    }, this.policy.handshakeTimeoutMs);
    this.handshakeTimer.unref();
    super.upgrade(callback, () => {
      clearTimeout(this.handshakeTimer);
      secureCallback?.();
    });
  }

  override _onError(error: Error & { code?: string }): void {
    if (this._upgrading) this.handshakeFailure('error');
    super._onError(error);
  }

  private handshakeFailure(reason: HandshakeFailureReason): void {
    if (this.handshakeFailed) return;
    this.handshakeFailed = true;
    this.policy.onHandshakeFailed(reason);
  }

  override _onClose(): void {
    this.clearCommandTimer();
    if (this.rateTimer) clearTimeout(this.rateTimer);
    clearTimeout(this.handshakeTimer);
    if (this._upgrading && !this._closed) this.handshakeFailure('closed');
    super._onClose();
    const onEnded = this.onEnded;
    this.onEnded = undefined;
    onEnded?.();
  }

  private armCommandTimer(): void {
    this.clearCommandTimer();
    this.commandTimer = setTimeout(() => this.onCommandTimeout(), this.policy.commandTimeoutMs);
    this.commandTimer.unref();
  }

  private clearCommandTimer(): void {
    if (this.commandTimer) clearTimeout(this.commandTimer);
    this.commandTimer = undefined;
  }

  private onBytesReceived(count: number): void {
    if (this.transfer) {
      this.transfer.bytes += count;
      return;
    }
    this.transfer = { startedAt: Date.now(), bytes: count };
    if (!this.rateTimer) this.armRateTimer(this.policy.dataRateGraceMs);
  }

  private armRateTimer(delayMs: number): void {
    this.rateTimer = setTimeout(() => this.onRateCheck(), Math.max(1, Math.ceil(delayMs)));
    this.rateTimer.unref();
  }

  /** Lazily checked: the timer re-arms for the deadline the bytes received since have earned. */
  private onRateCheck(): void {
    this.rateTimer = undefined;
    const transfer = this.transfer;
    if (!transfer || this._closing || this._closed) return;
    // While the relay works (a handler, the spool) the client owes nothing.
    if (this.storing || this._handlerPending) return this.armRateTimer(this.policy.dataRateGraceMs);
    const deadline = transfer.startedAt + this.policy.dataRateGraceMs + (transfer.bytes * 1000) / this.policy.minDataRate;
    const left = deadline - Date.now();
    if (left > 0) return this.armRateTimer(left);
    this.policy.reject('too_slow');
    this.send(421, `4.4.2 Transfer slower than ${this.policy.minDataRate} bytes per second, closing connection`);
  }

  private onCommandTimeout(): void {
    if (this._closing || this._closed) return;
    if (this.storing || this._handlerPending) return this.armCommandTimer();
    this.policy.reject('timeout');
    this.send(421, '4.4.2 Command timeout, closing connection');
  }
}

/** An SMTPServer that never listens itself: InboundServer hands it accepted sockets. */
export class RelaySmtpServer extends SMTPServer {
  readonly sessionPolicy: SessionPolicy;
  private readonly connectionsBySession = new WeakMap<SMTPServerSession, RelaySmtpConnection>();

  constructor(options: SMTPServerOptions, sessionPolicy: SessionPolicy) {
    super(options);
    this.sessionPolicy = sessionPolicy;
  }

  override connect(socket: net.Socket | tls.TLSSocket, socketOptions?: SMTPConnectionOptions | null): void {
    this.connectSession(socket, socketOptions ?? undefined);
  }

  /** Starts a session on an accepted socket; `onEnded` runs once when it closes. */
  connectSession(socket: net.Socket | tls.TLSSocket, socketOptions: SMTPConnectionOptions | undefined, onEnded?: () => void): void {
    const connection = new RelaySmtpConnection(this, socket, socketOptions);
    connection.onEnded = onEnded;
    this.connectionsBySession.set(connection.session, connection);
    this.connections.add(connection);
    connection.on('error', (error: Error) => this.emit('error', error));
    connection.init();
  }

  connectionOf(session: SMTPServerSession): RelaySmtpConnection | undefined {
    return this.connectionsBySession.get(session);
  }
}
