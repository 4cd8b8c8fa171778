// The delivery engine's front: builds the pipeline and is the one surface the relay, the admin
// API and the drain use. A spooled message goes through the parts in order:
//   queue-scheduler.ts   message records, destination queues, timers, pauses and limits
//   connection-runner.ts one session: route, TLS policy, connect, send, classify replies
//   outcome-recorder.ts  durable recipient results, retries/expiry, backoff, accounting, DSNs
//   queue-view.ts        read-only queue/message summaries and the queue gauges
// This file only wires them, fans reloads out, and runs start/stop. See docs/delivery-engine.md.
import type { Logger } from 'pino';
import type { RuntimeConfig } from '../config/schema.ts';
import { DeliveryMetrics } from '../observe/delivery-metrics.ts';
import type { RelayMetrics } from '../observe/metrics.ts';
import type { Spool, SpooledMessage } from '../spool/types.ts';
import { systemClock, type Clock } from './clock.ts';
import { ConnectionRunner } from './connection-runner.ts';
import { DestinationDeferrals } from './deferral-record.ts';
import { VirtualMtaRegistry, type DeliveryContext } from './delivery-context.ts';
import { EgressProxyHealth, type EgressProxyState } from './egress-proxy-health.ts';
import type { QueuedMessage } from './destination-queue.ts';
import { readFleetPosition } from './fleet-position.ts';
import { countShare } from './fleet-share.ts';
import type { AppliedStsPolicy } from './mta-sts.ts';
import type { MxResolver } from './mx-resolver.ts';
import { NO_TARGET, OutcomeRecorder } from './outcome-recorder.ts';
import { QueueScheduler, type QueueSelector } from './queue-scheduler.ts';
import { QueueView, type MessageState, type QueueSummary, type VirtualMtaStatus } from './queue-view.ts';
import type { Classification } from './reply-classification.ts';
import type { TlsSessionRecorder } from '../reporting/tls-rpt-sessions.ts';
import { WarmupLedger, type WarmupStatus } from './warmup-ledger.ts';

export type { QueueSelector } from './queue-scheduler.ts';
export type { MessageState, QueueSummary, VirtualMtaStatus } from './queue-view.ts';

export interface DeliveryEngineOptions {
  config: RuntimeConfig;
  spool: Spool;
  metrics: RelayMetrics;
  logger: Logger;
  clock?: Clock;
  /** This pod's name, whose ordinal places it in the fleet (`fleet` config); defaults to POD_NAME. */
  podName?: string;
  /** Defaults to a resolver on `config.delivery.resolvers`. */
  resolver?: MxResolver;
  /** Trust anchors for `verify` TLS instead of the system roots (private CAs, tests). */
  trustedCa?: Buffer | Buffer[];
  /** Scan the spool at start and queue what it holds (default true). */
  recover?: boolean;
  /** Pauses in force before anything is recovered (the ones saved before a restart). */
  pauses?: QueueSelector[];
  /** Where state that outlives a restart is kept (the MTA-STS policy cache): the spool volume's state/ folder. */
  stateDir?: string;
  /** Where MTA-STS policies are fetched from instead of mta-sts.<domain>:443 with system roots (tests). */
  mtaStsFetch?: { connectAddress?: string; port?: number; ca?: Buffer | Buffer[] };
  /** Told every session's TLS outcome (TLS-RPT, mta/reporting/). */
  tlsSessions?: TlsSessionRecorder;
  /** Told of every recipient that bounced (the suppression list). */
  onRecipientBounced?: (address: string, classification: Classification) => void;
  /** Told of every attempt recorded for a message at one destination (the relay's IdleMemoryRelease counts them). */
  onMessageAttempted?: () => void;
}

export class DeliveryEngine {
  readonly #context: DeliveryContext;
  readonly #podName: string | undefined;
  readonly #scheduler: QueueScheduler;
  readonly #recorder: OutcomeRecorder;
  readonly #runner: ConnectionRunner;
  readonly #view: QueueView;
  #gaugeTimer: NodeJS.Timeout | undefined;

  private constructor(options: DeliveryEngineOptions) {
    const metrics = new DeliveryMetrics(options.metrics.registry);
    this.#podName = options.podName ?? process.env.POD_NAME;
    metrics.setTrackedDomains(options.config.delivery.trackedDomains);
    this.#context = {
      config: options.config,
      spool: options.spool,
      relayMetrics: options.metrics,
      metrics,
      logger: options.logger,
      clock: options.clock ?? systemClock,
      virtualMtas: new VirtualMtaRegistry(options.logger),
      // A pool's warm-up caps hold for the pool: each pod takes its part from the fleet membership, like its connections.
      warmup: new WarmupLedger({ logger: options.logger, ...(options.stateDir ? { stateDir: options.stateDir } : {}), capShare: (cap, now) => (this.#scheduler.limits.fleet ? countShare(cap, this.#scheduler.limits.fleet, now) : cap) }),
      deferrals: new DestinationDeferrals(options.stateDir, options.logger),
      egressProxies: new EgressProxyHealth(options.clock ?? systemClock, metrics),
    };
    this.#scheduler = new QueueScheduler(this.#context);
    this.#recorder = new OutcomeRecorder(this.#context, this.#scheduler, { ...(options.stateDir ? { stateDir: options.stateDir } : {}), ...(options.onRecipientBounced ? { onRecipientBounced: options.onRecipientBounced } : {}), ...(options.onMessageAttempted ? { onMessageAttempted: options.onMessageAttempted } : {}) });
    this.#runner = new ConnectionRunner(this.#context, this.#scheduler, this.#recorder, {
      ...(options.resolver ? { resolver: options.resolver } : {}),
      ...(options.trustedCa ? { trustedCa: options.trustedCa } : {}),
      ...(options.stateDir ? { stateDir: options.stateDir } : {}),
      ...(options.mtaStsFetch ? { mtaStsFetch: options.mtaStsFetch } : {}),
      ...(options.tlsSessions ? { tlsSessions: options.tlsSessions } : {}),
    });
    this.#scheduler.sessionStarter = (queue) => this.#runner.run(queue);
    this.#view = new QueueView(this.#context, this.#scheduler);
  }

  /** Probe source addresses, recover the spool's messages and start delivering. */
  static async start(options: DeliveryEngineOptions): Promise<DeliveryEngine> {
    const engine = DeliveryEngine.create(options);
    await engine.startDelivering(options);
    return engine;
  }

  /** An engine that has not started: the relay mounts its admin routes on it before anything is awaited. */
  static create(options: DeliveryEngineOptions): DeliveryEngine {
    return new DeliveryEngine(options);
  }

  /** What start() does after creating the engine (call once, with the options it was created with). */
  async startDelivering(options: DeliveryEngineOptions): Promise<void> {
    this.#scheduler.limits.fleet = await readFleetPosition(options.config, this.#podName);
    await this.#context.virtualMtas.apply(options.config);
    await this.#context.deferrals.load();
    this.#context.deferrals.holdsMail = (virtualMta, domain) => this.#scheduler.queue(virtualMta, domain) !== undefined;
    this.#context.egressProxies.apply(options.config.pool.virtualMtas);
    for (const selector of options.pauses ?? []) this.#scheduler.pause(selector);
    if (options.recover ?? true) {
      await this.queueRecovered(options.spool.scan());
    }
    options.spool.onDeliveryResume?.(() => [...this.#scheduler.queues()].forEach((queue) => this.#scheduler.pump(queue)));
    this.#gaugeTimer = setInterval(() => this.refreshGauges(), 5_000);
    this.#gaugeTimer.unref();
    this.refreshGauges();
  }

  /**
   * Queue every message a scan of the spool at start yields (a finished one is removed, once its
   * accounting is complete: OutcomeRecorder.accountingRecovery), then forget the deferrals read
   * for them. What scan() yields belongs to no one else, so the engine takes it without a copy (a
   * copy of a million envelopes is a million more for the collector).
   */
  async queueRecovered(scan: AsyncIterable<SpooledMessage>, onQueued: () => void = () => {}): Promise<void> {
    const accounting = await this.#recorder.accountingRecovery();
    for await (const message of scan) {
      accounting.recovered(message);
      if (message.envelope.recipients.some((recipient) => recipient.status === 'pending')) this.#scheduler.enqueueOwned(message);
      onQueued();
    }
    this.#context.deferrals.recoveryFinished();
  }

  /** Queue a newly accepted (or recovered) message; only its envelope is kept. A message already queued is ignored. */
  enqueue(spooled: SpooledMessage): void {
    this.#scheduler.enqueue(spooled);
  }

  /** Write the receipt records of a message just accepted (accounting `r`). */
  recordReceipts(message: SpooledMessage): void {
    this.#recorder.recordReceipts(message);
  }

  /** Resolves once every accounting record written so far is synced to its files. */
  async flushAccounting(): Promise<void> {
    await this.#recorder.flushAccounting();
  }

  /** Take a new runtime config: VirtualMTAs, per-domain settings, resolvers, accounting. */
  async reload(config: RuntimeConfig): Promise<void> {
    const fleet = await readFleetPosition(config, this.#podName); // before any change: a bad membership file refuses the version
    const previous = this.#context.config;
    this.#context.config = config;
    this.#context.metrics.setTrackedDomains(config.delivery.trackedDomains);
    this.#runner.reload(previous, config);
    await this.#recorder.reload(previous, config);
    await this.#context.virtualMtas.apply(config);
    this.#scheduler.limits.fleet = fleet;
    this.#context.egressProxies.apply(config.pool.virtualMtas);
    this.#scheduler.applySettings();
  }

  /** Stop starting work, let connections finish their current message, close the accounting log. */
  async stop(): Promise<void> {
    if (this.#gaugeTimer) clearInterval(this.#gaugeTimer);
    await this.#scheduler.stop();
    this.#runner.flush();
    this.#context.warmup.flush();
    await this.#recorder.close();
    await this.#context.deferrals.close();
  }

  // ---- drain (mta/drain/) ----------------------------------------------------------------

  /** Messages the engine holds (queued, scheduled or being delivered). */
  get queuedMessages(): number {
    return this.#scheduler.messageCount;
  }

  /** Start no more deliveries and wait until every attempt in flight is recorded. */
  async hold(): Promise<void> {
    await this.#scheduler.hold();
  }

  /** After hold(): take every message out of the engine (the spool is untouched); the caller owns them now. */
  takeAll(): QueuedMessage[] {
    return this.#scheduler.takeAll();
  }

  /** Deliver again after hold(): the drain ended or was cancelled. */
  release(): void {
    this.#scheduler.release();
  }

  // ---- queue control (mta/admin/) --------------------------------------------------------

  /** The MTA-STS policies in force, per recipient domain (cached, as the last deliveries applied them). */
  mtaStsPolicies(): AppliedStsPolicy[] {
    return this.#runner.mtaStsPolicies();
  }

  /** What this relay knows of each VirtualMTA's egress proxies. */
  egressProxies(): EgressProxyState[] {
    return this.#context.egressProxies.list();
  }

  listQueues(): QueueSummary[] {
    return this.#view.listQueues();
  }

  virtualMtaStatus(): VirtualMtaStatus[] {
    return this.#view.virtualMtaStatus();
  }

  showMessage(id: string): MessageState | undefined {
    return this.#view.showMessage(id);
  }

  /** Queue ids of waiting messages (in the order queued) with a pending recipient matching the selector: the first `limit`, and how many match. */
  listMessageIds(selector: QueueSelector, limit: number): { total: number; ids: string[] } {
    return this.#view.listMessageIds(selector, limit);
  }

  /**
   * Pause a VirtualMTA, a domain (on every VirtualMTA), one queue, or everything; it holds for
   * queues created later too. Returns the number of existing queues affected.
   */
  pause(selector: QueueSelector): number {
    const affected = this.#scheduler.pause(selector);
    this.refreshGauges();
    return affected;
  }

  /** The pauses in force, as the selectors that set them. */
  pauses(): QueueSelector[] {
    return this.#scheduler.pauses();
  }

  /** Lift exactly that pause (an empty selector lifts every pause); a queue stays paused while a wider pause covers it. */
  resume(selector: QueueSelector): number {
    const affected = this.#scheduler.resume(selector);
    this.refreshGauges();
    return affected;
  }

  /** Make every scheduled message of the selected queues due now; returns how many. */
  retryNow(selector: QueueSelector): number {
    return this.#scheduler.retryNow(selector);
  }

  /** Bounce (with DSNs) every waiting message of the selected queues; returns how many. */
  async bounce(selector: QueueSelector, reason = 'bounced by the administrator'): Promise<number> {
    return this.#finishWaiting(selector, { result: 'bounced', status: '5.0.0', category: 'other', diagnostic: reason }, true);
  }

  /** Drop every waiting message of the selected queues without a DSN; returns how many. */
  async delete(selector: QueueSelector): Promise<number> {
    return this.#finishWaiting(selector, { result: 'bounced', status: '5.0.0', category: 'other', diagnostic: 'deleted by the administrator' }, false);
  }

  /** Day, caps and use of each VirtualMTA still warming up (on this pod). */
  warmupStatus(): WarmupStatus[] {
    return this.#context.warmup.status(this.#context.virtualMtas.all(), this.#context.clock.now());
  }

  /** Set the queue depth, oldest-age, backoff and warm-up gauges. */
  refreshGauges(): void {
    this.#view.refreshGauges();
    const { metrics } = this.#context;
    metrics.warmupCap.reset();
    metrics.warmupUsed.reset();
    for (const status of this.warmupStatus()) {
      const labels = { vmta: status.virtualMta, ...(status.providerGroup !== undefined ? { provider_group: status.providerGroup } : {}) };
      metrics.warmupCap.set(labels, status.dailyCap);
      metrics.warmupUsed.set(labels, status.dailyUsed);
    }
  }

  /** Bounce or delete every waiting message of the selected queues. */
  async #finishWaiting(selector: QueueSelector, classification: Classification, sendDsn: boolean): Promise<number> {
    let count = 0;
    for (const queue of this.#scheduler.select(selector)) {
      const items = queue.drain();
      count += items.length;
      await this.#recorder.recordAll(queue, items, classification, NO_TARGET, undefined, sendDsn);
      this.#scheduler.pump(queue);
    }
    return count;
  }
}
