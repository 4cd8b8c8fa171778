// The admin view of the delivery engine: read-only summaries of the destination queues,
// VirtualMTAs and messages for the admin API and the CLI, and the queue gauges (depth by state,
// oldest message age, backoff, VirtualMTA usability) refreshed from the scheduler's state.
import type { DeliveryContext } from './delivery-context.ts';
import type { DestinationQueue } from './destination-queue.ts';
import type { QueueScheduler, QueueSelector } from './queue-scheduler.ts';

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
  /** Provider group its MX hosts matched (pool.providerGroups), or null. */
  providerGroup: string | null;
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

export class QueueView {
  readonly #context: DeliveryContext;
  readonly #scheduler: QueueScheduler;

  constructor(context: DeliveryContext, scheduler: QueueScheduler) {
    this.#context = context;
    this.#scheduler = scheduler;
  }

  listQueues(): QueueSummary[] {
    return [...this.#scheduler.queues()].map((queue) => ({
      virtualMta: queue.virtualMta,
      domain: queue.domain,
      messages: queue.size,
      ready: queue.ready.length,
      scheduled: queue.scheduled.size,
      inFlight: queue.inFlight,
      connections: queue.connections,
      paused: this.#scheduler.isPaused(queue),
      backoff: this.#backoffSummary(queue),
      nextRetryAt: queue.scheduled.peek() ? new Date(queue.scheduled.peek()!.dueAt).toISOString() : null,
      lastError: queue.lastError ?? null,
      site: queue.site ?? null,
      providerGroup: queue.providerGroup ?? null,
    }));
  }

  /** In backoff by its own replies or its provider group's, since when. */
  #backoffSummary(queue: DestinationQueue): QueueSummary['backoff'] {
    const since = this.#scheduler.limits.backoff.since(queue);
    return { active: since !== undefined, since: since === undefined ? null : new Date(since).toISOString() };
  }

  virtualMtaStatus(): VirtualMtaStatus[] {
    const { virtualMtas } = this.#context;
    return [...virtualMtas.all()].map((vmta) => ({
      name: vmta.name,
      sourceAddress: vmta.sourceAddress ?? null,
      usable: virtualMtas.unusableReason(vmta.name) === undefined,
      paused: this.#scheduler.isVirtualMtaPaused(vmta.name),
      detail: virtualMtas.unusableReason(vmta.name) ?? null,
    }));
  }

  showMessage(id: string): MessageState | undefined {
    const message = this.#scheduler.message(id);
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
        lastResult: recipient.lastResult ?? (recipient.status === 'pending' ? (this.#scheduler.queue(envelope.virtualMta, recipient.domain)?.lastError ?? null) : null),
      })),
    };
  }

  /** Queue ids of waiting messages (in the order queued) with a pending recipient matching the selector: the first `limit`, and how many match. */
  listMessageIds(selector: QueueSelector, limit: number): { total: number; ids: string[] } {
    const domain = selector.domain?.toLowerCase();
    const ids: string[] = [];
    let total = 0;
    for (const { id, envelope } of this.#scheduler.messages()) {
      if (selector.virtualMta && envelope.virtualMta !== selector.virtualMta) continue;
      if (!envelope.recipients.some((recipient) => recipient.status === 'pending' && (!domain || recipient.domain === domain))) continue;
      total += 1;
      if (ids.length < limit) ids.push(id);
    }
    return { total, ids };
  }

  /** Set the queue depth, oldest-age and backoff gauges from the queues. */
  refreshGauges(): void {
    const { clock, metrics, relayMetrics, virtualMtas } = this.#context;
    const now = clock.now();
    relayMetrics.queueDepth.reset();
    metrics.backoffActive.reset();
    metrics.oldestMessageAge.reset();
    metrics.virtualMtaUsable.reset();
    for (const vmta of virtualMtas.names()) {
      for (const state of ['ready', 'scheduled', 'paused'] as const) relayMetrics.queueDepth.set({ virtual_mta: vmta, state }, 0);
      metrics.virtualMtaUsable.set({ virtual_mta: vmta }, virtualMtas.unusableReason(vmta) === undefined ? 1 : 0);
    }
    for (const queue of this.#scheduler.queues()) {
      const labels = { virtual_mta: queue.virtualMta };
      if (this.#scheduler.isPaused(queue)) {
        relayMetrics.queueDepth.inc({ ...labels, state: 'paused' }, queue.size);
      } else {
        relayMetrics.queueDepth.inc({ ...labels, state: 'ready' }, queue.ready.length + queue.inFlight);
        relayMetrics.queueDepth.inc({ ...labels, state: 'scheduled' }, queue.scheduled.size);
      }
      if (this.#scheduler.limits.backoff.active(queue)) metrics.backoffActive.inc({ ...labels, domain: metrics.domainLabel(queue.domain) });
    }
    const oldest = new Map<string, number>();
    for (const message of this.#scheduler.messages()) {
      const vmta = message.envelope.virtualMta;
      oldest.set(vmta, Math.min(oldest.get(vmta) ?? Number.POSITIVE_INFINITY, message.envelope.receivedAt));
    }
    for (const [vmta, receivedAt] of oldest) metrics.oldestMessageAge.set({ virtual_mta: vmta }, Math.max(0, (now - receivedAt) / 1000));
  }
}
