// The queue of one VirtualMTA x destination domain: messages ready to go now (FIFO) and
// messages scheduled for a later retry (a min-heap on the due time), plus the live state the
// scheduler needs — open connections, backoff, rate pacing. Only envelopes are
// held: an item points at the message's envelope and the indexes of its recipients here.
import type { Envelope, QueueId } from '../spool/types.ts';
import { BackoffState } from './backoff.ts';
import type { ResolvedDomainSettings } from './domain-settings.ts';

/** A message as the engine keeps it in memory: id and envelope, never the body. */
export interface QueuedMessage {
  id: QueueId;
  envelope: Envelope;
}

/** One message's pending recipients for one destination. */
export interface QueueItem {
  message: QueuedMessage;
  recipients: number[];
  dueAt: number;
}

export class DestinationQueue {
  readonly virtualMta: string;
  readonly domain: string;
  settings: ResolvedDomainSettings;
  readonly ready: QueueItem[] = [];
  readonly scheduled = new ItemHeap();
  readonly backoff = new BackoffState();
  /** Items taken by a connection and not yet recorded. */
  inFlight = 0;
  connections = 0;
  /** Earliest time the next message may start under maxMessageRate. */
  nextSendAt = 0;
  /** Why the last connection attempt failed, for queue inspection. */
  lastError: string | undefined;
  /** With MX rollup: the MX host set ("site") this domain shares with others, once resolved. */
  site: string | undefined;
  /**
   * Queue-wide deferral after a failed connection or DNS lookup: nothing is tried before this
   * time (0 = none), messages arriving meanwhile wait for it too, and `failures` (consecutive
   * queue-wide failures) picks the wait from the retry schedule. Held only here, never per message.
   */
  retryAt = 0;
  failures = 0;

  constructor(virtualMta: string, domain: string, settings: ResolvedDomainSettings) {
    this.virtualMta = virtualMta;
    this.domain = domain;
    this.settings = settings;
  }

  add(item: QueueItem, now: number): void {
    if (this.retryAt > now && item.dueAt < this.retryAt) item.dueAt = Math.min(this.retryAt, item.message.envelope.receivedAt + this.settings.bounceAfter);
    if (item.dueAt <= now) this.ready.push(item);
    else this.scheduled.push(item);
  }

  /**
   * Defer the whole queue until `retryAt`: every ready item moves to the scheduled heap (capped
   * at its own bounceAfter deadline so it can still expire on time). No per-message record.
   */
  deferUntil(retryAt: number, now: number): void {
    this.retryAt = retryAt;
    this.failures += 1;
    for (const item of this.ready.splice(0, this.ready.length)) this.add(item, now);
  }

  /** A connection succeeded (or an operator asked for a retry now): the queue-wide deferral ends. */
  clearDeferral(): void {
    this.retryAt = 0;
    this.failures = 0;
  }

  /** Move every scheduled item that is due at `now` to the ready list. */
  promoteDue(now: number): void {
    for (let top = this.scheduled.peek(); top && top.dueAt <= now; top = this.scheduled.peek()) this.ready.push(this.scheduled.pop()!);
  }

  /** Messages in this queue (ready, scheduled and being delivered). */
  get size(): number {
    return this.ready.length + this.scheduled.size + this.inFlight;
  }

  /** Remove and return every waiting item (ready and scheduled) that matches. */
  drain(predicate: (item: QueueItem) => boolean = () => true): QueueItem[] {
    const taken: QueueItem[] = [];
    let kept = 0;
    for (const item of this.ready) {
      if (predicate(item)) taken.push(item);
      else this.ready[kept++] = item;
    }
    this.ready.length = kept;
    for (const item of this.scheduled.removeWhere(predicate)) taken.push(item);
    return taken;
  }
}

/** Binary min-heap of queue items by due time. */
export class ItemHeap {
  private items: QueueItem[] = [];

  get size(): number {
    return this.items.length;
  }

  peek(): QueueItem | undefined {
    return this.items[0];
  }

  push(item: QueueItem): void {
    const items = this.items;
    items.push(item);
    let index = items.length - 1;
    while (index > 0) {
      const parent = (index - 1) >> 1;
      if (items[parent]!.dueAt <= item.dueAt) break;
      items[index] = items[parent]!;
      index = parent;
    }
    items[index] = item;
  }

  pop(): QueueItem | undefined {
    const items = this.items;
    const top = items[0];
    const last = items.pop();
    if (items.length > 0 && last) {
      let index = 0;
      for (;;) {
        const left = index * 2 + 1;
        const right = left + 1;
        let smallest = left < items.length && items[left]!.dueAt < last.dueAt ? left : -1;
        const bound = smallest === -1 ? last.dueAt : items[smallest]!.dueAt;
        if (right < items.length && items[right]!.dueAt < bound) smallest = right;
        if (smallest === -1) break;
        items[index] = items[smallest]!;
        index = smallest;
      }
      items[index] = last;
    }
    return top;
  }

  removeWhere(predicate: (item: QueueItem) => boolean): QueueItem[] {
    const removed = this.items.filter(predicate);
    if (removed.length > 0) {
      const kept = this.items.filter((item) => !predicate(item));
      this.items = [];
      for (const item of kept) this.push(item);
    }
    return removed;
  }

  *[Symbol.iterator](): IterableIterator<QueueItem> {
    yield* this.items;
  }
}
