// The pod-wide bound on open delivery connections (delivery.maxConnections, as Postfix's
// default_process_limit bounds its smtp agents): per-destination limits alone let a retry of
// every queue start a connection per queue at once (20,000 sessions for 10,000 domains in
// `npm run bench:scale`), whose buffers the allocator kept long after the drain. A queue that
// finds no slot waits in arrival order and is pumped again when a connection ends; while any waits,
// a connection with nothing left to send quits instead of idling (idle-connections.ts).
import type { DestinationQueue } from './destination-queue.ts';

export class SessionSlots {
  #open = 0;
  /** Queues that had mail ready when every slot was taken, oldest first. */
  readonly #waiting = new Set<DestinationQueue>();
  readonly #max: () => number;

  constructor(max: () => number) {
    this.#max = max;
  }

  get open(): number {
    return this.#open;
  }

  /** Queues wait for a slot: a connection with nothing to send should quit rather than idle. */
  get wanted(): boolean {
    return this.#waiting.size > 0;
  }

  /** Takes a slot for a connection of `queue`; false (and the queue waits) when none is free. */
  take(queue: DestinationQueue): boolean {
    if (this.#open >= this.#max()) {
      this.#waiting.add(queue);
      return false;
    }
    this.#open += 1;
    this.#waiting.delete(queue);
    return true;
  }

  /** A connection ended. */
  release(): void {
    this.#open -= 1;
  }

  /** The waiting queues to pump, oldest first, for as long as a slot is free (each leaves the list as it is handed out). */
  *waitingWhileFree(): Generator<DestinationQueue> {
    while (this.#open < this.#max() && this.#waiting.size > 0) {
      const queue = this.#waiting.values().next().value!;
      this.#waiting.delete(queue);
      yield queue;
    }
  }

  /** Forget a queue that is gone (dropped when empty). */
  forget(queue: DestinationQueue): void {
    this.#waiting.delete(queue);
  }
}
