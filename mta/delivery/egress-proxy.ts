// Opening a delivery connection through a VirtualMTA's SOCKS5 egress proxies (RFC 1928 CONNECT,
// RFC 1929 username/password when configured), on the `socks` client. The proxy sends from the
// address it was reached on (Dante `external.rotation: same-same`) and reports the address it
// sent from in its reply (BND.ADDR): a proxy that reports another address than the VirtualMTA's
// sourceAddress is closed before a byte of SMTP, so mail never leaves from a wrong address.
// Failover: the proxies are tried in order, passing over those that failed recently
// (egress-proxy-health.ts). A refusal that is the destination's fault (host unreachable,
// connection refused, TTL expired) leaves the proxy healthy and moves on to the next MX address.
import { readFile } from 'node:fs/promises';
import type net from 'node:net';
import path from 'node:path';
import { SocksClient, SocksClientError } from 'socks';
import type { VirtualMtaConfig } from '../config/schema.ts';
import { parseHostPort } from './domain-settings.ts';
import type { EgressProxyConfig, EgressProxyHealth } from './egress-proxy-health.ts';
import { ConnectionFailure, type MxTarget } from './outbound-connection.ts';

/** SOCKS5 replies (RFC 1928 §6) that speak about the destination, not the proxy, with the socket error code a direct connection would have failed with. */
const DESTINATION_REFUSALS = new Map<string, string | undefined>([['HostUnreachable', 'EHOSTUNREACH'], ['ConnectionRefused', 'ECONNREFUSED'], ['TTLExpired', undefined]]);

export interface ProxyDialOptions {
  vmta: VirtualMtaConfig;
  target: MxTarget;
  health: EgressProxyHealth;
  recheckAfterMs: number;
  timeoutMs: number;
}

/** A socket to the target through the first proxy that gets there from the VirtualMTA's address; rejects with ConnectionFailure. */
export async function dialThroughProxies(options: ProxyDialOptions): Promise<net.Socket> {
  const { vmta, target, health } = options;
  const peer = `${target.name}[${target.address}]:${target.port}`;
  const due = health.due(vmta, options.recheckAfterMs);
  if (due.length === 0) throw new ConnectionFailure('connection', `every egress proxy of VirtualMTA ${vmta.name} is down: ${health.describe(vmta)}`);
  for (const proxy of due) {
    const outcome = await connectVia(proxy, options);
    if (outcome.kind === 'socket') {
      health.succeeded(vmta.name, proxy.server);
      return outcome.socket;
    }
    if (outcome.kind === 'destination') {
      health.succeeded(vmta.name, proxy.server);
      throw new ConnectionFailure('connection', `${peer} via egress proxy ${proxy.server}: ${outcome.reason}`, undefined, outcome.code);
    }
    health.failed(vmta.name, proxy.server, outcome.reason);
  }
  throw new ConnectionFailure('connection', `no egress proxy of VirtualMTA ${vmta.name} reached ${peer}: ${health.describe(vmta)}`);
}

type ProxyOutcome = { kind: 'socket'; socket: net.Socket } | { kind: 'destination'; reason: string; code?: string } | { kind: 'proxy'; reason: string };

async function connectVia(proxy: EgressProxyConfig, { vmta, target, timeoutMs }: ProxyDialOptions): Promise<ProxyOutcome> {
  const { host, port } = parseHostPort(proxy.server);
  let credentials: { userId: string; password: string } | undefined;
  if (proxy.credentialsDir) {
    try {
      const [userId, password] = await Promise.all(['username', 'password'].map(async (file) => (await readFile(path.join(proxy.credentialsDir!, file), 'utf8')).trim()));
      credentials = { userId: userId!, password: password! };
    } catch (error) {
      return { kind: 'proxy', reason: `cannot read the credentials in ${proxy.credentialsDir}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}` };
    }
  }
  try {
    const { socket, remoteHost } = await SocksClient.createConnection({
      proxy: { host, port, type: 5, ...credentials },
      command: 'connect',
      destination: { host: target.address, port: target.port },
      timeout: timeoutMs,
    });
    const bound = remoteHost?.host;
    if (vmta.sourceAddress && bound !== vmta.sourceAddress) {
      socket.destroy();
      return { kind: 'proxy', reason: `sent from ${bound ?? 'an unreported address'}, not the VirtualMTA's sourceAddress ${vmta.sourceAddress}` };
    }
    return { kind: 'socket', socket };
  } catch (error) {
    const message = (error as Error).message;
    const status = error instanceof SocksClientError ? /rejected connection - (\w+)/.exec(message)?.[1] : undefined;
    if (status && DESTINATION_REFUSALS.has(status)) {
      const code = DESTINATION_REFUSALS.get(status);
      return { kind: 'destination', reason: `the proxy answered ${status}`, ...(code ? { code } : {}) };
    }
    return { kind: 'proxy', reason: message };
  }
}
