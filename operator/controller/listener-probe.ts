// The listener self-check probe: what a remote SMTP client sees on one listener address. It
// connects, reads the 220 banner, sends EHLO, upgrades with STARTTLS (or handshakes at once for
// implicit TLS), and judges the certificate (expiry, chain against the given CA or the system
// CAs, name against the listener's hostname) and AUTH (never offered on a plaintext channel;
// offered after TLS when the listener takes credentials). Every step has its own timeout; the
// result lists each step that ran with its verdict. No Kubernetes here: the caller says where.
import net from 'node:net';
import tls from 'node:tls';
import type { TlsMode } from '../api/smtp-listener.ts';

/** The probe's steps in the order they run; a step that cannot run (no TLS on the listener) is left out. */
export const PROBE_STEPS = ['connect', 'banner', 'ehlo', 'tls', 'expiry', 'chain', 'name', 'auth'] as const;
export type ProbeStep = (typeof PROBE_STEPS)[number];

export interface ProbeTarget {
  host: string;
  port: number;
  tlsMode: TlsMode;
  /** The name a client expects in the certificate (and sends as SNI); no name check without it. */
  hostname?: string;
  /** PEM CA certificates the chain must verify against; the system CAs when absent. */
  ca?: string;
  /** The listener takes credentials: AUTH must be offered once the session is encrypted. */
  expectAuth: boolean;
  stepTimeoutMs: number;
  /** The name the probe gives in EHLO. */
  clientName?: string;
  /** A certificate expiring within this many days passes with a warning (default 14). */
  expiryWarningDays?: number;
  now?: () => Date;
}

export interface StepVerdict {
  step: ProbeStep;
  ok: boolean;
  message: string;
}

export interface ProbeResult {
  ok: boolean;
  steps: StepVerdict[];
  /** The first line of the greeting, without its code. */
  banner?: string;
  /** Negotiated protocol (TLSv1.3) and cipher. */
  tls?: { version: string; cipher: string };
  certificate?: { subject: string; issuer: string; expires: string; daysLeft: number };
  /** Passing, but worth a warning (a certificate that expires soon). */
  warnings: string[];
}

interface Reply {
  code: number;
  lines: string[];
}

class ProbeFailure extends Error {
  readonly step: ProbeStep;
  constructor(step: ProbeStep, message: string) {
    super(message);
    this.step = step;
  }
}

/** Reads SMTP replies (possibly multi-line) from a socket, which may be swapped for its TLS upgrade. */
class ReplyReader {
  private buffer = '';
  private socket: net.Socket | undefined;
  private waiting: { resolve: (reply: Reply) => void; reject: (error: Error) => void } | undefined;
  private failure: Error | undefined;
  private readonly onData = (chunk: Buffer) => {
    this.buffer += chunk.toString('latin1');
    this.deliver();
  };
  private readonly onEnd = () => this.fail(new Error('the server closed the connection'));
  private readonly onError = (error: Error) => this.fail(error);

  attach(socket: net.Socket): void {
    this.detach();
    this.socket = socket;
    socket.on('data', this.onData).on('end', this.onEnd).on('error', this.onError);
  }

  detach(): void {
    this.socket?.off('data', this.onData).off('end', this.onEnd).off('error', this.onError);
    this.socket = undefined;
  }

  next(step: ProbeStep, timeoutMs: number, what: string): Promise<Reply> {
    return new Promise<Reply>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting = undefined;
        reject(new ProbeFailure(step, `no ${what} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiting = {
        resolve: (reply) => { clearTimeout(timer); resolve(reply); },
        reject: (error) => { clearTimeout(timer); reject(new ProbeFailure(step, `${what}: ${error.message}`)); },
      };
      this.deliver();
    });
  }

  private fail(error: Error): void {
    this.failure ??= error;
    this.deliver();
  }

  private deliver(): void {
    if (!this.waiting) return;
    const lines: string[] = [];
    let offset = 0;
    for (;;) {
      const newline = this.buffer.indexOf('\n', offset);
      if (newline < 0) break;
      const line = this.buffer.slice(offset, newline).replace(/\r$/, '');
      offset = newline + 1;
      lines.push(line);
      if (!/^\d{3}-/.test(line)) {
        this.buffer = this.buffer.slice(offset);
        const waiting = this.waiting;
        this.waiting = undefined;
        const code = /^\d{3}/.test(line) ? Number(line.slice(0, 3)) : 0;
        waiting.resolve({ code, lines: lines.map((l) => l.slice(4)) });
        return;
      }
    }
    if (this.failure) {
      const waiting = this.waiting;
      this.waiting = undefined;
      waiting.reject(this.failure);
    }
  }
}

function connect(target: ProbeTarget): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: target.host, port: target.port });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new ProbeFailure('connect', `no TCP connection to ${target.host}:${target.port} within ${target.stepTimeoutMs} ms`));
    }, target.stepTimeoutMs);
    socket.once('connect', () => {
      clearTimeout(timer);
      resolve(socket);
    });
    socket.once('error', (error: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(new ProbeFailure('connect', `${target.host}:${target.port}: ${error.code === 'ECONNREFUSED' ? 'connection refused' : error.message}`));
    });
  });
}

function handshake(socket: net.Socket, target: ProbeTarget, after: string): Promise<tls.TLSSocket> {
  return new Promise((resolve, reject) => {
    // Verification is judged after the handshake (chain, name, expiry as separate steps), so a bad certificate still shows what it is.
    const servername = target.hostname && net.isIP(target.hostname) === 0 ? target.hostname : undefined;
    const secure = tls.connect({ socket, servername, ca: target.ca, rejectUnauthorized: false, checkServerIdentity: () => undefined, minVersion: 'TLSv1.2' });
    const timer = setTimeout(() => {
      secure.destroy();
      reject(new ProbeFailure('tls', `no TLS handshake ${after} within ${target.stepTimeoutMs} ms`));
    }, target.stepTimeoutMs);
    secure.once('secureConnect', () => {
      clearTimeout(timer);
      resolve(secure);
    });
    secure.once('error', (error: Error & { reason?: string }) => {
      clearTimeout(timer);
      // OpenSSL errors carry a one-line reason ("wrong version number") beside a multi-line message.
      const reason = error.reason ?? error.message.trim();
      const hint = target.tlsMode === 'implicit' && /wrong version number|packet length too long|unexpected eof|socket disconnected/i.test(reason) ? ' (the port answers without TLS?)' : '';
      reject(new ProbeFailure('tls', `TLS handshake ${after} failed: ${reason}${hint}`));
    });
  });
}

function extensions(reply: Reply): string[] {
  return reply.lines.slice(1).map((line) => line.toUpperCase());
}

function advertisesAuth(ehlo: string[]): boolean {
  return ehlo.some((line) => line === 'AUTH' || line.startsWith('AUTH ') || line.startsWith('AUTH='));
}

async function command(socket: net.Socket, reader: ReplyReader, step: ProbeStep, line: string, timeoutMs: number): Promise<Reply> {
  socket.write(`${line}\r\n`);
  return reader.next(step, timeoutMs, `reply to ${line.split(' ')[0]}`);
}

/** Words for the OpenSSL verification codes a listener's certificate most often fails with. */
const CHAIN_ERRORS: Record<string, string> = {
  DEPTH_ZERO_SELF_SIGNED_CERT: 'the certificate is self-signed',
  SELF_SIGNED_CERT_IN_CHAIN: 'a self-signed certificate in the chain',
  UNABLE_TO_VERIFY_LEAF_SIGNATURE: 'the issuer is not a trusted CA and no intermediate was sent',
  UNABLE_TO_GET_ISSUER_CERT_LOCALLY: 'the issuer is not a trusted CA',
  CERT_HAS_EXPIRED: 'the certificate has expired',
  CERT_NOT_YET_VALID: 'the certificate is not valid yet',
};

function certificateVerdicts(secure: tls.TLSSocket, target: ProbeTarget, result: ProbeResult): StepVerdict[] {
  const peer = secure.getPeerCertificate(true);
  if (!peer || !peer.valid_to) return [{ step: 'chain', ok: false, message: 'the server sent no certificate' }];
  const now = (target.now ?? (() => new Date()))();
  const expires = new Date(peer.valid_to);
  const daysLeft = Math.floor((expires.getTime() - now.getTime()) / 86_400_000);
  const subject = peer.subject?.CN ? `CN=${peer.subject.CN}` : (peer.subjectaltname ?? '');
  result.certificate = { subject, issuer: peer.issuer?.CN ? `CN=${peer.issuer.CN}` : '', expires: expires.toISOString().replace(/\.\d{3}Z$/, 'Z'), daysLeft };
  const verdicts: StepVerdict[] = [];
  const warningDays = target.expiryWarningDays ?? 14;
  if (expires.getTime() <= now.getTime()) verdicts.push({ step: 'expiry', ok: false, message: `the certificate (${subject}) expired at ${result.certificate.expires}` });
  else if (new Date(peer.valid_from).getTime() > now.getTime()) verdicts.push({ step: 'expiry', ok: false, message: `the certificate (${subject}) is not valid before ${new Date(peer.valid_from).toISOString()}` });
  else {
    verdicts.push({ step: 'expiry', ok: true, message: `expires ${result.certificate.expires} (${daysLeft} days)` });
    if (daysLeft < warningDays) result.warnings.push(`the certificate (${subject}) expires in ${daysLeft} days, at ${result.certificate.expires}`);
  }
  // Node gives the OpenSSL code (a string at run time, though typed as Error).
  const code = secure.authorizationError ? String(secure.authorizationError) : undefined;
  const chainProblem = code ? `${code}${CHAIN_ERRORS[code] ? ` (${CHAIN_ERRORS[code]})` : ''}` : undefined;
  verdicts.push(chainProblem ? { step: 'chain', ok: false, message: `the certificate chain does not verify against ${target.ca ? "the CA of the listener's Secret" : 'the system CAs'}: ${chainProblem}` } : { step: 'chain', ok: true, message: `verified, issued by ${result.certificate.issuer}` });
  if (target.hostname) {
    const mismatch = tls.checkServerIdentity(target.hostname, peer);
    verdicts.push(mismatch ? { step: 'name', ok: false, message: `the certificate is not for ${target.hostname}: ${mismatch.message}` } : { step: 'name', ok: true, message: `valid for ${target.hostname}` });
  }
  return verdicts;
}

/** Probes one listener the way a remote client would; never throws. */
export async function probeListener(target: ProbeTarget): Promise<ProbeResult> {
  const result: ProbeResult = { ok: false, steps: [], warnings: [] };
  const pass = (step: ProbeStep, message: string) => result.steps.push({ step, ok: true, message });
  const reader = new ReplyReader();
  const sockets: net.Socket[] = [];
  const timeout = target.stepTimeoutMs;
  const clientName = target.clientName ?? 'vmta-self-check.invalid';
  try {
    let socket = await connect(target);
    sockets.push(socket);
    pass('connect', `connected to ${target.host}:${target.port}`);
    let encrypted: tls.TLSSocket | undefined;
    if (target.tlsMode === 'implicit') {
      encrypted = await handshake(socket, target, 'on connect (implicit TLS)');
      socket = encrypted;
      sockets.push(socket);
    }
    reader.attach(socket);
    const greeting = await reader.next('banner', timeout, '220 greeting');
    if (greeting.code !== 220) throw new ProbeFailure('banner', `the greeting is not 220: ${greeting.code} ${greeting.lines.join(' ')}`);
    result.banner = greeting.lines[0] ?? '';
    pass('banner', `220 ${result.banner}`);
    let ehlo = await command(socket, reader, 'ehlo', `EHLO ${clientName}`, timeout);
    if (ehlo.code !== 250) throw new ProbeFailure('ehlo', `EHLO answered ${ehlo.code} ${ehlo.lines.join(' ')}`);
    pass('ehlo', `250 with ${extensions(ehlo).length} extensions`);
    const authInClear = !encrypted && advertisesAuth(extensions(ehlo));
    if (target.tlsMode === 'starttls') {
      if (!extensions(ehlo).includes('STARTTLS')) throw new ProbeFailure('tls', 'STARTTLS is not offered in the EHLO reply');
      const ready = await command(socket, reader, 'tls', 'STARTTLS', timeout);
      if (ready.code !== 220) throw new ProbeFailure('tls', `STARTTLS answered ${ready.code} ${ready.lines.join(' ')}`);
      reader.detach();
      encrypted = await handshake(socket, target, 'after STARTTLS');
      socket = encrypted;
      sockets.push(socket);
      reader.attach(socket);
      ehlo = await command(socket, reader, 'ehlo', `EHLO ${clientName}`, timeout);
      if (ehlo.code !== 250) throw new ProbeFailure('ehlo', `EHLO after STARTTLS answered ${ehlo.code} ${ehlo.lines.join(' ')}`);
    }
    if (encrypted) {
      const cipher = encrypted.getCipher();
      result.tls = { version: encrypted.getProtocol() ?? 'unknown', cipher: cipher.standardName ?? cipher.name };
      pass('tls', `${result.tls.version} ${result.tls.cipher}`);
      result.steps.push(...certificateVerdicts(encrypted, target, result));
    }
    if (authInClear) result.steps.push({ step: 'auth', ok: false, message: 'AUTH is offered before TLS: credentials would cross the network in clear' });
    else if (target.expectAuth && !advertisesAuth(extensions(ehlo))) result.steps.push({ step: 'auth', ok: false, message: `AUTH is not offered${encrypted ? ' after TLS' : ''} though the listener takes credentials` });
    else pass('auth', target.expectAuth ? `AUTH offered only after TLS (${extensions(ehlo).find((line) => line.startsWith('AUTH')) ?? ''})` : 'no AUTH on a plaintext channel');
    socket.write('QUIT\r\n');
  } catch (error) {
    const failure = error instanceof ProbeFailure ? error : new ProbeFailure('connect', error instanceof Error ? error.message : String(error));
    result.steps.push({ step: failure.step, ok: false, message: failure.message });
  } finally {
    reader.detach();
    for (const socket of sockets.reverse()) socket.destroy();
  }
  result.ok = result.steps.every((verdict) => verdict.ok);
  return result;
}
