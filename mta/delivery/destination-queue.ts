// The queue of one VirtualMTA x destination domain: messages ready to go now (FIFO) and
// messages scheduled for a later retry (a min-heap on the due time), plus the live state the
// scheduler needs — open connections, backoff, rate pacing. Only envelopes are
// held: an item is the message's id and envelope with the indexes of its recipients here (no
// separate message object: one fewer per queued message at a million).
// Both structures stay O(1) / O(log n) per message at a million items (Array.prototype.shift
// copies a large array on every call), and single-recipient items share one index list.
import type { Envelope, QueueId } from '../spool/types.ts';
import { BackoffState } from './backoff.ts';
import type { ResolvedDomainSettings } from './domain-settings.ts';

/** A message as the engine keeps it in memory: id and envelope, never the body. */
export interface QueuedMessage {
  id: QueueId;
  envelope: Envelope;
}

/** One message's pending recipients for one destination: the message itself plus which recipients and when. */
export interface QueueItem extends QueuedMessage {
  /** Indexes into the envelope's recipients; never changed in place (lists of one index are shared). */
  readonly recipients: readonly number[];
  dueAt: number;
}

const SINGLE_INDEXES: readonly (readonly number[])[] = Array.from({ length: 16 }, (_, index) => Object.freeze([index]));

/** The queue item for these recipients of a message (a shared index list for a single recipient among the first 16: most messages). */
export function queueItem(message: QueuedMessage, recipients: readonly number[], dueAt: number): QueueItem {
  const shared = recipients.length === 1 ? SINGLE_INDEXES[recipients[0]!] : undefined;
  return { id: message.id, envelope: message.envelope, recipients: shared ?? recipients, dueAt };
}

export class DestinationQueue {
  readonly virtualMta: string;
  readonly domain: string;
  settings: ResolvedDomainSettings;
  readonly ready = new ItemQueue();
  readonly scheduled = new ItemHeap();
  readonly backoff = new BackoffState();
  /** Items taken by a connection and not yet recorded. */
  inFlight = 0;
  /** Open connections, idle ones included. */
  connections = 0;
  /** Open connections waiting for its next ready message (idle-connections.ts), each told whether one came. */
  readonly idleConnections: Array<(woken: boolean) => void> = [];
  /** Earliest time the next message may start under maxMessageRate. */
  nextSendAt = 0;
  /** Why the last connection attempt failed, for queue inspection. */
  lastError: string | undefined;
  /** With MX rollup: the MX host set ("site") this domain shares with others, once resolved. */
  site: string | undefined;
  /** The provider group (pool.providerGroups) its MX hosts matched at the last connection, once resolved. */
  providerGroup: string | undefined;
  /**
   * Queue-wide deferral after a failed connection or DNS lookup: nothing is tried before this
   * time (0 = none), messages arriving meanwhile wait for it too, and `failures` (consecutive
   * queue-wide failures) picks the wait from the retry schedule. Held only here, never per message.
   */
  retryAt = 0;
  failures = 0;
  /** The newest receivedAt among the messages of this queue's last queue-wide deferral (deferral-record.ts). */
  deferredUpTo = 0;

  constructor(virtualMta: string, domain: string, settings: ResolvedDomainSettings) {
    this.virtualMta = virtualMta;
    this.domain = domain;
    this.settings = settings;
  }

  add(item: QueueItem, now: number): void {
    if (this.retryAt > now && item.dueAt < this.retryAt) item.dueAt = Math.min(this.retryAt, item.envelope.receivedAt + this.settings.bounceAfter);
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
    for (const item of this.ready.takeAll()) this.add(item, now);
  }

  /** The deferral in force before a restart (deferral-record.ts). */
  restoreDeferral(retryAt: number, failures: number): void {
    this.retryAt = retryAt;
    this.failures = failures;
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

  /**
   * An operator's retry: every scheduled item becomes ready now, in one pass over the heap's
   * array (a million items take tens of milliseconds, not the heap's remove and rebuild).
   * Returns how many were waiting for a later time.
   */
  makeAllDue(now: number): number {
    const items = this.scheduled.takeAll();
    let waiting = 0;
    for (const item of items) {
      if (item.dueAt <= now) continue;
      item.dueAt = now;
      waiting += 1;
    }
    this.ready.pushAll(items);
    return waiting;
  }

  /** Remove and return every waiting item, ready and scheduled (a bounce or delete of the queue). */
  drain(): QueueItem[] {
    return this.ready.takeAll().concat(this.scheduled.takeAll());
  }
}

/** FIFO of queue items: push at the back, shift from the front, both O(1) amortized. */
export class ItemQueue {
  #items: (QueueItem | undefined)[] = [];
  /** Index of the front item; the slots before it are emptied and reclaimed by compaction. */
  #head = 0;

  get length(): number {
    return this.#items.length - this.#head;
  }

  push(item: QueueItem): void {
    this.#items.push(item);
  }

  shift(): QueueItem | undefined {
    if (this.#head >= this.#items.length) return undefined;
    const item = this.#items[this.#head];
    this.#items[this.#head] = undefined;
    this.#head += 1;
    if (this.#head === this.#items.length) this.#reset([]);
    else if (this.#head >= 1024 && this.#head * 2 >= this.#items.length) this.#reset(this.#items.slice(this.#head));
    return item;
  }

  /** Append items in their order (taking the array itself when the queue is empty). */
  pushAll(items: QueueItem[]): void {
    if (this.length === 0) this.#reset(items);
    else for (const item of items) this.#items.push(item);
  }

  /** Remove and return every item, front first. */
  takeAll(): QueueItem[] {
    const all = (this.#head === 0 ? this.#items : this.#items.slice(this.#head)) as QueueItem[];
    this.#reset([]);
    return all;
  }

  #reset(items: (QueueItem | undefined)[]): void {
    this.#items = items;
    this.#head = 0;
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

  /** Remove and return every item, in no particular order. */
  takeAll(): QueueItem[] {
    const items = this.items;
    this.items = [];
    return items;
  }

  *[Symbol.iterator](): IterableIterator<QueueItem> {
    yield* this.items;
  }
}
