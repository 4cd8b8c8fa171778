// The connection runner: one session of a destination queue from start to end — resolve the
// route (MX or smtpHost, source address family), apply the TLS policy (MTA-STS, DANE), connect
// along the MX list (directly or through the VirtualMTA's egress proxies), send ready messages (its own and, with MX rollup, its site siblings') within
// the per-connection and rate limits, classify the replies, and quit. Owns the resolvers and
// the MTA-STS policy cache; hands every classified outcome to the outcome recorder and every
// session's TLS outcome to TLS-RPT (mta/reporting/). A smarthost route skips MX, MTA-STS, DANE and
// TLS-RPT: its session is opened along its port fallback list (smarthost-session.ts).
import net from 'node:net';
import path from 'node:path';
import type { RuntimeConfig, SmarthostConfig, VirtualMtaConfig } from '../config/schema.ts';
import type { DeliveryContext } from './delivery-context.ts';
import type { DestinationQueue, QueueItem } from './destination-queue.ts';
import { DnssecLookup } from './dnssec-lookup.ts';
import { awaitNextMessage } from './idle-connections.ts';
import { dialThroughProxies } from './egress-proxy.ts';
import { MtaStsResolver, type AppliedStsPolicy } from './mta-sts.ts';
import { PolicyCacheFile } from './mta-sts-cache.ts';
import { DnsFailure, MxResolver } from './mx-resolver.ts';
import type { OutcomeRecorder, AttemptContext } from './outcome-recorder.ts';
import { ConnectionFailure, OutboundConnection, type MxTarget } from './outbound-connection.ts';
import type { QueueScheduler } from './queue-scheduler.ts';
import { classifyFailure, classifyReply, type Classification } from './reply-classification.ts';
import { openSmarthostSession } from './smarthost-session.ts';
import { SmarthostMemory, type PortFallback } from './smarthost-memory.ts';
import { routeTls, type RoutedTarget } from './tls-route.ts';
import type { TlsSessionRecorder } from '../reporting/tls-rpt-sessions.ts';

/** Reaching an egress proxy and its CONNECT to the MX, as long as a direct connect may take. */
const PROXY_CONNECT_TIMEOUT_MS = 30_000;

export interface ConnectionRunnerOptions {
  /** Defaults to a resolver on `config.delivery.resolvers`, replaced when they change. */
  resolver?: MxResolver;
  /** Trust anchors for `verify` TLS instead of the system roots (private CAs, tests). */
  trustedCa?: Buffer | Buffer[];
  /** Where the MTA-STS policy cache outlives a restart (the spool volume's state/ folder). */
  stateDir?: string;
  /** Where MTA-STS policies are fetched from instead of mta-sts.<domain>:443 with system roots (tests). */
  mtaStsFetch?: { connectAddress?: string; port?: number; ca?: Buffer | Buffer[] };
  /** Told every session's TLS outcome (TLS-RPT). */
  tlsSessions?: TlsSessionRecorder;
}

export class ConnectionRunner {
  readonly #context: DeliveryContext;
  readonly #scheduler: QueueScheduler;
  readonly #recorder: OutcomeRecorder;
  #resolver: MxResolver;
  readonly #ownResolver: boolean;
  #dnssec: DnssecLookup;
  readonly #trustedCa: Buffer | Buffer[] | undefined;
  readonly #mtaSts: MtaStsResolver;
  readonly #stsCache: PolicyCacheFile | undefined;
  readonly #tlsSessions: TlsSessionRecorder | undefined;
  readonly #smarthosts = new SmarthostMemory();

  constructor(context: DeliveryContext, scheduler: QueueScheduler, recorder: OutcomeRecorder, options: ConnectionRunnerOptions) {
    const { config, clock, logger } = context;
    this.#context = context;
    this.#scheduler = scheduler;
    this.#recorder = recorder;
    this.#ownResolver = !options.resolver;
    this.#resolver = options.resolver ?? new MxResolver({ servers: config.delivery.resolvers, clock });
    this.#trustedCa = options.trustedCa;
    this.#tlsSessions = options.tlsSessions;
    this.#dnssec = new DnssecLookup({ servers: config.delivery.dnssecResolvers });
    this.#stsCache = options.stateDir ? new PolicyCacheFile(path.join(options.stateDir, 'mta-sts-policies.json'), logger) : undefined;
    this.#mtaSts = new MtaStsResolver({ clock, resolveTxt: (name) => this.#resolver.resolveTxt(name), ...(this.#stsCache ? { cacheFile: this.#stsCache } : {}), ...options.mtaStsFetch });
  }

  /** New resolvers when their servers changed. */
  reload(previous: RuntimeConfig, config: RuntimeConfig): void {
    if (this.#ownResolver && JSON.stringify(previous.delivery.resolvers) !== JSON.stringify(config.delivery.resolvers)) {
      this.#resolver = new MxResolver({ servers: config.delivery.resolvers, clock: this.#context.clock });
    }
    if (JSON.stringify(previous.delivery.dnssecResolvers) !== JSON.stringify(config.delivery.dnssecResolvers)) {
      this.#dnssec = new DnssecLookup({ servers: config.delivery.dnssecResolvers });
    }
  }

  /** The MTA-STS policies in force, per recipient domain (cached, as the last deliveries applied them). */
  mtaStsPolicies(): AppliedStsPolicy[] {
    return this.#mtaSts.list();
  }

  /** Write the MTA-STS policy cache out (at stop). */
  flush(): void {
    this.#stsCache?.flush();
  }

  /** One connection's life: resolve, connect (falling back along the MX list), send ready messages, quit. */
  async run(queue: DestinationQueue): Promise<void> {
    const { clock, logger, metrics, virtualMtas } = this.#context;
    const vmta = virtualMtas.get(queue.virtualMta);
    if (!vmta) return;
    const startedAt = clock.now();
    if (queue.settings.smarthost) return this.#runSmarthost(queue, vmta, queue.settings.smarthost, startedAt);
    let targets: MxTarget[];
    try {
      targets = await this.#routeFor(queue, vmta);
    } catch (error) {
      const failure = error instanceof DnsFailure ? error : new DnsFailure('dns-temporary', (error as Error).message);
      metrics.dnsFailures.inc({ kind: failure.kind === 'dns-temporary' ? 'temporary' : failure.kind === 'null-mx' ? 'null_mx' : 'no_such_domain' });
      queue.lastError = failure.message;
      await this.#recorder.failReady(queue, classifyFailure({ kind: failure.kind, message: failure.message }), { startedAt });
      return;
    }
    if (!queue.settings.smtpHost) this.#scheduler.placeInProviderGroup(queue, targets);
    const route = await routeTls({
      domain: queue.domain,
      settings: queue.settings,
      targets,
      mtaSts: this.#mtaSts,
      dnssec: this.#dnssec,
      events: {
        stsMismatch: (policy) => {
          metrics.mtaStsMismatches.inc({ virtual_mta: vmta.name, mode: policy.mode });
          logger.warn({ virtualMta: vmta.name, domain: queue.domain, mode: policy.mode, policyMx: policy.mx }, 'MX hosts outside the MTA-STS policy');
        },
        dane: (result, host, detail) => {
          metrics.daneLookups.inc({ result });
          if (result === 'dnssec_invalid') logger.warn({ virtualMta: vmta.name, domain: queue.domain, mxHost: host, err: detail }, 'DANE: DNSSEC validation failed, host not used');
        },
      },
    });
    this.#tlsSessions?.route(queue.domain, vmta.sourceAddress, route);
    if (!route.ok) {
      queue.lastError = route.message;
      await this.#recorder.failReady(queue, classifyFailure({ kind: 'tls', message: route.message }), { startedAt });
      return;
    }
    const slots = this.#scheduler.limits.join(queue, targets);
    if (slots === null) return;
    try {
      await this.#connectAndSend(queue, vmta, route.targets, startedAt);
    } finally {
      this.#scheduler.limits.leave(slots);
    }
  }

  async #routeFor(queue: DestinationQueue, vmta: VirtualMtaConfig): Promise<MxTarget[]> {
    const family = vmta.sourceAddress ? net.isIP(vmta.sourceAddress) : 0;
    const usable = (address: string) => family === 0 || net.isIP(address) === family;
    const smtpHost = queue.settings.smtpHost;
    if (smtpHost) {
      const addresses = (await this.#resolver.resolveHost(smtpHost.host)).filter(usable);
      return addresses.map((address) => ({ name: smtpHost.host, address, port: smtpHost.port }));
    }
    const hosts = await this.#resolver.resolveMx(queue.domain);
    const targets = hosts.flatMap((host) => host.addresses.filter(usable).map((address) => ({ name: host.name, address, port: this.#context.config.delivery.mxPort })));
    if (targets.length === 0) throw new DnsFailure('dns-temporary', `no MX address of ${queue.domain} matches the source address family`);
    return targets;
  }

  async #connectAndSend(queue: DestinationQueue, vmta: VirtualMtaConfig, targets: readonly RoutedTarget[], startedAt: number): Promise<void> {
    const { logger, metrics } = this.#context;
    const scheduler = this.#scheduler;
    let connection: OutboundConnection | undefined;
    let lastFailure: ConnectionFailure | undefined;
    let lastTarget: RoutedTarget | undefined;
    for (const target of targets) {
      if (queue.ready.length === 0 || !scheduler.canSend(queue)) return;
      lastTarget = target;
      try {
        connection = await OutboundConnection.open({
          target,
          ehloName: vmta.hostname,
          tlsPolicy: target.tlsPolicy,
          ...(target.dane ? { dane: target.dane } : {}),
          ...(vmta.sourceAddress ? { sourceAddress: vmta.sourceAddress } : {}),
          ...(this.#trustedCa ? { trustedCa: this.#trustedCa } : {}),
          ...(vmta.proxies.length > 0 ? { dial: () => this.#dialProxied(vmta, target) } : {}),
        });
        break;
      } catch (error) {
        lastFailure = error instanceof ConnectionFailure ? error : new ConnectionFailure('connection', (error as Error).message);
        this.#tlsSessions?.session(queue.domain, vmta.sourceAddress, target, lastFailure);
        if (lastFailure.kind === 'tls') metrics.connections.inc({ virtual_mta: vmta.name, tls: 'failed', tls_version: 'none' });
        if (target.dane && lastFailure.kind === 'tls') metrics.daneSessions.inc({ result: 'failed' });
        logger.info({ virtualMta: vmta.name, domain: queue.domain, mxHost: target.name, mxIp: target.address, err: lastFailure.message }, 'connection to MX failed, trying the next');
      }
    }
    if (!connection) {
      const failure = lastFailure ?? new ConnectionFailure('connection', `no usable MX address for ${queue.domain}`);
      queue.lastError = failure.message;
      // A refused STARTTLS is a TLS failure (deferred), whatever its reply code; a refused greeting speaks for itself.
      const classification = failure.reply && failure.kind === 'connection' ? classifyReply(failure.reply.code, failure.reply.text) : classifyFailure({ kind: failure.kind, message: failure.message });
      await this.#recorder.failReady(queue, classification, { startedAt, ...(lastTarget ? { target: lastTarget } : {}) }, failure.reply?.text);
      return;
    }
    queue.lastError = undefined;
    queue.clearDeferral();
    const tls = connection.tls;
    this.#tlsSessions?.session(queue.domain, vmta.sourceAddress, lastTarget!, tls);
    if (tls.kind === 'tls' && tls.dane) metrics.daneSessions.inc({ result: tls.dane.replace('-', '_') });
    metrics.connections.inc({ virtual_mta: vmta.name, tls: tls.kind, tls_version: tls.kind === 'tls' ? tls.version : 'none' });
    await this.#sendOn(queue, connection);
  }

  /** A smarthost session: open it along the port list, then send as on any connection; the fallbacks go into each accounting record. */
  async #runSmarthost(queue: DestinationQueue, vmta: VirtualMtaConfig, route: SmarthostConfig, startedAt: number): Promise<void> {
    const { clock, logger, metrics } = this.#context;
    if (queue.ready.length === 0 || !this.#scheduler.canSend(queue)) return;
    const session = await openSmarthostSession({
      route,
      memory: this.#smarthosts,
      vmta,
      domain: queue.domain,
      resolveHost: (host) => this.#resolver.resolveHost(host),
      now: () => clock.now(),
      logger,
      portFailed: (reason) => metrics.smarthostPortFailures.inc({ virtual_mta: vmta.name, reason }),
      ...(vmta.proxies.length > 0 ? { dial: (target: MxTarget) => this.#dialProxied(vmta, target) } : {}),
    });
    const portFallbacks = session.fallbacks.length > 0 ? session.fallbacks : undefined;
    if (!session.ok) {
      queue.lastError = session.classification.diagnostic;
      await this.#recorder.failReady(queue, session.classification, { startedAt, ...(session.target ? { target: session.target } : {}), ...(portFallbacks ? { portFallbacks } : {}) });
      return;
    }
    queue.lastError = undefined;
    queue.clearDeferral();
    const tls = session.connection.tls;
    metrics.connections.inc({ virtual_mta: vmta.name, tls: tls.kind, tls_version: tls.kind === 'tls' ? tls.version : 'none' });
    await this.#sendOn(queue, session.connection, portFallbacks);
  }

  /** Send ready messages (the queue's and its site siblings') on an open connection within its limits, then quit. */
  async #sendOn(queue: DestinationQueue, connection: OutboundConnection, portFallbacks?: PortFallback[]): Promise<void> {
    const scheduler = this.#scheduler;
    try {
      for (let sent = 0; sent < queue.settings.maxMessagesPerConnection && connection.usable && scheduler.canSend(queue); sent += 1) {
        let next = scheduler.nextItem(queue);
        // Nothing ready: the connection stays open a while for the next message of its queue (idle-connections.ts).
        while (!next && queue.ready.length === 0 && scheduler.canSend(queue) && !scheduler.slots.wanted && (await awaitNextMessage(queue, this.#context.config.delivery.connectionIdleTimeout, this.#context.clock)) && connection.usable) next = scheduler.nextItem(queue);
        if (!next) break;
        const { source, item } = next;
        source.inFlight += 1;
        try {
          await scheduler.limits.pace(source);
          await this.#deliverItem(source, item, connection, portFallbacks);
        } finally {
          source.inFlight -= 1;
        }
      }
    } finally {
      connection.close();
    }
  }

  #dialProxied(vmta: VirtualMtaConfig, target: MxTarget) {
    const { config, egressProxies } = this.#context;
    return dialThroughProxies({ vmta, target, health: egressProxies, recheckAfterMs: config.delivery.proxyRecheckAfter, timeoutMs: PROXY_CONNECT_TIMEOUT_MS });
  }

  async #deliverItem(queue: DestinationQueue, item: QueueItem, connection: OutboundConnection, portFallbacks?: PortFallback[]): Promise<void> {
    if (!this.#scheduler.holds(item.id)) return;
    const envelope = item.envelope;
    const context: AttemptContext = { target: connection.target, tls: connection.tls, startedAt: this.#context.clock.now(), nextHopDsn: connection.supportsDsn, ...(portFallbacks ? { portFallbacks } : {}) };
    const addresses = item.recipients.map((index) => envelope.recipients[index]!.address);
    const needsUtf8 = envelope.smtpUtf8 || [envelope.mailFrom, ...addresses].some((address) => /[^\x00-\x7f]/.test(address));
    if (needsUtf8 && !connection.supportsSmtpUtf8) {
      const classification = classifyFailure({ kind: 'utf8-unsupported', message: `${connection.target.name} does not support SMTPUTF8, needed by this message` });
      await this.#recorder.recordResults(queue, item, new Map(item.recipients.map((index) => [index, classification])), context);
      return;
    }
    const outcome = await connection.send(
      {
        from: envelope.mailFrom,
        to: addresses,
        size: envelope.size,
        eightBitMime: envelope.eightBitMime,
        ...(envelope.dsn ? { dsn: envelope.dsn } : {}),
        dsnRecipients: new Map(item.recipients.map((index) => [envelope.recipients[index]!.address, envelope.recipients[index]!])),
      },
      this.#context.spool.readMessage(item.id),
    );
    const classifications = new Map<number, Classification>();
    for (const index of item.recipients) {
      if (outcome.kind === 'failure') {
        const failure = outcome.failure;
        classifications.set(index, failure.reply ? classifyReply(failure.reply.code, failure.reply.text) : classifyFailure({ kind: failure.kind, message: failure.message }));
        continue;
      }
      const reply = outcome.replies.get(envelope.recipients[index]!.address);
      classifications.set(index, reply ? classifyReply(reply.code, reply.text) : classifyFailure({ kind: 'connection', message: 'no reply for this recipient' }));
    }
    await this.#recorder.recordResults(queue, item, classifications, context);
  }
}
