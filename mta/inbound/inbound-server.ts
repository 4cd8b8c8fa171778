// The receiving side of the relay: one TCP listener per configured listener, each accepted
// socket taken through (1) PROXY protocol from trusted peers only, (2) total and per-client
// connection limits — before any TLS work, so silent sockets from one address cannot fill an
// implicit-TLS port — (3) the implicit TLS handshake, bounded in time, then handed to the
// listener's current smtp-server instance. Reload swaps the snapshot new sessions use (policies, users,
// certificates, limits) and re-binds only listeners whose address or port changed; open
// sessions keep the snapshot they started with.
import net from 'node:net';
import type { RuntimeConfig } from '../config/schema.ts';
import { EventLog } from '../observe/event-log.ts';
import type { RejectionReason } from '../observe/metrics.ts';
import { AuthFailureLimiter } from './auth-failures.ts';
import { buildListenerSnapshot, type InboundDeps, type ListenerSnapshot } from './listener-session.ts';
import { readProxyHeader } from './proxy-header.ts';
import { preSessionTimeoutMs } from './tls-handshake.ts';
import { startAdmittedSession } from './admitted-session.ts';
import { addressText, peerAddressValue, peerInRanges } from '../config/address-range.ts';

export type { InboundDeps } from './listener-session.ts';

class ListenerEndpoint {
  snapshot: ListenerSnapshot;
  readonly server: net.Server;
  readonly sockets = new Set<net.Socket>();
  readonly perClient = new Map<string, number>();
  /** Connections that passed the limits (refused ones linger briefly for their 421 and are not counted). */
  admitted = 0;
  /** Refused connections waiting for their 421 to go out. */
  lingering = 0;
  readonly limiter: AuthFailureLimiter;
  private readonly deps: InboundDeps;

  constructor(snapshot: ListenerSnapshot, limiter: AuthFailureLimiter, deps: InboundDeps) {
    this.snapshot = snapshot;
    this.limiter = limiter;
    this.deps = deps;
    this.server = net.createServer({ pauseOnConnect: true }, (socket) => this.onConnection(socket));
  }

  get name(): string {
    return this.snapshot.config.name;
  }

  listen(): Promise<void> {
    const { address, port } = this.snapshot.config;
    return new Promise((resolve, reject) => {
      const onError = (error: Error) => reject(new Error(`listener "${this.name}": cannot listen on ${address}:${port}: ${error.message}`, { cause: error }));
      this.server.once('error', onError);
      this.server.listen({ host: address, port, backlog: 1024 }, () => {
        this.server.removeListener('error', onError);
        this.server.on('error', (error) => this.deps.logger.error({ listener: this.name, err: error }, 'listener error'));
        resolve();
      });
    });
  }

  /** Closes the listening socket; open connections are not waited for (net.Server.close's callback would). */
  stopListening(): Promise<void> {
    if (this.server.listening) this.server.close();
    return new Promise((resolve) => setImmediate(resolve));
  }

  private onConnection(socket: net.Socket): void {
    this.deps.memoryRelease?.noteWork();
    const snapshot = this.snapshot;
    const labels = { listener: snapshot.config.name };
    const metrics = this.deps.metrics;
    if (this.sockets.size - this.lingering >= 2 * snapshot.config.limits.maxConnections) {
      // A flood of connections still sending their PROXY header: drop without a reply.
      metrics.rejections.inc({ ...labels, reason: 'too_many_connections' });
      socket.destroy();
      return;
    }
    this.sockets.add(socket);
    metrics.inboundConnectionsActive.inc(labels);
    let clientKey: string | undefined;
    let admitted = false;
    socket.on('error', () => undefined);
    let ended = false;
    // Runs once: from the raw socket's 'close', or — because smtp-server's STARTTLS upgrade
    // removes every listener from the raw socket — from the session's end.
    const release = () => {
      if (ended) return;
      ended = true;
      this.sockets.delete(socket);
      metrics.inboundConnectionsActive.dec(labels);
      if (admitted) this.admitted--;
      if (clientKey !== undefined) {
        const left = (this.perClient.get(clientKey) ?? 1) - 1;
        if (left <= 0) this.perClient.delete(clientKey);
        else this.perClient.set(clientKey, left);
      }
    };
    socket.once('close', release);
    const implicitTls = snapshot.config.tls.mode === 'implicit';
    const refuse = (reason: RejectionReason, reply: string) => {
      metrics.rejections.inc({ ...labels, reason });
      this.deps.events?.write(`refusal ${reason}`, 'info', { listener: labels.listener, client: clientKey ?? socket.remoteAddress, reason, reply }, `connection refused: ${reason.replaceAll('_', ' ')}`);
      // A client on an implicit-TLS port cannot read a clear-text reply, and a handshake just to
      // say 421 is the work a flood wants us to do: close instead.
      // Past maxConnections lingering refusals, a flood is not worth a reply either.
      if (implicitTls || this.lingering >= snapshot.config.limits.maxConnections) return void socket.destroy();
      // The 421 gets a second to reach the client (the socket stays paused: nothing it sends is read).
      this.lingering++;
      socket.once('close', () => this.lingering--);
      socket.end(`${reply}\r\n`);
      setTimeout(() => socket.destroy(), 1000).unref();
    };
    const setup = async (): Promise<void> => {
      const peerAddress = normaliseIp(socket.remoteAddress ?? '');
      let clientAddress = peerAddress;
      let clientPort = socket.remotePort ?? 0;
      const proxy = snapshot.config.proxyProtocol;
      if (proxy.enabled) {
        if (!peerInRanges(peerAddress, snapshot.trustedProxies)) {
          return refuse('proxy_untrusted', `421 4.7.0 ${snapshot.hostname} PROXY protocol accepted only from trusted proxies`);
        }
        socket.resume();
        try {
          const peer = await readProxyHeader(socket, preSessionTimeoutMs(snapshot.config.limits));
          if (peer) {
            clientAddress = normaliseIp(peer.address);
            clientPort = peer.port;
          }
        } catch (error) {
          this.deps.logger.info({ listener: labels.listener, peer: peerAddress, err: (error as Error).message }, 'invalid PROXY header');
          return refuse('proxy_invalid', `421 4.7.0 ${snapshot.hostname} Invalid PROXY header`);
        }
      }
      clientKey = clientAddress;
      const perClient = (this.perClient.get(clientAddress) ?? 0) + 1;
      this.perClient.set(clientAddress, perClient);
      const limits = snapshot.config.limits;
      if (this.admitted + 1 > limits.maxConnections) {
        return refuse('too_many_connections', `421 4.7.0 ${snapshot.hostname} Too many connections, try again later`);
      }
      if (perClient > limits.maxConnectionsPerClient) {
        return refuse('too_many_connections_per_client', `421 4.7.0 ${snapshot.hostname} Too many connections from your address, try again later`);
      }
      admitted = true;
      this.admitted++;
      const peer = { remoteAddress: clientAddress, remotePort: clientPort };
      // With session processes the socket goes to one of them; the primary keeps counting it until that process says the session ended.
      if (this.deps.sessionWorkers?.dispatch(this.name, socket, peer, release)) return;
      await startAdmittedSession(snapshot, socket, peer, release, this.deps);
    };
    setup().catch((error: unknown) => {
      this.deps.logger.info({ listener: labels.listener, client: socket.remoteAddress, err: (error as Error).message }, 'connection setup failed');
      socket.destroy();
    });
  }
}

/** IPv4-mapped IPv6 folded to IPv4, IPv6 in canonical form. */
function normaliseIp(address: string): string {
  const value = peerAddressValue(address);
  return value === null ? address : addressText(value);
}

export class InboundServer {
  private readonly deps: InboundDeps;
  private endpoints = new Map<string, ListenerEndpoint>();
  /** Endpoints closed by a reload whose sessions may still be open (drain covers them too). */
  private readonly retired = new Set<ListenerEndpoint>();
  /** Shared by every listener, so a client cannot reset its count by switching ports. */
  private readonly authFailures: AuthFailureLimiter;

  private constructor(deps: InboundDeps) {
    // One EventLog for every listener and reload, so a flood's line budget is not reset by them.
    this.deps = { ...deps, events: deps.events ?? new EventLog(deps.logger) };
    this.authFailures = deps.authFailures ?? new AuthFailureLimiter();
  }

  static async start(config: RuntimeConfig, deps: InboundDeps): Promise<InboundServer> {
    const server = new InboundServer(deps);
    try {
      await server.reload(config);
    } catch (error) {
      await server.close();
      throw error;
    }
    return server;
  }

  /**
   * Applies a new config to new sessions. Certificates and user files are read first; if any
   * cannot be read the error is thrown and nothing changes. A listener whose address or port
   * changed is closed and bound again (its open sessions continue); a changed TLS mode, policy
   * or limit needs no re-bind, since every new connection reads the current snapshot. If binding
   * a new address fails (port in use) the error is thrown after the rest was applied.
   */
  async reload(config: RuntimeConfig): Promise<void> {
    const snapshots = await Promise.all(config.listeners.map((listener) => buildListenerSnapshot(config, listener, this.deps, this.authFailures)));
    // The session processes take the config once the primary found it good, before any listener changes.
    await this.deps.sessionWorkers?.configure(config);
    const next = new Map<string, ListenerEndpoint>();
    const toClose: ListenerEndpoint[] = [];
    const toOpen: ListenerEndpoint[] = [];
    for (const snapshot of snapshots) {
      const current = this.endpoints.get(snapshot.config.name);
      if (current && current.snapshot.config.address === snapshot.config.address && current.snapshot.config.port === snapshot.config.port) {
        current.snapshot = snapshot;
        next.set(snapshot.config.name, current);
      } else {
        if (current) toClose.push(current);
        const endpoint = new ListenerEndpoint(snapshot, this.authFailures, this.deps);
        next.set(snapshot.config.name, endpoint);
        toOpen.push(endpoint);
      }
    }
    for (const [name, endpoint] of this.endpoints) if (!next.has(name)) toClose.push(endpoint);
    await Promise.all(toClose.map((endpoint) => endpoint.stopListening()));
    toClose.forEach((endpoint) => this.retired.add(endpoint));
    this.endpoints = next;
    await Promise.all(toOpen.map((endpoint) => endpoint.listen()));
    this.deps.metrics.certificateExpiry.reset();
    for (const snapshot of snapshots) {
      for (const [serverName, expiry] of snapshot.tls?.expiries ?? []) {
        this.deps.metrics.certificateExpiry.set({ listener: snapshot.config.name, server_name: serverName }, expiry);
      }
    }
  }

  boundAddresses(): Array<{ listener: string; address: string; port: number }> {
    const result: Array<{ listener: string; address: string; port: number }> = [];
    for (const [name, endpoint] of this.endpoints) {
      const bound = endpoint.server.address();
      if (bound && typeof bound === 'object') result.push({ listener: name, address: bound.address, port: bound.port });
    }
    return result;
  }

  /** Closes the listening sockets; open sessions continue. */
  async stopAccepting(): Promise<void> {
    await Promise.all([...this.endpoints.values()].map((endpoint) => endpoint.stopListening()));
  }

  /** Stops accepting, waits up to `timeoutMs` for open sessions to end, then destroys the rest. */
  async drain(timeoutMs: number): Promise<void> {
    await this.stopAccepting();
    const deadline = Date.now() + timeoutMs;
    while (this.openSockets() > 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
    for (const endpoint of this.allEndpoints()) for (const socket of endpoint.sockets) socket.destroy();
    this.deps.sessionWorkers?.closeSessions();
    this.retired.clear();
  }

  async close(): Promise<void> {
    await this.drain(0);
  }

  private openSockets(): number {
    let count = 0;
    for (const endpoint of this.allEndpoints()) count += endpoint.sockets.size;
    return count;
  }

  private allEndpoints(): ListenerEndpoint[] {
    for (const endpoint of this.retired) if (endpoint.sockets.size === 0) this.retired.delete(endpoint);
    return [...this.endpoints.values(), ...this.retired];
  }
}
