// The delivery engine: takes spooled messages, keeps their envelopes (never bodies) in
// per-VirtualMTA x domain queues, opens connections within the domain's limits, sends, records
// every recipient's result durably in the spool before moving on, schedules retries, bounces
// with a DSN, and removes a message once all its recipients are final. Queue control (pause,
// resume, retry now, bounce, delete) is exposed for the admin API.
// With `delivery.mxRollup`, domains whose MX host sets are the same form one "site" per
// VirtualMTA: the connection limit applies to the site and an open connection carries mail
// for every domain of the site, while retry state, pauses and listing stay per domain.
import net from 'node:net';
import path from 'node:path';
import type { Logger } from 'pino';
import type { RuntimeConfig, VirtualMtaConfig } from '../config/schema.ts';
import { AccountingLog } from '../observe/accounting.ts';
import { DeliveryMetrics } from '../observe/delivery-metrics.ts';
import type { RelayMetrics } from '../observe/metrics.ts';
import type { Envelope, RecipientResult, RecipientStatus, Spool, SpooledMessage } from '../spool/types.ts';
import { systemClock, type Clock, type TimerHandle } from './clock.ts';
import { DestinationQueue, type QueuedMessage, type QueueItem } from './destination-queue.ts';
import { DnssecLookup } from './dnssec-lookup.ts';
import { resolveDomainSettings } from './domain-settings.ts';
import { storeDsn, type FailedRecipient } from './dsn.ts';
import { MtaStsResolver, type AppliedStsPolicy } from './mta-sts.ts';
import { PolicyCacheFile } from './mta-sts-cache.ts';
import { DnsFailure, MxResolver } from './mx-resolver.ts';
import { ConnectionFailure, OutboundConnection, type MxTarget, type TlsOutcome } from './outbound-connection.ts';
import { classifyFailure, classifyReply, type Classification } from './reply-classification.ts';
import { afterDeferral, retryDelay } from './retry-schedule.ts';
import { isDanePolicy, routeTls, type RoutedTarget } from './tls-route.ts';
import { probeSourceAddress } from './source-address.ts';
import { StringTable } from './string-table.ts';
import type { TlsSessionRecorder } from '../reporting/tls-rpt-sessions.ts';

export interface DeliveryEngineOptions {
  config: RuntimeConfig;
  spool: Spool;
  metrics: RelayMetrics;
  logger: Logger;
  clock?: Clock;
  /** Defaults to a resolver on `config.delivery.resolvers`. */
  resolver?: MxResolver;
  /** Trust anchors for `verify` TLS instead of the system roots (private CAs, tests). */
  trustedCa?: Buffer | Buffer[];
  /** Scan the spool at start and queue what it holds (default true). */
  recover?: boolean;
  /** Where state that outlives a restart is kept (the MTA-STS policy cache): the spool volume's state/ folder. */
  stateDir?: string;
  /** Where MTA-STS policies are fetched from instead of mta-sts.<domain>:443 with system roots (tests). */
  mtaStsFetch?: { connectAddress?: string; port?: number; ca?: Buffer | Buffer[] };
  /** Told every session's TLS outcome (TLS-RPT, mta/reporting/). */
  tlsSessions?: TlsSessionRecorder;
}

/** Which queues a control call applies to; an empty selector means every queue. */
export interface QueueSelector {
  virtualMta?: string;
  domain?: string;
}

export interface QueueSummary {
  virtualMta: string;
  domain: string;
  messages: number;
  ready: number;
  scheduled: number;
  inFlight: number;
  connections: number;
  paused: boolean;
  backoff: { active: boolean; since: string | null };
  /** ISO time of the next scheduled retry, or null. */
  nextRetryAt: string | null;
  /** MX host set shared with other domains (MX rollup), or null. */
  site: string | null;
  lastError: string | null;
}

export interface VirtualMtaStatus {
  name: string;
  sourceAddress: string | null;
  usable: boolean;
  paused: boolean;
  detail: string | null;
}

export interface MessageState {
  id: string;
  virtualMta: string;
  mailFrom: string;
  receivedAt: string;
  size: number;
  recipients: { address: string; status: string; attempts: number; nextAttemptAt: string | null; lastResult: string | null }[];
}

interface AttemptContext {
  target?: MxTarget;
  tls?: TlsOutcome;
  startedAt: number;
}

const NO_TARGET: AttemptContext = { startedAt: 0 };

export class DeliveryEngine {
  private config: RuntimeConfig;
  private readonly spool: Spool;
  private readonly relayMetrics: RelayMetrics;
  private readonly metrics: DeliveryMetrics;
  private readonly logger: Logger;
  private readonly clock: Clock;
  private resolver: MxResolver;
  private readonly ownResolver: boolean;
  private readonly trustedCa: Buffer | Buffer[] | undefined;
  private accounting: AccountingLog;
  private readonly mtaSts: MtaStsResolver;
  private readonly stsCache: PolicyCacheFile | undefined;
  private dnssec: DnssecLookup;
  private readonly tlsSessions: TlsSessionRecorder | undefined;
  private readonly messages = new Map<string, QueuedMessage>();
  private readonly strings = new StringTable();
  private readonly queues = new Map<string, DestinationQueue>();
  private readonly timers = new Map<DestinationQueue, { at: number; handle: TimerHandle }>();
  private readonly workers = new Set<Promise<void>>();
  /** Open connections per "virtualMta\0site" (MX rollup). */
  private readonly siteConnections = new Map<string, number>();
  private virtualMtas = new Map<string, VirtualMtaConfig>();
  private readonly unusable = new Map<string, string>();
  /** Paused selectors as "virtualMta\0domain" with "*" for a field left out. */
  private readonly paused = new Set<string>();
  private gaugeTimer: NodeJS.Timeout | undefined;
  private stopping = false;
  /** A drain is handing the queue over: nothing new is started (see hold()). */
  private holding = false;

  private constructor(options: DeliveryEngineOptions) {
    this.config = options.config;
    this.spool = options.spool;
    this.relayMetrics = options.metrics;
    this.metrics = new DeliveryMetrics(options.metrics.registry);
    this.metrics.setTrackedDomains(options.config.delivery.trackedDomains);
    this.logger = options.logger;
    this.clock = options.clock ?? systemClock;
    this.ownResolver = !options.resolver;
    this.resolver = options.resolver ?? new MxResolver({ servers: options.config.delivery.resolvers, clock: this.clock });
    this.trustedCa = options.trustedCa;
    this.tlsSessions = options.tlsSessions;
    this.accounting = this.openAccounting(options.config);
    this.dnssec = new DnssecLookup({ servers: options.config.delivery.dnssecResolvers });
    this.stsCache = options.stateDir ? new PolicyCacheFile(path.join(options.stateDir, 'mta-sts-policies.json'), options.logger) : undefined;
    this.mtaSts = new MtaStsResolver({ clock: this.clock, resolveTxt: (name) => this.resolver.resolveTxt(name), ...(this.stsCache ? { cacheFile: this.stsCache } : {}), ...options.mtaStsFetch });
  }

  /** Probe source addresses, recover the spool's messages and start delivering. */
  static async start(options: DeliveryEngineOptions): Promise<DeliveryEngine> {
    const engine = new DeliveryEngine(options);
    await engine.applyVirtualMtas(options.config);
    if (options.recover ?? true) {
      // What scan() yields belongs to no one else, so the engine takes it without a copy.
      for await (const message of options.spool.scan()) engine.enqueueOwned(message);
    }
    engine.gaugeTimer = setInterval(() => engine.refreshGauges(), 5_000);
    engine.gaugeTimer.unref();
    engine.refreshGauges();
    return engine;
  }

  /** Queue a newly accepted (or recovered) message; only its envelope is kept. A message already queued is ignored. */
  enqueue(spooled: SpooledMessage): void {
    if (this.messages.has(spooled.id)) return;
    // The engine updates recipient state in place, so it keeps its own copy of the recipients.
    this.enqueueOwned({ id: spooled.id, envelope: { ...spooled.envelope, recipients: spooled.envelope.recipients.map((recipient) => ({ ...recipient })) } });
  }

  /** Queue a message whose envelope the engine may keep and change (recovery: straight from the spool scan). */
  private enqueueOwned(message: QueuedMessage): void {
    if (this.messages.has(message.id)) return;
    const spooled = message;
    this.shareStrings(message.envelope);
    const byDomain = new Map<string, number[]>();
    spooled.envelope.recipients.forEach((recipient, index) => {
      if (recipient.status !== 'pending') return;
      const indexes = byDomain.get(recipient.domain) ?? [];
      indexes.push(index);
      byDomain.set(recipient.domain, indexes);
    });
    if (byDomain.size === 0) {
      void this.spool.remove(spooled.id).catch((error: Error) => this.logger.error({ queueId: spooled.id, err: error }, 'removing a finished message failed'));
      return;
    }
    this.messages.set(message.id, message);
    const now = this.clock.now();
    for (const [domain, recipients] of byDomain) {
      const dueAt = recipients.reduce((latest, index) => Math.max(latest, message.envelope.recipients[index]!.nextAttemptAt), 0);
      const queue = this.queueFor(spooled.envelope.virtualMta, domain);
      queue.add({ message, recipients, dueAt }, now);
      this.pump(queue);
    }
  }

  /** Point the envelope's repeated strings at one shared copy each (memory of large queues). */
  private shareStrings(envelope: Envelope): void {
    const table = this.strings;
    envelope.mailFrom = table.share(envelope.mailFrom);
    envelope.virtualMta = table.share(envelope.virtualMta);
    envelope.listener = table.share(envelope.listener);
    envelope.clientAddress = table.share(envelope.clientAddress);
    if (envelope.user !== undefined) envelope.user = table.share(envelope.user);
    for (const recipient of envelope.recipients) {
      recipient.domain = table.share(recipient.domain);
      recipient.status = table.share(recipient.status) as RecipientStatus;
    }
  }

  /** Take a new runtime config: VirtualMTAs, per-domain settings, resolvers, accounting. */
  async reload(config: RuntimeConfig): Promise<void> {
    const previous = this.config;
    this.config = config;
    this.metrics.setTrackedDomains(config.delivery.trackedDomains);
    if (this.ownResolver && JSON.stringify(previous.delivery.resolvers) !== JSON.stringify(config.delivery.resolvers)) {
      this.resolver = new MxResolver({ servers: config.delivery.resolvers, clock: this.clock });
    }
    if (JSON.stringify(previous.delivery.dnssecResolvers) !== JSON.stringify(config.delivery.dnssecResolvers)) {
      this.dnssec = new DnssecLookup({ servers: config.delivery.dnssecResolvers });
    }
    if (JSON.stringify(previous.delivery.accounting) !== JSON.stringify(config.delivery.accounting)) {
      const old = this.accounting;
      this.accounting = this.openAccounting(config);
      await old.close();
    }
    await this.applyVirtualMtas(config);
    for (const queue of this.queues.values()) {
      const vmta = this.virtualMtas.get(queue.virtualMta);
      if (vmta) queue.settings = resolveDomainSettings(queue.domain, vmta, config.pool.domainDefaults);
      this.pump(queue);
    }
  }

  /** Stop starting work, let connections finish their current message, close the accounting log. */
  async stop(): Promise<void> {
    this.stopping = true;
    if (this.gaugeTimer) clearInterval(this.gaugeTimer);
    for (const { handle } of this.timers.values()) handle.cancel();
    this.timers.clear();
    await Promise.allSettled([...this.workers]);
    this.stsCache?.flush();
    await this.accounting.close();
  }

  // ---- drain (mta/drain/) ----------------------------------------------------------------

  /** Messages the engine holds (queued, scheduled or being delivered). */
  get queuedMessages(): number {
    return this.messages.size;
  }

  /** Start no more deliveries and wait until every attempt in flight is recorded. */
  async hold(): Promise<void> {
    this.holding = true;
    while (this.workers.size > 0) await Promise.allSettled([...this.workers]);
  }

  /** After hold(): take every message out of the engine (the spool is untouched); the caller owns them now. */
  takeAll(): QueuedMessage[] {
    const taken = [...this.messages.values()];
    this.messages.clear();
    for (const queue of [...this.queues.values()]) {
      queue.drain();
      this.armTimer(queue);
      this.dropIfEmpty(queue);
    }
    return taken;
  }

  /** Deliver again after hold(): the drain ended or was cancelled. */
  release(): void {
    this.holding = false;
    for (const queue of [...this.queues.values()]) this.pump(queue);
  }

  // ---- queue control -------------------------------------------------------------------

  /** The MTA-STS policies in force, per recipient domain (cached, as the last deliveries applied them). */
  mtaStsPolicies(): AppliedStsPolicy[] {
    return this.mtaSts.list();
  }

  listQueues(): QueueSummary[] {
    const now = this.clock.now();
    return [...this.queues.values()].map((queue) => ({
      virtualMta: queue.virtualMta,
      domain: queue.domain,
      messages: queue.size,
      ready: queue.ready.length,
      scheduled: queue.scheduled.size,
      inFlight: queue.inFlight,
      connections: queue.connections,
      paused: this.isPaused(queue),
      backoff: { active: queue.backoff.isActive(queue.settings.backoff, now), since: queue.backoff.since === undefined ? null : new Date(queue.backoff.since).toISOString() },
      nextRetryAt: queue.scheduled.peek() ? new Date(queue.scheduled.peek()!.dueAt).toISOString() : null,
      lastError: queue.lastError ?? null,
      site: queue.site ?? null,
    }));
  }

  virtualMtaStatus(): VirtualMtaStatus[] {
    return [...this.virtualMtas.values()].map((vmta) => ({
      name: vmta.name,
      sourceAddress: vmta.sourceAddress ?? null,
      usable: !this.unusable.has(vmta.name),
      paused: this.paused.has(pauseKey(vmta.name, undefined)),
      detail: this.unusable.get(vmta.name) ?? null,
    }));
  }

  showMessage(id: string): MessageState | undefined {
    const message = this.messages.get(id);
    if (!message) return undefined;
    const envelope = message.envelope;
    return {
      id,
      virtualMta: envelope.virtualMta,
      mailFrom: envelope.mailFrom,
      receivedAt: new Date(envelope.receivedAt).toISOString(),
      size: envelope.size,
      recipients: envelope.recipients.map((recipient) => ({
        address: recipient.address,
        status: recipient.status,
        attempts: recipient.attempts,
        nextAttemptAt: recipient.status === 'pending' && recipient.nextAttemptAt > 0 ? new Date(recipient.nextAttemptAt).toISOString() : null,
        lastResult: recipient.lastResult ?? (recipient.status === 'pending' ? (this.queues.get(`${envelope.virtualMta}\u0000${recipient.domain}`)?.lastError ?? null) : null),
      })),
    };
  }

  /** Queue ids of waiting messages (in the order queued) with a pending recipient matching the selector: the first `limit`, and how many match. */
  listMessageIds(selector: QueueSelector, limit: number): { total: number; ids: string[] } {
    const domain = selector.domain?.toLowerCase();
    const ids: string[] = [];
    let total = 0;
    for (const [id, { envelope }] of this.messages) {
      if (selector.virtualMta && envelope.virtualMta !== selector.virtualMta) continue;
      if (!envelope.recipients.some((recipient) => recipient.status === 'pending' && (!domain || recipient.domain === domain))) continue;
      total += 1;
      if (ids.length < limit) ids.push(id);
    }
    return { total, ids };
  }

  /**
   * Pause a VirtualMTA, a domain (on every VirtualMTA), one queue, or everything; it holds for
   * queues created later too. Returns the number of existing queues affected.
   */
  pause(selector: QueueSelector): number {
    this.paused.add(pauseKey(selector.virtualMta, selector.domain?.toLowerCase()));
    this.refreshGauges();
    return this.select(selector).length;
  }

  /** Lift exactly that pause (an empty selector lifts every pause); a queue stays paused while a wider pause covers it. */
  resume(selector: QueueSelector): number {
    if (!selector.virtualMta && !selector.domain) this.paused.clear();
    else this.paused.delete(pauseKey(selector.virtualMta, selector.domain?.toLowerCase()));
    const selected = this.select(selector);
    for (const queue of selected) this.pump(queue);
    this.refreshGauges();
    return selected.length;
  }

  /** Make every scheduled message of the selected queues due now; returns how many. */
  retryNow(selector: QueueSelector): number {
    let count = 0;
    const now = this.clock.now();
    for (const queue of this.select(selector)) {
      queue.clearDeferral();
      for (const item of queue.drain((candidate) => candidate.dueAt > now)) {
        item.dueAt = now;
        queue.ready.push(item);
        count += 1;
      }
      this.pump(queue);
    }
    return count;
  }

  /** Bounce (with DSNs) every waiting message of the selected queues; returns how many. */
  async bounce(selector: QueueSelector, reason = 'bounced by the administrator'): Promise<number> {
    return this.finishWaiting(selector, { result: 'bounced', status: '5.0.0', category: 'other', diagnostic: reason }, true);
  }

  /** Drop every waiting message of the selected queues without a DSN; returns how many. */
  async delete(selector: QueueSelector): Promise<number> {
    return this.finishWaiting(selector, { result: 'bounced', status: '5.0.0', category: 'other', diagnostic: 'deleted by the administrator' }, false);
  }

  /** Set the queue depth, oldest-age and backoff gauges from the queues. */
  refreshGauges(): void {
    const now = this.clock.now();
    this.relayMetrics.queueDepth.reset();
    this.metrics.backoffActive.reset();
    this.metrics.oldestMessageAge.reset();
    this.metrics.virtualMtaUsable.reset();
    for (const vmta of this.virtualMtas.keys()) {
      for (const state of ['ready', 'scheduled', 'paused'] as const) this.relayMetrics.queueDepth.set({ virtual_mta: vmta, state }, 0);
      this.metrics.virtualMtaUsable.set({ virtual_mta: vmta }, this.unusable.has(vmta) ? 0 : 1);
    }
    for (const queue of this.queues.values()) {
      const labels = { virtual_mta: queue.virtualMta };
      if (this.isPaused(queue)) {
        this.relayMetrics.queueDepth.inc({ ...labels, state: 'paused' }, queue.size);
      } else {
        this.relayMetrics.queueDepth.inc({ ...labels, state: 'ready' }, queue.ready.length + queue.inFlight);
        this.relayMetrics.queueDepth.inc({ ...labels, state: 'scheduled' }, queue.scheduled.size);
      }
      if (queue.backoff.isActive(queue.settings.backoff, now)) this.metrics.backoffActive.inc({ ...labels, domain: this.metrics.domainLabel(queue.domain) });
    }
    const oldest = new Map<string, number>();
    for (const message of this.messages.values()) {
      const vmta = message.envelope.virtualMta;
      oldest.set(vmta, Math.min(oldest.get(vmta) ?? Number.POSITIVE_INFINITY, message.envelope.receivedAt));
    }
    for (const [vmta, receivedAt] of oldest) this.metrics.oldestMessageAge.set({ virtual_mta: vmta }, Math.max(0, (now - receivedAt) / 1000));
  }

  // ---- scheduling ------------------------------------------------------------------------

  private async applyVirtualMtas(config: RuntimeConfig): Promise<void> {
    const problems = await Promise.all(config.pool.virtualMtas.map(async (vmta) => [vmta, vmta.sourceAddress ? await probeSourceAddress(vmta.sourceAddress) : undefined] as const));
    this.virtualMtas = new Map(config.pool.virtualMtas.map((vmta) => [vmta.name, vmta]));
    this.unusable.clear();
    for (const [vmta, problem] of problems) {
      if (!problem) continue;
      this.unusable.set(vmta.name, problem);
      this.logger.error({ virtualMta: vmta.name, sourceAddress: vmta.sourceAddress }, `VirtualMTA unusable: ${problem}`);
    }
  }

  private openAccounting(config: RuntimeConfig): AccountingLog {
    return new AccountingLog(config.delivery.accounting, (error) => this.logger.error({ err: error, file: config.delivery.accounting.file }, 'accounting file cannot be written'));
  }

  private queueFor(virtualMta: string, domain: string): DestinationQueue {
    const key = `${virtualMta}\u0000${domain}`;
    let queue = this.queues.get(key);
    if (!queue) {
      const vmta = this.virtualMtas.get(virtualMta) ?? { domains: [] };
      queue = new DestinationQueue(virtualMta, domain, resolveDomainSettings(domain, vmta, this.config.pool.domainDefaults));
      this.queues.set(key, queue);
    }
    return queue;
  }

  private select(selector: QueueSelector): DestinationQueue[] {
    const domain = selector.domain?.toLowerCase();
    return [...this.queues.values()].filter((queue) => (!selector.virtualMta || queue.virtualMta === selector.virtualMta) && (!domain || queue.domain === domain));
  }

  private isPaused(queue: DestinationQueue): boolean {
    if (this.paused.size === 0) return false;
    return [pauseKey(queue.virtualMta, queue.domain), pauseKey(queue.virtualMta, undefined), pauseKey(undefined, queue.domain), pauseKey(undefined, undefined)].some((key) => this.paused.has(key));
  }

  private canSend(queue: DestinationQueue): boolean {
    if (this.stopping || this.holding || this.isPaused(queue)) return false;
    if (!this.virtualMtas.has(queue.virtualMta)) {
      queue.lastError = `VirtualMTA "${queue.virtualMta}" is not in the configuration; its mail waits`;
      return false;
    }
    const unusable = this.unusable.get(queue.virtualMta);
    if (unusable) queue.lastError = `VirtualMTA unusable: ${unusable}; its mail waits`;
    return !unusable;
  }

  /** Start connections for ready messages within the limits, and wake up for the next due one. */
  private pump(queue: DestinationQueue): void {
    if (this.stopping) return;
    const now = this.clock.now();
    queue.promoteDue(now);
    if (this.canSend(queue)) {
      const backoff = queue.backoff.isActive(queue.settings.backoff, now) ? queue.settings.backoff : undefined;
      const limit = backoff ? Math.min(backoff.maxSmtpOut, queue.settings.maxSmtpOut) : queue.settings.maxSmtpOut;
      while (queue.connections < limit && queue.ready.length > queue.connections && this.siteConnectionCount(queue) < limit) {
        queue.connections += 1;
        const worker = this.runConnection(queue).finally(() => {
          queue.connections -= 1;
          this.workers.delete(worker);
          this.pump(queue);
          for (const sibling of this.siteSiblings(queue)) this.pump(sibling);
        });
        this.workers.add(worker);
      }
    }
    this.armTimer(queue);
    this.dropIfEmpty(queue);
  }

  private armTimer(queue: DestinationQueue): void {
    const next = queue.scheduled.peek();
    const existing = this.timers.get(queue);
    if (!next) {
      existing?.handle.cancel();
      this.timers.delete(queue);
      return;
    }
    if (existing && existing.at === next.dueAt) return;
    existing?.handle.cancel();
    const handle = this.clock.setTimer(next.dueAt - this.clock.now(), () => {
      this.timers.delete(queue);
      this.pump(queue);
    });
    this.timers.set(queue, { at: next.dueAt, handle });
  }

  private dropIfEmpty(queue: DestinationQueue): void {
    // A queue in backoff is kept so the backoff state outlives its last message.
    if (queue.size === 0 && queue.connections === 0 && !queue.backoff.isActive(queue.settings.backoff, this.clock.now())) {
      this.queues.delete(`${queue.virtualMta}\u0000${queue.domain}`);
    }
  }

  /** One connection's life: resolve, connect (falling back along the MX list), send ready messages, quit. */
  private async runConnection(queue: DestinationQueue): Promise<void> {
    const vmta = this.virtualMtas.get(queue.virtualMta);
    if (!vmta) return;
    const startedAt = this.clock.now();
    let targets: MxTarget[];
    try {
      targets = await this.routeFor(queue, vmta);
    } catch (error) {
      const failure = error instanceof DnsFailure ? error : new DnsFailure('dns-temporary', (error as Error).message);
      this.metrics.dnsFailures.inc({ kind: failure.kind === 'dns-temporary' ? 'temporary' : failure.kind === 'null-mx' ? 'null_mx' : 'no_such_domain' });
      queue.lastError = failure.message;
      await this.failReady(queue, classifyFailure({ kind: failure.kind, message: failure.message }), { startedAt });
      return;
    }
    const route = await routeTls({
      domain: queue.domain,
      settings: queue.settings,
      targets,
      mtaSts: this.mtaSts,
      dnssec: this.dnssec,
      events: {
        stsMismatch: (policy) => {
          this.metrics.mtaStsMismatches.inc({ virtual_mta: vmta.name, mode: policy.mode });
          this.logger.warn({ virtualMta: vmta.name, domain: queue.domain, mode: policy.mode, policyMx: policy.mx }, 'MX hosts outside the MTA-STS policy');
        },
        dane: (result, host, detail) => {
          this.metrics.daneLookups.inc({ result });
          if (result === 'dnssec_invalid') this.logger.warn({ virtualMta: vmta.name, domain: queue.domain, mxHost: host, err: detail }, 'DANE: DNSSEC validation failed, host not used');
        },
      },
    });
    this.tlsSessions?.route(queue.domain, vmta.sourceAddress, route);
    if (!route.ok) {
      queue.lastError = route.message;
      await this.failReady(queue, classifyFailure({ kind: 'tls', message: route.message }), { startedAt });
      return;
    }
    const siteKey = this.joinSite(queue, vmta, targets);
    if (siteKey === null) return;
    try {
      await this.connectAndSend(queue, vmta, route.targets, startedAt);
    } finally {
      if (siteKey !== undefined) this.siteConnections.set(siteKey, (this.siteConnections.get(siteKey) ?? 1) - 1);
    }
  }

  /**
   * With MX rollup, note the domain's site and take a connection slot of it: undefined when
   * rollup does not apply, null when the site is at its limit (a sibling's connection will carry this mail).
   */
  private joinSite(queue: DestinationQueue, vmta: VirtualMtaConfig, targets: readonly MxTarget[]): string | null | undefined {
    if (!this.config.delivery.mxRollup || queue.settings.smtpHost) return undefined;
    queue.site = [...new Set(targets.map((target) => target.name))].sort().join(',');
    const key = `${vmta.name}\u0000${queue.site}`;
    const open = this.siteConnections.get(key) ?? 0;
    if (open >= queue.settings.maxSmtpOut) return null;
    this.siteConnections.set(key, open + 1);
    return key;
  }

  private siteConnectionCount(queue: DestinationQueue): number {
    return queue.site ? (this.siteConnections.get(`${queue.virtualMta}\u0000${queue.site}`) ?? 0) : 0;
  }

  /** Other domains of the same VirtualMTA and site (MX rollup). */
  private siteSiblings(queue: DestinationQueue): DestinationQueue[] {
    if (!queue.site) return [];
    return [...this.queues.values()].filter((other) => other !== queue && other.site === queue.site && other.virtualMta === queue.virtualMta);
  }

  /** The next ready item for this connection: the queue's own, or (MX rollup) a sibling domain's with the same TLS needs. */
  private nextItem(queue: DestinationQueue): { source: DestinationQueue; item: QueueItem } | undefined {
    const now = this.clock.now();
    queue.promoteDue(now);
    const own = queue.ready.shift();
    if (own) return { source: queue, item: own };
    for (const sibling of this.siteSiblings(queue)) {
      if (sibling.settings.tlsPolicy !== queue.settings.tlsPolicy || sibling.settings.mtaSts || queue.settings.mtaSts || isDanePolicy(queue.settings.tlsPolicy) || !this.canSend(sibling)) continue;
      sibling.promoteDue(now);
      const item = sibling.ready.shift();
      if (item) return { source: sibling, item };
    }
    return undefined;
  }

  private async connectAndSend(queue: DestinationQueue, vmta: VirtualMtaConfig, targets: readonly RoutedTarget[], startedAt: number): Promise<void> {
    let connection: OutboundConnection | undefined;
    let lastFailure: ConnectionFailure | undefined;
    let lastTarget: RoutedTarget | undefined;
    for (const target of targets) {
      if (queue.ready.length === 0 || !this.canSend(queue)) return;
      lastTarget = target;
      try {
        connection = await OutboundConnection.open({
          target,
          ehloName: vmta.hostname,
          tlsPolicy: target.tlsPolicy,
          ...(target.dane ? { dane: target.dane } : {}),
          ...(vmta.sourceAddress ? { sourceAddress: vmta.sourceAddress } : {}),
          ...(this.trustedCa ? { trustedCa: this.trustedCa } : {}),
        });
        break;
      } catch (error) {
        lastFailure = error instanceof ConnectionFailure ? error : new ConnectionFailure('connection', (error as Error).message);
        this.tlsSessions?.session(queue.domain, vmta.sourceAddress, target, lastFailure);
        if (lastFailure.kind === 'tls') this.metrics.connections.inc({ virtual_mta: vmta.name, tls: 'failed', tls_version: 'none' });
        if (target.dane && lastFailure.kind === 'tls') this.metrics.daneSessions.inc({ result: 'failed' });
        this.logger.info({ virtualMta: vmta.name, domain: queue.domain, mxHost: target.name, mxIp: target.address, err: lastFailure.message }, 'connection to MX failed, trying the next');
      }
    }
    if (!connection) {
      const failure = lastFailure ?? new ConnectionFailure('connection', `no usable MX address for ${queue.domain}`);
      queue.lastError = failure.message;
      // A refused STARTTLS is a TLS failure (deferred), whatever its reply code; a refused greeting speaks for itself.
      const classification = failure.reply && failure.kind === 'connection' ? classifyReply(failure.reply.code, failure.reply.text) : classifyFailure({ kind: failure.kind, message: failure.message });
      await this.failReady(queue, classification, { startedAt, ...(lastTarget ? { target: lastTarget } : {}) }, failure.reply?.text);
      return;
    }
    queue.lastError = undefined;
    queue.clearDeferral();
    const tls = connection.tls;
    this.tlsSessions?.session(queue.domain, vmta.sourceAddress, lastTarget!, tls);
    if (tls.kind === 'tls' && tls.dane) this.metrics.daneSessions.inc({ result: tls.dane.replace('-', '_') });
    this.metrics.connections.inc({ virtual_mta: vmta.name, tls: tls.kind, tls_version: tls.kind === 'tls' ? tls.version : 'none' });
    try {
      for (let sent = 0; sent < queue.settings.maxMessagesPerConnection && connection.usable && this.canSend(queue); sent += 1) {
        const next = this.nextItem(queue);
        if (!next) break;
        const { source, item } = next;
        source.inFlight += 1;
        try {
          await this.paceRate(source);
          await this.deliverItem(source, item, connection);
        } finally {
          source.inFlight -= 1;
        }
      }
    } finally {
      connection.close();
    }
  }

  private async routeFor(queue: DestinationQueue, vmta: VirtualMtaConfig): Promise<MxTarget[]> {
    const family = vmta.sourceAddress ? net.isIP(vmta.sourceAddress) : 0;
    const usable = (address: string) => family === 0 || net.isIP(address) === family;
    const smtpHost = queue.settings.smtpHost;
    if (smtpHost) {
      const addresses = (await this.resolver.resolveHost(smtpHost.host)).filter(usable);
      return addresses.map((address) => ({ name: smtpHost.host, address, port: smtpHost.port }));
    }
    const hosts = await this.resolver.resolveMx(queue.domain);
    const targets = hosts.flatMap((host) => host.addresses.filter(usable).map((address) => ({ name: host.name, address, port: this.config.delivery.mxPort })));
    if (targets.length === 0) throw new DnsFailure('dns-temporary', `no MX address of ${queue.domain} matches the source address family`);
    return targets;
  }

  /** Wait until maxMessageRate (or the backoff rate) allows the next message. */
  private async paceRate(queue: DestinationQueue): Promise<void> {
    const now = this.clock.now();
    const backoff = queue.backoff.isActive(queue.settings.backoff, now) ? queue.settings.backoff : undefined;
    const rate = backoff?.maxMessageRate ?? queue.settings.maxMessageRate;
    if (!rate) return;
    const interval = rate.perMs / rate.count;
    const startAt = Math.max(now, queue.nextSendAt);
    queue.nextSendAt = startAt + interval;
    if (startAt > now) await new Promise<void>((resolve) => this.clock.setTimer(startAt - now, resolve));
  }

  private async deliverItem(queue: DestinationQueue, item: QueueItem, connection: OutboundConnection): Promise<void> {
    if (!this.messages.has(item.message.id)) return;
    const envelope = item.message.envelope;
    const context: AttemptContext = { target: connection.target, tls: connection.tls, startedAt: this.clock.now() };
    const addresses = item.recipients.map((index) => envelope.recipients[index]!.address);
    const needsUtf8 = envelope.smtpUtf8 || [envelope.mailFrom, ...addresses].some((address) => /[^\x00-\x7f]/.test(address));
    if (needsUtf8 && !connection.supportsSmtpUtf8) {
      const classification = classifyFailure({ kind: 'utf8-unsupported', message: `${connection.target.name} does not support SMTPUTF8, needed by this message` });
      await this.recordResults(queue, item, new Map(item.recipients.map((index) => [index, classification])), context);
      return;
    }
    const outcome = await connection.send(
      { from: envelope.mailFrom, to: addresses, size: envelope.size, eightBitMime: envelope.eightBitMime },
      this.spool.readMessage(item.message.id),
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
    await this.recordResults(queue, item, classifications, context);
  }

  /**
   * A DNS or connection failure applies to every ready message of the queue. A permanent one
   * (null MX, no such domain, 5xx greeting) bounces each message durably. A temporary one defers
   * the queue as a whole, in memory only: one retry time for the queue, no spool record and no
   * result string per message (a restart simply tries the destination once more). Messages past
   * bounceAfter still expire with a durable bounce and DSN; accounting and metrics still count
   * each deferred recipient.
   */
  private async failReady(queue: DestinationQueue, classification: Classification, context: AttemptContext, reply?: string): Promise<void> {
    const items = queue.ready.splice(0, queue.ready.length);
    if (classification.result !== 'deferred') {
      await this.recordAll(queue, items, classification, context, reply, true);
      return;
    }
    const now = this.clock.now();
    // Parallel connections of the queue fail together; the first one to get here defers it.
    if (items.length === 0 && queue.retryAt > now) return;
    if (queue.backoff.onFailureReply(queue.settings.backoff, reply ?? classification.diagnostic, now)) {
      this.logger.warn({ virtualMta: queue.virtualMta, domain: queue.domain, reply: classification.diagnostic }, 'backoff entered');
    }
    const backoff = queue.backoff.isActive(queue.settings.backoff, now) ? queue.settings.backoff : undefined;
    const expired = items.filter((item) => now >= item.message.envelope.receivedAt + queue.settings.bounceAfter);
    const waiting = expired.length === 0 ? items : items.filter((item) => now < item.message.envelope.receivedAt + queue.settings.bounceAfter);
    // One push per item: spreading a whole queue into push() overflows the stack (~120,000 items).
    for (const item of waiting) queue.ready.push(item);
    queue.deferUntil(now + (backoff?.retryAfter ?? retryDelay(queue.settings.retryAfter, queue.failures + 1)), now);
    this.logger.info({ virtualMta: queue.virtualMta, domain: queue.domain, messages: waiting.length, retryAt: new Date(queue.retryAt).toISOString(), err: classification.diagnostic }, 'destination deferred');
    for (const item of waiting) {
      for (const index of item.recipients) {
        const recipient = item.message.envelope.recipients[index]!;
        recipient.attempts += 1;
        recipient.nextAttemptAt = item.dueAt;
        this.writeAccounting(queue, item.message, index, classification, context, now);
      }
    }
    // Expired messages bounce through the usual path (afterDeferral turns the deferral into an expiry).
    if (expired.length > 0) await this.recordAll(queue, expired, classification, context, reply, true);
  }

  /** Record one classification for many items, a batch at a time; each counts as in flight until recorded. */
  private async recordAll(queue: DestinationQueue, items: QueueItem[], classification: Classification, context: AttemptContext, reply: string | undefined, sendDsn: boolean): Promise<void> {
    queue.inFlight += items.length;
    await inBatches(items, async (item) => {
      try {
        await this.recordResults(queue, item, new Map(item.recipients.map((index) => [index, classification])), context, reply, sendDsn);
      } finally {
        queue.inFlight -= 1;
      }
    });
  }

  /** Bounce or delete every waiting message of the selected queues. */
  private async finishWaiting(selector: QueueSelector, classification: Classification, sendDsn: boolean): Promise<number> {
    let count = 0;
    for (const queue of this.select(selector)) {
      const items = queue.drain();
      count += items.length;
      await this.recordAll(queue, items, classification, NO_TARGET, undefined, sendDsn);
      this.pump(queue);
    }
    return count;
  }

  /**
   * Turn classifications into durable recipient results: deferrals get their next attempt
   * (or expire at bounceAfter), backoff is entered or left, accounting and metrics are written,
   * bounces produce a DSN, and a message with no pending recipient left is removed.
   */
  private async recordResults(
    queue: DestinationQueue,
    item: QueueItem,
    classifications: ReadonlyMap<number, Classification>,
    context: AttemptContext,
    backoffReply?: string,
    sendDsn = true,
  ): Promise<void> {
    const message = item.message;
    const envelope = message.envelope;
    const now = this.clock.now();
    const results = new Map<number, RecipientResult>();
    const final = new Map<number, Classification>();
    const deferred: number[] = [];
    for (const [index, initial] of classifications) {
      const recipient = envelope.recipients[index]!;
      let classification = initial;
      if (classification.result === 'delivered') {
        if (queue.backoff.onDelivery()) this.logger.info({ virtualMta: queue.virtualMta, domain: queue.domain }, 'backoff left after a delivery');
        results.set(index, { status: 'delivered', nextAttemptAt: 0, lastResult: classification.diagnostic });
        this.metrics.deliveryLatency.observe({ virtual_mta: queue.virtualMta }, Math.max(0, now - envelope.receivedAt) / 1000);
      } else if (classification.result === 'deferred') {
        if (queue.backoff.onFailureReply(queue.settings.backoff, backoffReply ?? classification.diagnostic, now)) {
          this.logger.warn({ virtualMta: queue.virtualMta, domain: queue.domain, reply: classification.diagnostic }, 'backoff entered');
        }
        const backoff = queue.backoff.isActive(queue.settings.backoff, now) ? queue.settings.backoff : undefined;
        const next = afterDeferral({
          now,
          receivedAt: envelope.receivedAt,
          attemptsMade: recipient.attempts + 1,
          schedule: queue.settings.retryAfter,
          bounceAfter: queue.settings.bounceAfter,
          ...(backoff ? { overrideDelay: backoff.retryAfter } : {}),
        });
        if (next.kind === 'expired') {
          classification = classifyFailure({ kind: 'expired', message: `delivery time expired; last error: ${classification.diagnostic}` });
          results.set(index, { status: 'bounced', nextAttemptAt: 0, lastResult: classification.diagnostic });
        } else {
          results.set(index, { status: 'pending', nextAttemptAt: next.nextAttemptAt, lastResult: classification.diagnostic });
          deferred.push(index);
        }
      } else {
        results.set(index, { status: 'bounced', nextAttemptAt: 0, lastResult: classification.diagnostic });
      }
      final.set(index, classification);
    }
    try {
      await this.spool.recordRecipientResults(message.id, results);
    } catch (error) {
      // Not durable: keep the recipients pending in memory and try again later rather than lose or repeat silently.
      this.logger.error({ queueId: message.id, err: error }, 'recording recipient results failed; will retry');
      queue.add({ message, recipients: [...classifications.keys()], dueAt: now + 60_000 }, now);
      return;
    }
    for (const [index, result] of results) {
      const recipient = envelope.recipients[index]!;
      recipient.status = result.status;
      recipient.attempts += 1;
      recipient.nextAttemptAt = result.nextAttemptAt;
      if (result.lastResult !== undefined) recipient.lastResult = result.lastResult;
      const classification = final.get(index)!;
      this.writeAccounting(queue, message, index, classification, context, now);
    }
    if (deferred.length > 0) {
      const dueAt = deferred.reduce((earliest, index) => Math.min(earliest, envelope.recipients[index]!.nextAttemptAt), Number.POSITIVE_INFINITY);
      queue.add({ message, recipients: deferred, dueAt }, now);
    }
    const bounced = [...final].filter(([, classification]) => classification.result === 'bounced');
    if (sendDsn && bounced.length > 0 && envelope.mailFrom !== '') {
      await this.sendDsn(message, bounced.map(([index, classification]) => ({
        address: envelope.recipients[index]!.address,
        status: classification.status,
        diagnostic: classification.diagnostic,
        ...(context.target ? { remoteMta: context.target.name } : {}),
        lastAttemptAt: now,
      })));
    }
    // Several destination queues may finish the same message concurrently: only the first removes it.
    if (envelope.recipients.every((recipient) => recipient.status !== 'pending') && this.messages.delete(message.id)) {
      await this.spool.remove(message.id).catch((error: Error) => this.logger.error({ queueId: message.id, err: error }, 'removing a finished message failed'));
    }
  }

  private writeAccounting(queue: DestinationQueue, message: QueuedMessage, index: number, classification: Classification, context: AttemptContext, now: number): void {
    const recipient = message.envelope.recipients[index]!;
    const vmta = this.virtualMtas.get(queue.virtualMta);
    const tls = context.tls?.kind === 'tls' ? context.tls : undefined;
    this.metrics.attempts.inc({ virtual_mta: queue.virtualMta, domain: this.metrics.domainLabel(queue.domain), result: classification.result, bounce_category: classification.category ?? 'none' });
    this.accounting.write({
      time: new Date(now).toISOString(),
      queueId: message.id,
      virtualMta: queue.virtualMta,
      sourceAddress: vmta?.sourceAddress ?? null,
      sender: message.envelope.mailFrom,
      recipient: recipient.address,
      domain: queue.domain,
      mxHost: context.target?.name ?? null,
      mxIp: context.target?.address ?? null,
      result: classification.result,
      dsnStatus: classification.status,
      diagnostic: classification.diagnostic,
      bounceCategory: classification.category ?? null,
      attempt: recipient.attempts,
      tlsVersion: tls?.version ?? null,
      tlsCipher: tls?.cipher ?? null,
      durationMs: context.startedAt ? Math.max(0, now - context.startedAt) : 0,
    });
  }

  /** Store an RFC 3464 bounce to the sender (null sender, same VirtualMTA) and queue it. */
  private async sendDsn(message: QueuedMessage, recipients: FailedRecipient[]): Promise<void> {
    try {
      const stored = await storeDsn(this.spool, { reportingMta: this.config.hostname, queueId: message.id, envelope: message.envelope, recipients, now: this.clock.now() });
      this.metrics.dsnsGenerated.inc({ virtual_mta: message.envelope.virtualMta });
      this.logger.info({ queueId: message.id, dsnQueueId: stored.id, recipients: recipients.length }, 'DSN queued to the sender');
      this.enqueue(stored);
    } catch (error) {
      this.logger.error({ queueId: message.id, err: error }, 'could not create the DSN');
    }
  }
}

function pauseKey(virtualMta: string | undefined, domain: string | undefined): string {
  return `${virtualMta ?? '*'}\u0000${domain ?? '*'}`;
}

/** Items a queue-wide failure or admin call records at once; bounds memory and open spool writes for huge queues. */
const RECORD_BATCH = 256;

async function inBatches<T>(items: readonly T[], record: (item: T) => Promise<void>): Promise<void> {
  for (let start = 0; start < items.length; start += RECORD_BATCH) {
    await Promise.all(items.slice(start, start + RECORD_BATCH).map(record));
  }
}
