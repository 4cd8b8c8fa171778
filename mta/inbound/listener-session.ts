// One listener's configuration snapshot (policy compiled, users and certificates read) and the
// smtp-server handlers that apply it to a session: AUTH against the policy's users, MAIL FROM
// and RCPT TO through the relay policy, DATA collected (size, smuggling) and handed to the
// MessageAcceptor. Sessions keep the snapshot they started with; a reload builds a new one.
// Every refusal of a command or message is counted and logged (through the EventLog, so a flood
// costs a bounded number of lines) with the client address, the reason and the reply sent.
import type tls from 'node:tls';
import type { SMTPServerAddress, SMTPServerAuthentication, SMTPServerAuthenticationResponse, SMTPServerDataStream, SMTPServerSession } from 'smtp-server';
import type { ListenerConfig, RelayPolicyConfig, RuntimeConfig } from '../config/schema.ts';
import { EventLog } from '../observe/event-log.ts';
import type { Logger } from '../observe/log.ts';
import type { RejectionReason, RelayMetrics } from '../observe/metrics.ts';
import { parseMailbox, type Mailbox } from './address.ts';
import type { AuthFailureLimiter } from './auth-failures.ts';
import { CredentialStore } from './credentials.ts';
import { missingCredentialsProblem, usableMechanisms } from '../config/user-secrets.ts';
import { MAX_LINE_OCTETS, type ContentFault } from './line-faults.ts';
import { readMessage } from './message-reader.ts';
import { compileRanges, type AddressRange } from '../config/address-range.ts';
import { compileRelayPolicy, decideRecipient, decideSender, sessionRelayGrant, userSenderDomains } from './relay-policy.ts';
import type { RelayGrant } from '../spool/types.ts';
import { RelaySmtpServer } from './smtp-connection.ts';
import { loadTlsCredentials, type ReadFile, type TlsCredentials } from './tls-credentials.ts';
import { preSessionTimeoutMs } from './tls-handshake.ts';
import type { AcceptedRecipient, AcceptedTransaction, MessageAcceptor } from './transaction.ts';
import type { SessionDispatch } from './admitted-session.ts';
import type { PoolSuppression } from '../suppression/pool-suppression.ts';
import { dsnEnvelope, dsnRecipient } from '../delivery/dsn-request.ts';

export interface InboundDeps {
  accept: MessageAcceptor;
  metrics: RelayMetrics;
  logger: Logger;
  /** Where refusal lines go (rate-limited per reason); one per process, kept across reloads. */
  events?: EventLog;
  /** Reads certificate, key and user files (tests may inject failures). */
  readFile?: ReadFile;
  /** False while the spool's free space is below its floor: MAIL FROM is answered 452 (omitted: always room). */
  spoolHasRoom?: () => boolean;
  /** The pool's suppression list: in mode refuse a suppressed recipient gets 550 at RCPT TO (a session process asks the primary). */
  suppression?: { refusal(address: string): SuppressionRefusal | Promise<SuppressionRefusal> };
  /** Failed AUTH counts of every listener (the primary shares it with its session processes); omitted: the server keeps its own. */
  authFailures?: AuthFailureLimiter;
  /** The primary's session processes, when it has any: admitted sockets go to them. */
  sessionWorkers?: SessionDispatch;
  /** Told of every accepted connection (the relay's IdleMemoryRelease); omitted: nothing is told. */
  memoryRelease?: { noteWork(): void };
}

type SuppressionRefusal = ReturnType<PoolSuppression['refusal']>;

export interface ListenerSnapshot {
  config: ListenerConfig;
  hostname: string;
  tls: TlsCredentials | null;
  trustedProxies: AddressRange[];
  smtp: RelaySmtpServer;
}

/** Per-session facts the handlers need beyond smtp-server's session. */
interface SessionFacts {
  tlsVersion: string;
  logger: Logger;
}

const TRANSMISSION_TYPES = new Set(['SMTP', 'ESMTP', 'ESMTPS', 'ESMTPA', 'ESMTPSA']);

/**
 * Replies at the end of DATA to content that is refused as a whole. 5.6.11 is IANA's code for
 * invalid CR/LF use; NUL and over-long lines are failures of the transaction (RFC 5321 §4.2.3:
 * 554 after DATA), not of a mailbox, and 5.6.0 says "content" (RFC 3463).
 */
const CONTENT_REFUSALS: Record<ContentFault, { code: number; message: string; reason: RejectionReason }> = {
  'bare-line-ending': { code: 550, message: '5.6.11 Bare CR or LF in message not allowed', reason: 'smuggling' },
  nul: { code: 554, message: '5.6.0 NUL character in message not allowed', reason: 'smuggling' },
  'line-too-long': { code: 554, message: `5.6.0 Message line longer than ${MAX_LINE_OCTETS} octets not allowed (RFC 5322 2.1.1)`, reason: 'line_too_long' },
};

function smtpError(code: number, message: string): Error & { responseCode: number } {
  return Object.assign(new Error(message), { responseCode: code });
}

export async function buildListenerSnapshot(config: RuntimeConfig, listener: ListenerConfig, deps: InboundDeps, limiter: AuthFailureLimiter): Promise<ListenerSnapshot> {
  const policyConfig = config.relayPolicies.find((policy) => policy.name === listener.relayPolicy);
  if (!policyConfig) throw new Error(`listener "${listener.name}": no relay policy named "${listener.relayPolicy}"`);
  const tlsCredentials = await loadTlsCredentials(listener, deps.readFile);
  const users = policyConfig.users ? await CredentialStore.load(policyConfig.users.secretPath, deps.readFile).catch((error: Error) => Promise.reject(new Error(`listener "${listener.name}" relay policy "${policyConfig.name}" users.secretPath: ${error.message}`))) : CredentialStore.empty();
  const policy = compileRelayPolicy(policyConfig);
  const hostname = listener.hostname ?? config.hostname;
  // An AUTH-required listener without usable credentials refuses the whole config (user-secrets.ts).
  const noCredentials = missingCredentialsProblem(listener.auth, policyConfig, users.count(), policyConfig.users?.secretPath ?? '');
  if (noCredentials) throw new Error(`listener "${listener.name}" ${noCredentials}`);
  const mechanisms = usableMechanisms(listener.auth.mechanisms, users.count());
  const authDisabled = mechanisms.length === 0 || users.size === 0;
  const labels = { listener: listener.name };
  const reject = (reason: RejectionReason) => deps.metrics.rejections.inc({ ...labels, reason });
  const events = deps.events ?? new EventLog(deps.logger);
  const sessions = new WeakMap<SMTPServerSession, SessionFacts>();
  const factsOf = (session: SMTPServerSession): SessionFacts => {
    let facts = sessions.get(session);
    if (!facts) {
      facts = { tlsVersion: 'none', logger: deps.logger.child({ listener: listener.name, client: session.remoteAddress, session: session.id }) };
      sessions.set(session, facts);
    }
    return facts;
  };
  const userOf = (session: SMTPServerSession): string | undefined => (typeof session.user === 'string' ? session.user : undefined);
  /** Counts, logs ("refused: relay denied ... client=...") and returns the error smtp-server replies with. */
  const refuse = (session: SMTPServerSession, reason: RejectionReason, code: number, message: string, fields: Record<string, unknown> = {}): Error => {
    reject(reason);
    const user = userOf(session);
    events.write(`refusal ${reason}`, 'info', { reason, reply: `${code} ${message}`, ...(user === undefined ? {} : { user }), ...fields }, `refused: ${reason.replaceAll('_', ' ')}`, factsOf(session).logger);
    return smtpError(code, message);
  };
  const lockoutReply = (client: string): string => {
    const minutes = Math.max(1, Math.ceil(limiter.lockedForMs(client, listener.auth.maxFailures, listener.auth.failureWindow) / 60_000));
    return `4.7.0 Too many failed authentication attempts from ${client}; AUTH is refused on every listener for ${minutes} more minute(s)`;
  };

  const senderDomainsOf = (user: string): readonly string[] => userSenderDomains(policyConfig, user);

  const onAuth = (auth: SMTPServerAuthentication, session: SMTPServerSession, callback: (err: Error | null | undefined, response?: SMTPServerAuthenticationResponse) => void): void => {
    const { maxFailures, failureWindow } = listener.auth;
    const client = session.remoteAddress;
    const username = auth.username ?? '';
    const verify = async (): Promise<boolean> => {
      if (auth.method === 'CRAM-MD5') return users.verifyCramMd5(username, (secret) => auth.validatePassword(secret));
      return users.verifyPassword(username, auth.password ?? '');
    };
    verify().then(
      (ok) => {
        const logger = factsOf(session).logger;
        if (ok) {
          deps.metrics.authAttempts.inc({ ...labels, mechanism: auth.method, result: 'success' });
          logger.info({ user: username, mechanism: auth.method }, 'authenticated');
          return callback(null, { user: username });
        }
        deps.metrics.authAttempts.inc({ ...labels, mechanism: auth.method, result: 'failure' });
        if (limiter.recordFailure(client, maxFailures, failureWindow)) {
          reject('auth_rate_limited');
          const reply = lockoutReply(client);
          events.write('lockout', 'warn', { user: username, mechanism: auth.method, failures: maxFailures, windowSeconds: failureWindow / 1000, reply: `454 ${reply}` }, `client locked out: ${maxFailures} failed AUTH attempts within ${failureWindow / 1000}s; AUTH refused on every listener until the oldest ages out`, logger);
          // 454 (RFC 4954: temporary failure), not 421: a client that tries its next mechanism
          // (Python's smtplib does) reads this reason instead of "connection unexpectedly closed".
          return callback(null, { responseCode: 454, message: reply });
        }
        events.write('refusal auth_failed', 'warn', { user: username, mechanism: auth.method, reply: '535 5.7.8 Authentication credentials invalid' }, 'authentication failed', logger);
        callback(null, { responseCode: 535, message: '5.7.8 Authentication credentials invalid' });
      },
      () => callback(smtpError(454, '4.7.0 Temporary authentication failure')),
    );
  };

  const onMailFrom = (address: SMTPServerAddress, session: SMTPServerSession, callback: (err?: Error | null) => void): void => {
    let mailFrom: Mailbox | null = null;
    if (address.address !== '') {
      const parsed = parseMailbox(address.address);
      if (!parsed.ok) return callback(refuse(session, 'syntax', 501, `5.1.7 Bad sender address syntax: ${parsed.error}`, { mailFrom: address.address }));
      mailFrom = parsed.mailbox;
    }
    if (deps.spoolHasRoom?.() === false) return callback(refuse(session, 'insufficient_storage', 452, '4.3.1 Insufficient system storage, try again later', { mailFrom: address.address }));
    const user = userOf(session);
    const decision = decideSender({
      listener,
      user,
      userSenderDomains: user === undefined ? [] : senderDomainsOf(user),
      secure: session.secure,
      mailFrom,
      smtpUtf8: session.envelope.smtpUtf8 === true,
    });
    if (!decision.ok) return callback(refuse(session, decision.reason, decision.code, decision.message, { mailFrom: address.address }));
    callback();
  };

  const onRcptTo = (address: SMTPServerAddress, session: SMTPServerSession, callback: (err?: Error | null) => void): void => {
    const parsed = parseMailbox(address.address);
    if (!parsed.ok) return callback(refuse(session, 'syntax', 501, `5.1.3 Bad recipient address syntax: ${parsed.error}`, { recipient: address.address }));
    const already = session.envelope.rcptTo.some((rcpt) => rcpt.address.toLowerCase() === address.address.toLowerCase());
    if (!already && session.envelope.rcptTo.length >= listener.limits.maxRecipients) return callback(refuse(session, 'too_many_recipients', 452, '4.5.3 Too many recipients', { recipient: address.address }));
    const decision = decideRecipient({ policy, user: userOf(session), clientAddress: session.remoteAddress, recipient: parsed.mailbox, smtpUtf8: session.envelope.smtpUtf8 === true });
    if (!decision.ok) return callback(refuse(session, decision.reason, decision.code, decision.message, { mailFrom: session.envelope.mailFrom ? session.envelope.mailFrom.address : '', recipient: address.address }));
    const answer = (suppressed: SuppressionRefusal): void => {
      if (suppressed) return callback(refuse(session, 'suppressed', suppressed.code, suppressed.message, { recipient: address.address }));
      callback();
    };
    const suppressed = deps.suppression?.refusal(parsed.mailbox.address);
    if (suppressed instanceof Promise) {
      suppressed.then(answer, (error: unknown) => {
        factsOf(session).logger.error({ err: error, recipient: address.address }, 'suppression list check failed');
        callback(smtpError(451, '4.3.0 Local error checking the recipient; try again later'));
      });
    } else answer(suppressed);
  };

  const onData = (stream: SMTPServerDataStream, session: SMTPServerSession, callback: (err?: Error | null, message?: string) => void): void => {
    const facts = factsOf(session);
    const connection = smtp.connectionOf(session);
    readMessage(stream, listener.limits.maxMessageSize).then(async (result) => {
      if (result.kind === 'too-large') return callback(refuse(session, 'message_too_large', 552, `5.3.4 Message size exceeds fixed maximum message size ${listener.limits.maxMessageSize}`));
      if (result.kind === 'malformed') {
        const refusal = CONTENT_REFUSALS[result.fault];
        return callback(refuse(session, refusal.reason, refusal.code, refusal.message, { fault: result.fault }));
      }
      if (result.kind === 'aborted') return callback(smtpError(451, '4.3.0 Message not received in full'));
      const transaction = toTransaction(session, policyConfig, listener.name, sessionRelayGrant(policy, userOf(session), session.remoteAddress) ?? 'relay-recipient');
      if (connection) connection.storing = true;
      try {
        const { queueId } = await deps.accept(transaction, result.message);
        deps.metrics.messagesReceived.inc(labels);
        deps.metrics.bytesReceived.inc(labels, result.message.length);
        facts.logger.info({ queueId, user: transaction.user, recipients: transaction.recipients.length, bytes: result.message.length }, 'message accepted');
        callback(null, `2.0.0 Ok: queued as ${queueId}`);
      } catch (error) {
        facts.logger.error({ err: error }, 'message could not be stored');
        reject('spool_failure');
        callback(smtpError(451, '4.3.0 Local error, message not queued; try again later'));
      } finally {
        if (connection) connection.storing = false;
      }
    });
  };

  const onSecure = (socket: tls.TLSSocket, session: SMTPServerSession, callback: (err?: Error | null) => void): void => {
    factsOf(session).tlsVersion = socket.getProtocol() ?? 'unknown';
    callback();
  };

  const onClose = (session: SMTPServerSession): void => {
    // Counted in vmta_inbound_tls_handshake_failures_total instead (see onHandshakeFailed).
    if (smtp.connectionOf(session)?.handshakeFailed) return;
    const facts = factsOf(session);
    deps.metrics.inboundConnections.inc({ ...labels, tls_mode: listener.tls.mode, tls_version: facts.tlsVersion });
  };

  const smtp: RelaySmtpServer = new RelaySmtpServer(
    {
      name: hostname,
      logger: false,
      disableReverseLookup: true,
      secure: listener.tls.mode === 'implicit',
      ...(tlsCredentials
        ? {
            minVersion: tlsCredentials.minVersion,
            SNICallback: (serverName: string, cb: (err: Error | null, context?: tls.SecureContext) => void) =>
              cb(null, tlsCredentials.sniContexts.get(serverName.toLowerCase()) ?? tlsCredentials.defaultContext),
          }
        : {}),
      hideSTARTTLS: listener.tls.mode !== 'starttls',
      disabledCommands: [...(listener.tls.mode === 'starttls' ? [] : ['STARTTLS']), ...(authDisabled ? ['AUTH'] : [])],
      hideENHANCEDSTATUSCODES: false,
      // DSN is honoured (mta/delivery/dsn.ts) and passed on; REQUIRETLS is not, so not advertised: its parameter is 555.
      hideDSN: false,
      hideREQUIRETLS: true,
      allowInsecureAuth: true,
      authOptional: true,
      maxAllowedUnauthenticatedCommands: false,
      authMethods: authDisabled ? ['PLAIN'] : mechanisms,
      size: listener.limits.maxMessageSize,
      socketTimeout: listener.limits.idleTimeout,
      closeTimeout: 1000,
      onAuth,
      onMailFrom,
      onRcptTo,
      onData,
      onSecure: onSecure as never,
      onClose,
    },
    {
      greetingDelayMs: listener.limits.greetingDelay,
      commandTimeoutMs: listener.limits.commandTimeout,
      minDataRate: listener.limits.minDataRate,
      dataRateGraceMs: listener.limits.dataRateGrace,
      handshakeTimeoutMs: preSessionTimeoutMs(listener.limits),
      maxErrors: listener.limits.maxErrors,
      authNeedsTls: policyConfig.requireTlsForAuth || listener.tls.required,
      authDisabled,
      isAuthRateLimited: (client) => limiter.isLimited(client, listener.auth.maxFailures, listener.auth.failureWindow),
      reject,
      onAuthRateLimited: (client) => {
        reject('auth_rate_limited');
        deps.metrics.authAttempts.inc({ ...labels, mechanism: 'none', result: 'rate_limited' });
        const reply = lockoutReply(client);
        events.write('refusal auth_rate_limited', 'info', { reason: 'auth_rate_limited', reply: `454 ${reply}` }, 'refused: AUTH from a locked-out client', deps.logger.child({ listener: listener.name, client }));
        return reply;
      },
      onHandshakeFailed: (reason) => deps.metrics.tlsHandshakeFailures.inc({ ...labels, tls_mode: 'starttls', reason }),
    },
  );
  if (tlsCredentials) smtp.secureContext.set('*', tlsCredentials.defaultContext);
  smtp.on('error', (error: Error) => deps.logger.debug({ listener: listener.name, err: error }, 'smtp session error'));

  return {
    config: listener,
    hostname,
    tls: tlsCredentials,
    trustedProxies: compileRanges(listener.proxyProtocol.trustedCidrs),
    smtp,
  };
}

function toTransaction(session: SMTPServerSession, policy: RelayPolicyConfig, listener: string, relayGrant: RelayGrant): AcceptedTransaction {
  const envelope = session.envelope;
  const mailFromText = envelope.mailFrom ? envelope.mailFrom.address : '';
  const mailFrom = mailFromText === '' ? '' : (() => {
    const parsed = parseMailbox(mailFromText);
    return parsed.ok ? parsed.mailbox.address : mailFromText;
  })();
  const recipients = new Map<string, AcceptedRecipient>();
  for (const rcpt of envelope.rcptTo) {
    const parsed = parseMailbox(rcpt.address);
    if (!parsed.ok) continue;
    const key = parsed.mailbox.address.toLowerCase();
    if (!recipients.has(key)) recipients.set(key, { address: parsed.mailbox.address, domain: parsed.mailbox.domain, ...dsnRecipient((rcpt as { dsn?: { notify?: string[]; orcpt?: string } }).dsn) });
  }
  const dsn = dsnEnvelope((envelope as { dsn?: { ret?: string | null; envid?: string | null } }).dsn);
  const cipher = session.tlsOptions || undefined;
  const protocol = TRANSMISSION_TYPES.has(session.transmissionType) ? (session.transmissionType as AcceptedTransaction['protocol']) : 'ESMTP';
  return {
    listener,
    clientAddress: session.remoteAddress,
    ...(session.clientHostname && !session.clientHostname.startsWith('[') ? { clientHostname: session.clientHostname } : {}),
    heloName: session.hostNameAppearsAs || '',
    protocol,
    ...(cipher ? { tls: { version: cipher.version ?? 'unknown', cipher: cipher.name } } : {}),
    ...(typeof session.user === 'string' ? { user: session.user } : {}),
    relayGrant,
    mailFrom,
    recipients: [...recipients.values()],
    ...(dsn ? { dsn } : {}),
    eightBitMime: envelope.bodyType === '8bitmime',
    smtpUtf8: envelope.smtpUtf8 === true,
    policy,
  };
}
