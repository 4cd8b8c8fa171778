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
import { SMTPServer, type SMTPServerOptions, type SMTPServerSession } from 'smtp-server';
import { SMTPConnection, type SMTPConnectionOptions } from 'smtp-server/lib/smtp-connection.js';
import type net from 'node:net';
import type tls from 'node:tls';
import type { RejectionReason } from '../observe/metrics.ts';

const ENHANCED_CODE = /^[245]\.\d{1,3}\.\d{1,3} /;

if (typeof SMTPConnection.prototype.connectionReady !== 'function' || typeof SMTPConnection.prototype.init !== 'function') {
  throw new Error('smtp-server changed: SMTPConnection.init/connectionReady are gone; revisit mta/inbound/smtp-connection.ts');
}

/** What a session needs from its listener, fixed when the session starts. */
export interface SessionPolicy {
  greetingDelayMs: number;
  commandTimeoutMs: number;
  maxErrors: number;
  /** AUTH is refused with 530 until the session is encrypted. */
  authNeedsTls: boolean;
  /** No mechanism usable: AUTH is neither advertised nor accepted. */
  authDisabled: boolean;
  isAuthRateLimited(clientAddress: string): boolean;
  reject(reason: RejectionReason): void;
  onAuthRateLimited(): void;
}

export class RelaySmtpConnection extends SMTPConnection {
  private readonly policy: SessionPolicy;
  private greetingDue = false;
  private greetingStarted = false;
  private errors = 0;
  private commandTimer: NodeJS.Timeout | undefined;
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

  override _onCommand(command: Buffer, callback?: () => void): void {
    this.armCommandTimer();
    super._onCommand(command, callback);
  }

  override handler_EHLO(command: Buffer, callback: () => void): void {
    if (!this.policy.authDisabled && !(this.policy.authNeedsTls && !this.secure)) return super.handler_EHLO(command, callback);
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
      this.policy.onAuthRateLimited();
      this.send(421, '4.7.0 Too many failed authentication attempts, try again later');
      return callback();
    }
    super.handler_AUTH(command, callback);
  }

  override send(code: number, data?: string | string[] | null, context?: string | false): void {
    const ownCode = typeof data === 'string' && ENHANCED_CODE.test(data);
    super.send(code, data, ownCode ? false : context);
    if (context === 'MESSAGE_TOO_BIG') this.policy.reject('message_too_large');
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

  override _onClose(): void {
    this.clearCommandTimer();
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
