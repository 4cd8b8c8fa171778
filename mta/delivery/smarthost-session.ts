// Opening a session to a smarthost route (a submission server, an ESP): the login read from its
// Secret, each port of the fallback list in order (the remembered one first, smarthost-memory.ts)
// on each host address, TLS always (STARTTLS or implicit) and AUTH only once encrypted.
// What falls through to the next port: refused, silent (no connection or no greeting within
// connectTimeout), a refused greeting or EHLO, a broken connection, and TLS that cannot be set up
// (STARTTLS not offered or refused, a failed handshake or certificate check): a network that blocks
// 587 or strips STARTTLS is passed by 2525 or 465. What does not: refused credentials (535) or no
// usable AUTH mechanism. Those stop the session at once (no other port or host is tried with
// credentials the server just refused) and defer the queue with 4.7.8. The refused login is not
// offered again until reprobeAfter (retries in between defer without connecting, so the server
// does not lock the relay out) or until the Secret changes: every session rereads it, so a fixed
// Secret is used at the next retry. bounceAfter bounces the messages, like any other deferral.
// A VirtualMTA with egress proxies reaches the smarthost through them (`dial`), TLS and AUTH end
// to end over the proxied socket, so the ESP sees the VirtualMTA's address.
import { readFile } from 'node:fs/promises';
import net from 'node:net';
import type { SmarthostConfig, VirtualMtaConfig } from '../config/schema.ts';
import type { Logger } from '../observe/log.ts';
import { ConnectionFailure, OutboundConnection, type MxTarget } from './outbound-connection.ts';
import { classifyFailure, type Classification } from './reply-classification.ts';
import { readSmarthostLogin, type SmarthostLogin } from './smarthost-credentials.ts';
import type { PortFallback, SmarthostMemory } from './smarthost-memory.ts';

export interface SmarthostSessionInputs {
  route: SmarthostConfig;
  memory: SmarthostMemory;
  vmta: Pick<VirtualMtaConfig, 'name' | 'hostname' | 'sourceAddress'>;
  domain: string;
  resolveHost(host: string): Promise<string[]>;
  now(): number;
  logger: Logger;
  /** Told of each port that failed, and why ('auth': a refused login). */
  portFailed(reason: PortFallback['reason'] | 'auth'): void;
  /** Opens the TCP connection to each host and port instead of a direct connect (the VirtualMTA's egress proxies); TLS and AUTH then run over it. */
  dial?: (target: MxTarget) => Promise<net.Socket>;
}

export type SmarthostSession =
  | { ok: true; connection: OutboundConnection; fallbacks: PortFallback[] }
  | { ok: false; classification: Classification; fallbacks: PortFallback[]; target?: MxTarget };

function fallbackReason(failure: ConnectionFailure): PortFallback['reason'] {
  if (failure.kind === 'tls') return 'tls';
  if (failure.code === 'ECONNREFUSED' || /ECONNREFUSED/.test(failure.message)) return 'refused';
  if (failure.code === 'ETIMEDOUT') return 'timeout';
  if (failure.reply) return 'greeting';
  return 'connection';
}

async function hostAddresses(inputs: SmarthostSessionInputs): Promise<{ targets: { host: string; address: string }[]; problems: string[] }> {
  const family = inputs.vmta.sourceAddress ? net.isIP(inputs.vmta.sourceAddress) : 0;
  const targets: { host: string; address: string }[] = [];
  const problems: string[] = [];
  for (const host of inputs.route.hosts) {
    try {
      const addresses = (await inputs.resolveHost(host)).filter((address) => family === 0 || net.isIP(address) === family);
      if (addresses.length === 0) problems.push(`${host}: no address of the source address family`);
      for (const address of addresses) targets.push({ host, address });
    } catch (error) {
      problems.push((error as Error).message);
    }
  }
  return { targets, problems };
}

export async function openSmarthostSession(inputs: SmarthostSessionInputs): Promise<SmarthostSession> {
  const { route, vmta, logger } = inputs;
  let login: SmarthostLogin | undefined;
  let trustedCa: Buffer | undefined;
  try {
    if (route.auth) login = await readSmarthostLogin(route.auth.secretPath);
  } catch (error) {
    return { ok: false, fallbacks: [], classification: classifyFailure({ kind: 'auth', message: (error as Error).message }) };
  }
  const held = login && inputs.memory.heldLogin(route, login, inputs.now());
  if (held) return { ok: false, fallbacks: [], classification: classifyFailure({ kind: 'auth', message: held }) };
  try {
    if (route.tlsPolicy === 'verify' && route.caFile) trustedCa = await readFile(route.caFile);
  } catch (error) {
    return { ok: false, fallbacks: [], classification: classifyFailure({ kind: 'tls', message: `smarthost caFile: cannot read ${route.caFile}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}` }) };
  }
  const { targets, problems } = await hostAddresses(inputs);
  if (targets.length === 0) return { ok: false, fallbacks: [], classification: classifyFailure({ kind: 'dns-temporary', message: `smarthost ${route.hosts.join(', ')}: ${problems.join('; ')}` }) };

  const plan = inputs.memory.plan(route, vmta.sourceAddress, inputs.now());
  const fallbacks = [...plan.remembered];
  let lastTarget: MxTarget | undefined;
  for (const index of plan.order) {
    const entry = route.ports[index]!;
    for (const { host, address } of targets) {
      const target = { name: host, address, port: entry.port };
      lastTarget = target;
      try {
        const connection = await OutboundConnection.open({
          target,
          ehloName: vmta.hostname,
          tlsPolicy: route.tlsPolicy,
          implicitTls: entry.tls === 'implicit',
          connectTimeoutMs: route.connectTimeout,
          ...(login && route.auth ? { auth: { ...login, mechanism: route.auth.mechanism } } : {}),
          ...(vmta.sourceAddress ? { sourceAddress: vmta.sourceAddress } : {}),
          ...(trustedCa ? { trustedCa } : {}),
          ...(inputs.dial ? { dial: () => inputs.dial!(target) } : {}),
        });
        inputs.memory.worked(route, vmta.sourceAddress, index, fallbacks, inputs.now());
        if (login) inputs.memory.loginAccepted(route);
        return { ok: true, connection, fallbacks };
      } catch (error) {
        const failure = error instanceof ConnectionFailure ? error : new ConnectionFailure('connection', (error as Error).message);
        if (failure.kind === 'auth') {
          inputs.portFailed('auth');
          if (login) inputs.memory.loginRefused(route, login, failure.reply?.text ?? failure.message, inputs.now());
          logger.warn({ virtualMta: vmta.name, domain: inputs.domain, smarthost: host, port: entry.port, err: failure.message }, 'smarthost refused the login; the queue is deferred, no other port is tried');
          return { ok: false, fallbacks, target, classification: classifyFailure({ kind: 'auth', message: failure.message }) };
        }
        const fallback: PortFallback = { host: address, port: entry.port, tls: entry.tls, reason: fallbackReason(failure), detail: failure.message.trim(), at: new Date(inputs.now()).toISOString() };
        // A port tried again replaces what was remembered of it.
        const stale = fallbacks.findIndex((known) => known.host === address && known.port === entry.port && known.tls === entry.tls);
        if (stale >= 0) fallbacks.splice(stale, 1);
        fallbacks.push(fallback);
        inputs.portFailed(fallback.reason);
        logger.info({ virtualMta: vmta.name, domain: inputs.domain, smarthost: host, smarthostIp: address, port: entry.port, reason: fallback.reason, err: failure.message }, 'smarthost port failed, trying the next');
      }
    }
  }
  const summary = fallbacks.map((fallback) => `${fallback.host}:${fallback.port} ${fallback.reason}`).join(', ');
  const kind = fallbacks.every((fallback) => fallback.reason === 'tls') ? 'tls' : 'connection';
  return { ok: false, fallbacks, ...(lastTarget ? { target: lastTarget } : {}), classification: classifyFailure({ kind, message: `smarthost ${route.hosts.join(', ')}: no port usable (${summary}); last: ${fallbacks.at(-1)?.detail ?? 'none'}` }) };
}
