// The scheduler: owns the queued message records (envelopes, never bodies), the per-VirtualMTA
// x domain destination queues, their wake-up timers, pauses, and the connection limits
// (per domain, backoff, MX-rollup site, message rate). It decides when a queue may open a
// connection and hands the queue to a session (connection-runner.ts); it never talks SMTP and
// never writes results (outcome-recorder.ts does).
// With `delivery.mxRollup`, domains whose MX host sets are the same form one "site" per
// VirtualMTA: the connection limit applies to the site and an open connection carries mail
// for every domain of the site, while retry state, pauses and listing stay per domain.
// A warming VirtualMTA (warmup-ledger.ts) takes a unit of its cap (and of its provider group's cap,
// once the queue's MX hosts placed it in a group) for each message a connection takes; at the cap
// its waiting mail moves to an overflow VirtualMTA's queue for the same domain, or, with none,
// waits until the window ends (docs/warmup.md). Limits: destination-limits.ts (domain, site,
// provider group, fleet shares), session-slots.ts (pod-wide); idle connections: idle-connections.ts.
import type { VirtualMtaConfig } from '../config/schema.ts';
import type { Envelope, QueueId, RecipientResult, RecipientStatus, SpooledMessage } from '../spool/types.ts';
import type { TimerHandle } from './clock.ts';
import { applyDeferralRounds } from './deferral-record.ts';
import type { DeliveryContext } from './delivery-context.ts';
import { DestinationLimits, providerGroupFor } from './destination-limits.ts';
import { quitIdleConnections, wakeIdleConnections } from './idle-connections.ts';
import { DestinationQueue, queueItem, type QueuedMessage, type QueueItem } from './destination-queue.ts';
import { resolveDomainSettings } from './domain-settings.ts';
import { SessionSlots } from './session-slots.ts';
import type { MxTarget } from './outbound-connection.ts';
import { StringTable } from './string-table.ts';
import { isDanePolicy } from './tls-route.ts';

/** Which queues a control call applies to; an empty selector means every queue. */
export interface QueueSelector {
  virtualMta?: string;
  domain?: string;
}

/** Runs one connection's life for a queue (connection-runner.ts); the scheduler counts it until it settles. */
export type SessionStarter = (queue: DestinationQueue) => Promise<void>;

export class QueueScheduler {
  readonly #context: DeliveryContext;
  #startSession: SessionStarter = async () => {};
  readonly #messages = new Map<QueueId, QueuedMessage>();
  readonly #strings = new StringTable();
  readonly #queues = new Map<string, DestinationQueue>();
  readonly #timers = new Map<DestinationQueue, { at: number; handle: TimerHandle }>();
  readonly #sessions = new Set<Promise<void>>();
  readonly slots = new SessionSlots(() => this.#context.config.delivery.maxConnections);
  readonly limits: DestinationLimits;
  /** Wakes every queue when a fleet share may change hands (a rotating turn, a raise). */
  #shareTimer: { at: number; handle: TimerHandle } | undefined;
  /** Paused selectors as "virtualMta\0domain" with "*" for a field left out. */
  readonly #paused = new Set<string>();
  #stopping = false;
  /** A drain is handing the queue over: nothing new is started (see hold()). */
  #holding = false;
  /** Turn among overflow VirtualMTAs. */
  #overflowTurn = 0;

  constructor(context: DeliveryContext) {
    this.#context = context;
    this.limits = new DestinationLimits(context);
  }

  /** Who runs a queue's sessions; set once by the engine before anything is queued. */
  set sessionStarter(start: SessionStarter) {
    this.#startSession = start;
  }

  // ---- message records -----------------------------------------------------------------

  /** Messages held (queued, scheduled or being delivered). */
  get messageCount(): number {
    return this.#messages.size;
  }

  /** Every message held, in the order queued. */
  messages(): IterableIterator<QueuedMessage> {
    return this.#messages.values();
  }

  message(id: QueueId): QueuedMessage | undefined {
    return this.#messages.get(id);
  }

  holds(id: QueueId): boolean {
    return this.#messages.has(id);
  }

  /** Drop a finished message; false when it was already gone (several queues may finish it at once). */
  forget(id: QueueId): boolean {
    return this.#messages.delete(id);
  }

  /** Queue a newly accepted (or recovered) message; only its envelope is kept. A message already queued is ignored. */
  enqueue(spooled: SpooledMessage): void {
    if (this.#messages.has(spooled.id)) return;
    // The engine updates recipient state in place, so it keeps its own copy of the recipients.
    const message = { id: spooled.id, envelope: { ...spooled.envelope, recipients: spooled.envelope.recipients.map((recipient) => ({ ...recipient })) } };
    this.#markLateArrivals(message);
    this.enqueueOwned(message);
  }

  /**
   * A message accepted no later than the newest message of a destination's last queue-wide
   * deferral, but queued after it (stores finish out of order), did not take part in it, which
   * the deferral's record cannot tell: a journal record of its state, due at the queue's retry,
   * says so (a restart replays only the deferrals from then on, as memory counts them). Rare: accept and queue are milliseconds apart.
   */
  #markLateArrivals(message: QueuedMessage): void {
    const { envelope } = message;
    const now = this.#context.clock.now();
    const results = new Map<number, RecipientResult>();
    envelope.recipients.forEach((recipient, index) => {
      const queue = this.queue(envelope.virtualMta, recipient.domain);
      if (recipient.status !== 'pending' || !queue || queue.deferredUpTo < envelope.receivedAt) return;
      // It waits for the queue's retry like the rest (DestinationQueue.add), so a later round before that retry is not its own either.
      const waitsUntil = queue.retryAt > now ? Math.min(queue.retryAt, envelope.receivedAt + queue.settings.bounceAfter) : now;
      recipient.nextAttemptAt = Math.max(recipient.nextAttemptAt, waitsUntil);
      results.set(index, { status: 'pending', nextAttemptAt: recipient.nextAttemptAt, attempts: recipient.attempts, ...(recipient.lastResult !== undefined ? { lastResult: recipient.lastResult } : {}) });
    });
    if (results.size === 0) return;
    const { spool, logger } = this.#context;
    spool.recordRecipientResults(message.id, results).catch((error: Error) => logger.warn({ queueId: message.id, err: error }, 'recording a message queued after a destination deferral failed; a restart may count that deferral for it'));
  }

  /** Queue a message whose envelope the engine may keep and change (recovery: straight from the spool scan); its record is its first item. */
  enqueueOwned(message: QueuedMessage): void {
    if (this.#messages.has(message.id)) return;
    this.#shareStrings(message.envelope);
    const { envelope } = message;
    const byDomain = new Map<string, number[]>();
    envelope.recipients.forEach((recipient, index) => {
      if (recipient.status !== 'pending') return;
      const rounds = this.#context.deferrals.recovered(envelope.virtualMta, recipient.domain);
      if (rounds && rounds.at(-1)!.acceptedUpTo >= envelope.receivedAt) {
        applyDeferralRounds(recipient, envelope.receivedAt, envelope.receivedAt + this.#queueFor(envelope.virtualMta, recipient.domain).settings.bounceAfter, rounds);
      }
      const indexes = byDomain.get(recipient.domain) ?? [];
      indexes.push(index);
      byDomain.set(recipient.domain, indexes);
    });
    if (byDomain.size === 0) {
      const { spool, logger } = this.#context;
      void spool.remove(message.id).catch((error: Error) => logger.error({ queueId: message.id, err: error }, 'removing a finished message failed'));
      return;
    }
    const items = [...byDomain].map(([domain, recipients]) => ({ domain, item: queueItem(message, recipients, recipients.reduce((latest, index) => Math.max(latest, envelope.recipients[index]!.nextAttemptAt), 0)) }));
    this.#messages.set(message.id, items[0]!.item);
    const now = this.#context.clock.now();
    for (const { domain, item } of items) {
      const queue = this.#queueFor(envelope.virtualMta, domain);
      queue.add(item, now);
      this.pump(queue);
    }
  }

  /** Point the envelope's repeated strings at one shared copy each (memory of large queues). */
  #shareStrings(envelope: Envelope): void {
    const table = this.#strings;
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

  // ---- queues --------------------------------------------------------------------------

  queues(): IterableIterator<DestinationQueue> {
    return this.#queues.values();
  }

  queue(virtualMta: string, domain: string): DestinationQueue | undefined {
    return this.#queues.get(`${virtualMta}\u0000${domain}`);
  }

  #queueFor(virtualMta: string, domain: string): DestinationQueue {
    const key = `${virtualMta}\u0000${domain}`;
    let queue = this.#queues.get(key);
    if (!queue) {
      const vmta = this.#context.virtualMtas.get(virtualMta) ?? { domains: [] };
      // The provider group is not known before the first MX lookup (placeInProviderGroup).
      queue = new DestinationQueue(virtualMta, domain, resolveDomainSettings(domain, vmta, this.#context.config.pool.domainDefaults));
      // Recovery: the destination's deferral before the restart holds on (retry time, position in the retry schedule).
      const last = this.#context.deferrals.recovered(virtualMta, domain)?.at(-1);
      if (last) queue.restoreDeferral(last.retryAt, last.failures);
      this.#queues.set(key, queue);
    }
    return queue;
  }

  select(selector: QueueSelector): DestinationQueue[] {
    const domain = selector.domain?.toLowerCase();
    return [...this.#queues.values()].filter((queue) => (!selector.virtualMta || queue.virtualMta === selector.virtualMta) && (!domain || queue.domain === domain));
  }

  /** A new config: every queue takes its domain's settings again and is pumped. */
  applySettings(): void {
    const { virtualMtas } = this.#context;
    for (const queue of this.#queues.values()) {
      const vmta = virtualMtas.get(queue.virtualMta);
      if (vmta) this.#applyDomainSettings(queue, vmta);
      this.pump(queue);
    }
  }

  /**
   * The queue's MX hosts were resolved: it belongs to the first provider group one of them matches
   * (or none), and takes that group's domain settings from now on (this connection's TLS policy too).
   */
  placeInProviderGroup(queue: DestinationQueue, targets: readonly MxTarget[]): void {
    const group = providerGroupFor(this.#context.config.pool.providerGroups, [...new Set(targets.map((target) => target.name))]);
    if (group?.name === queue.providerGroup) return;
    queue.providerGroup = group?.name;
    const vmta = this.#context.virtualMtas.get(queue.virtualMta);
    if (vmta) this.#applyDomainSettings(queue, vmta);
  }

  /** The queue's settings: its domain's, with its provider group's over the "*" defaults. A domain routed to a smarthost resolves no MX and leaves its group. */
  #applyDomainSettings(queue: DestinationQueue, vmta: VirtualMtaConfig): void {
    const { domainDefaults } = this.#context.config.pool;
    const own = resolveDomainSettings(queue.domain, vmta, domainDefaults);
    if (own.smtpHost || own.smarthost) queue.providerGroup = undefined;
    const group = this.limits.providerGroup(queue);
    queue.settings = group ? resolveDomainSettings(queue.domain, vmta, domainDefaults, group) : own;
  }

  // ---- pauses and admission ------------------------------------------------------------

  /** Pause a selector; it holds for queues created later too. Returns the number of existing queues affected. */
  pause(selector: QueueSelector): number {
    this.#paused.add(pauseKey(selector.virtualMta, selector.domain?.toLowerCase()));
    const selected = this.select(selector);
    quitIdleConnections(selected); // a paused queue keeps no idle connection
    return selected.length;
  }

  /** Lift exactly that pause (an empty selector lifts every pause); a queue stays paused while a wider pause covers it. */
  resume(selector: QueueSelector): number {
    if (!selector.virtualMta && !selector.domain) this.#paused.clear();
    else this.#paused.delete(pauseKey(selector.virtualMta, selector.domain?.toLowerCase()));
    const selected = this.select(selector);
    for (const queue of selected) this.pump(queue);
    return selected.length;
  }

  /** The pauses in force, as the selectors that set them (for saving across restarts). */
  pauses(): QueueSelector[] {
    return [...this.#paused].sort().map((key) => {
      const [virtualMta, domain] = key.split('\u0000') as [string, string];
      return { ...(virtualMta === '*' ? {} : { virtualMta }), ...(domain === '*' ? {} : { domain }) };
    });
  }

  /** Whether the VirtualMTA as a whole (not one of its domains) is paused. */
  isVirtualMtaPaused(name: string): boolean {
    return this.#paused.has(pauseKey(name, undefined));
  }

  isPaused(queue: DestinationQueue): boolean {
    if (this.#paused.size === 0) return false;
    return [pauseKey(queue.virtualMta, queue.domain), pauseKey(queue.virtualMta, undefined), pauseKey(undefined, queue.domain), pauseKey(undefined, undefined)].some((key) => this.#paused.has(key));
  }

  /** May the queue start (or go on) sending? Notes why not in the queue's lastError when its VirtualMTA cannot send. */
  canSend(queue: DestinationQueue): boolean {
    if (this.#stopping || this.#holding || this.isPaused(queue)) return false;
    const spoolHold = this.#context.spool.deliveryHold?.();
    if (spoolHold) {
      queue.lastError = spoolHold;
      return false;
    }
    const { virtualMtas } = this.#context;
    if (!virtualMtas.has(queue.virtualMta)) {
      queue.lastError = `VirtualMTA "${queue.virtualMta}" is not in the configuration; its mail waits`;
      return false;
    }
    const unusable = virtualMtas.unusableReason(queue.virtualMta);
    if (unusable) queue.lastError = `VirtualMTA unusable: ${unusable}; its mail waits`;
    if (unusable) return false;
    const vmta = virtualMtas.get(queue.virtualMta);
    const verdict = vmta?.warmup ? this.#context.warmup.admit(vmta, this.#context.clock.now(), false, queue.providerGroup) : undefined;
    if (verdict && !verdict.allowed) queue.lastError = this.#warmupNote(verdict, this.#overflowNames(queue.virtualMta).length > 0);
    return verdict?.allowed ?? true;
  }

  /** Make every scheduled message of the selected queues due now; returns how many. */
  retryNow(selector: QueueSelector): number {
    let count = 0;
    const now = this.#context.clock.now();
    for (const queue of this.select(selector)) {
      queue.clearDeferral();
      count += queue.makeAllDue(now);
      this.pump(queue);
    }
    return count;
  }

  // ---- connections and timers ----------------------------------------------------------

  /** Start connections for ready messages within the limits, and wake up for the next due one. */
  pump(queue: DestinationQueue): void {
    if (this.#stopping) return;
    const now = this.#context.clock.now();
    queue.promoteDue(now);
    this.#divertAtWarmupCap(queue, now);
    if (this.canSend(queue)) {
      wakeIdleConnections(queue); // before a new connection is counted (idle-connections.ts)
      if (queue.ready.length > queue.connections && !this.limits.hasRoom(queue)) quitIdleConnections(this.#siblings(queue));
      while (queue.ready.length > queue.connections && this.limits.hasRoom(queue) && this.slots.take(queue)) {
        queue.connections += 1;
        const session = this.#startSession(queue).finally(() => {
          queue.connections -= 1;
          this.slots.release();
          this.#sessions.delete(session);
          this.pump(queue);
          for (const sibling of this.#siblings(queue)) this.pump(sibling);
          for (const waiting of this.slots.waitingWhileFree()) this.pump(waiting);
        });
        this.#sessions.add(session);
      }
    }
    this.#armTimer(queue);
    this.#armShareTimer(queue);
    this.#dropIfEmpty(queue);
  }

  /**
   * Keeps one timer at the earliest share change of the queues pumped since it last fired: each
   * pump looks at its own queue only, and the timer pumps them all, so every queue with ready mail
   * is looked at again once per rotation turn (or raise) instead of on every pump of any queue.
   */
  #armShareTimer(queue: DestinationQueue): void {
    const at = this.limits.nextChange(queue);
    if (at === undefined || (this.#shareTimer && this.#shareTimer.at <= at)) return;
    this.#shareTimer?.handle.cancel();
    const { clock } = this.#context;
    const handle = clock.setTimer(at - clock.now(), () => {
      this.#shareTimer = undefined;
      for (const queue of [...this.#queues.values()]) this.pump(queue);
    });
    this.#shareTimer = { at, handle };
  }

  #armTimer(queue: DestinationQueue): void {
    const { clock } = this.#context;
    const next = queue.scheduled.peek();
    const existing = this.#timers.get(queue);
    if (!next) {
      existing?.handle.cancel();
      this.#timers.delete(queue);
      return;
    }
    if (existing && existing.at === next.dueAt) return;
    existing?.handle.cancel();
    const handle = clock.setTimer(next.dueAt - clock.now(), () => {
      this.#timers.delete(queue);
      this.pump(queue);
    });
    this.#timers.set(queue, { at: next.dueAt, handle });
  }

  #dropIfEmpty(queue: DestinationQueue): void {
    // A queue in its own backoff is kept so the state outlives its last message; a group's backoff is the limits' and outlives the queue anyway.
    if (queue.size === 0 && queue.connections === 0 && !queue.backoff.isActive(this.limits.backoff.policy(queue), this.#context.clock.now())) {
      this.#queues.delete(`${queue.virtualMta}\u0000${queue.domain}`);
      this.slots.forget(queue);
    }
  }

  /** Other domains of the same VirtualMTA and site (MX rollup) or provider group: a slot freed may let them send. */
  #siblings(queue: DestinationQueue): DestinationQueue[] {
    if (!queue.site && !queue.providerGroup) return [];
    return [...this.#queues.values()].filter((other) => other !== queue && other.virtualMta === queue.virtualMta && ((queue.site && other.site === queue.site) || (queue.providerGroup && other.providerGroup === queue.providerGroup)));
  }

  /** Site siblings (MX rollup) whose mail a connection of `queue` may carry. */
  #siteSiblings(queue: DestinationQueue): DestinationQueue[] {
    if (!queue.site) return [];
    return [...this.#queues.values()].filter((other) => other !== queue && other.site === queue.site && other.virtualMta === queue.virtualMta);
  }

  /** The next ready item for a connection of `queue`: the queue's own, or (MX rollup) a sibling domain's with the same TLS needs. */
  nextItem(queue: DestinationQueue): { source: DestinationQueue; item: QueueItem } | undefined {
    if (this.#context.spool.deliveryHold?.()) return undefined; // the connection ends; the spool's resume pumps again
    if (this.limits.overLimit(queue)) return undefined; // this pod's share went down: the connection ends
    const now = this.#context.clock.now();
    queue.promoteDue(now);
    const own = queue.ready.shift();
    if (own) return this.#takeWarmupUnit(queue, own, now);
    for (const sibling of this.#siteSiblings(queue)) {
      if (sibling.settings.tlsPolicy !== queue.settings.tlsPolicy || sibling.settings.mtaSts || queue.settings.mtaSts || isDanePolicy(queue.settings.tlsPolicy) || !this.canSend(sibling)) continue;
      sibling.promoteDue(now);
      const item = sibling.ready.shift();
      if (item) return this.#takeWarmupUnit(sibling, item, now);
    }
    return undefined;
  }

  // ---- warm-up caps --------------------------------------------------------------------

  /** Count the item against its VirtualMTA's warm-up cap; at the cap it and the rest of the ready list are diverted. */
  #takeWarmupUnit(source: DestinationQueue, item: QueueItem, now: number): { source: DestinationQueue; item: QueueItem } | undefined {
    const vmta = this.#context.virtualMtas.get(source.virtualMta);
    const verdict = vmta ? this.#context.warmup.admit(vmta, now, true, source.providerGroup) : { allowed: true as const };
    if (verdict.allowed) return { source, item };
    this.#divert(source, [item, ...source.ready.takeAll()], verdict, now);
    return undefined;
  }

  /** Before connections start: a VirtualMTA already at its cap sends nothing, its ready mail is diverted. */
  #divertAtWarmupCap(queue: DestinationQueue, now: number): void {
    if (queue.ready.length === 0) return;
    const vmta = this.#context.virtualMtas.get(queue.virtualMta);
    if (!vmta?.warmup) return;
    const verdict = this.#context.warmup.admit(vmta, now, false, queue.providerGroup);
    if (!verdict.allowed) this.#divert(queue, queue.ready.takeAll(), verdict, now);
  }

  /** Hand items to an overflow VirtualMTA's queue for the same domain, or hold them until the cap's window ends. */
  #divert(queue: DestinationQueue, items: QueueItem[], verdict: { reason: string; until: number }, now: number): void {
    const target = this.#overflowTarget(queue.virtualMta);
    const { logger, metrics } = this.#context;
    queue.lastError = this.#warmupNote(verdict, target !== undefined);
    if (!target) {
      for (const item of items) {
        item.dueAt = verdict.until;
        queue.scheduled.push(item);
      }
      logger.info({ virtualMta: queue.virtualMta, domain: queue.domain, messages: items.length, until: new Date(verdict.until).toISOString() }, queue.lastError);
      this.#armTimer(queue);
      return;
    }
    const overflowQueue = this.#queueFor(target, queue.domain);
    for (const item of items) overflowQueue.add(item, now);
    metrics.warmupOverflow.inc({ vmta: queue.virtualMta, to: target }, items.length);
    logger.debug({ virtualMta: queue.virtualMta, domain: queue.domain, overflowVirtualMta: target, messages: items.length }, 'warm-up cap reached, mail handed to the overflow VirtualMTA');
    this.pump(overflowQueue);
  }

  #warmupNote(verdict: { reason: string; until: number }, overflows: boolean): string {
    return overflows ? `${verdict.reason}; mail goes through the overflow VirtualMTAs` : `${verdict.reason}; no overflow VirtualMTA, mail waits until ${new Date(verdict.until).toISOString()}`;
  }

  #overflowNames(name: string): readonly string[] {
    return this.#context.virtualMtas.get(name)?.warmup?.overflowTo ?? this.#context.config.pool.overflowVirtualMtas;
  }

  /** The next usable overflow VirtualMTA of a warming one, in turn; undefined when none is configured or usable. */
  #overflowTarget(name: string): string | undefined {
    const { virtualMtas } = this.#context;
    const usable = this.#overflowNames(name).filter((candidate) => virtualMtas.has(candidate) && !virtualMtas.unusableReason(candidate) && !this.isVirtualMtaPaused(candidate));
    if (usable.length === 0) return undefined;
    this.#overflowTurn = (this.#overflowTurn + 1) % usable.length;
    return usable[this.#overflowTurn];
  }

  // ---- hand-over and shutdown ----------------------------------------------------------

  /** Start no more deliveries and wait until every attempt in flight is recorded. */
  async hold(): Promise<void> {
    this.#holding = true;
    quitIdleConnections(this.#queues.values());
    while (this.#sessions.size > 0) await Promise.allSettled([...this.#sessions]);
  }

  /** After hold(): take every message out (the spool is untouched); the caller owns them now. */
  takeAll(): QueuedMessage[] {
    const taken = [...this.#messages.values()];
    this.#messages.clear();
    for (const queue of [...this.#queues.values()]) {
      queue.drain();
      this.#armTimer(queue);
      this.#dropIfEmpty(queue);
    }
    return taken;
  }

  /** Deliver again after hold(): the drain ended or was cancelled. */
  release(): void {
    this.#holding = false;
    for (const queue of [...this.#queues.values()]) this.pump(queue);
  }

  /** Start nothing more, cancel the timers and wait for the sessions in flight. */
  async stop(): Promise<void> {
    this.#stopping = true;
    quitIdleConnections(this.#queues.values());
    for (const { handle } of this.#timers.values()) handle.cancel();
    this.#timers.clear();
    this.#shareTimer?.handle.cancel();
    await Promise.allSettled([...this.#sessions]);
  }
}

function pauseKey(virtualMta: string | undefined, domain: string | undefined): string {
  return `${virtualMta ?? '*'}\u0000${domain ?? '*'}`;
}
