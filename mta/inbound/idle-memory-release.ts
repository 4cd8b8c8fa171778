// Gives memory back once a burst of inbound connections is over (a flood of garbage
// connections, a peak of submissions). V8 collects garbage only when JavaScript allocates, so a
// relay that goes quiet after a burst keeps the heap the burst grew — old space full of dead
// sockets and sessions, a young generation grown to its maximum — committed, and its RSS with
// it, until traffic returns (`npm run bench:flood` showed 60 MB of garbage still uncollected
// after a minute idle). Every CHECK_INTERVAL_MS: if at least BURST_CONNECTIONS were accepted
// since the last release and fewer than QUIET_CONNECTIONS in the last interval, one
// memory-reducing full collection runs (V8's "last resort" flavour, which also shrinks the
// young generation and returns free pages to the system): a pause of tens of milliseconds,
// once per burst, at a moment when nobody is waiting. It needs the `gc` function that
// `--expose-gc` provides (RELAY_NODE_OPTIONS, mta/process-options.ts); without it the relay
// runs as before.

const CHECK_INTERVAL_MS = 10_000;
const BURST_CONNECTIONS = 1_000;
const QUIET_CONNECTIONS = 50;

type CollectGarbage = (options: { type: 'major'; execution: 'sync'; flavor: 'last-resort' }) => void;

/** The `gc` function of `--expose-gc`, when the process runs with it. */
export function exposedGarbageCollector(): CollectGarbage | undefined {
  return (globalThis as { gc?: CollectGarbage }).gc;
}

export class IdleMemoryRelease {
  private sinceRelease = 0;
  private inInterval = 0;
  private readonly timer: NodeJS.Timeout | undefined;
  private readonly collect: CollectGarbage | undefined;

  constructor(collect: CollectGarbage | undefined) {
    this.collect = collect;
    if (!collect) return;
    this.timer = setInterval(() => this.check(), CHECK_INTERVAL_MS);
    this.timer.unref();
  }

  /** Called for every accepted connection. */
  noteConnection(): void {
    this.sinceRelease++;
    this.inInterval++;
  }

  /** Runs the collection if a burst has ended; returns whether it did. Public for tests. */
  check(): boolean {
    const quiet = this.inInterval < QUIET_CONNECTIONS;
    this.inInterval = 0;
    if (!this.collect || !quiet || this.sinceRelease < BURST_CONNECTIONS) return false;
    this.sinceRelease = 0;
    this.collect({ type: 'major', execution: 'sync', flavor: 'last-resort' });
    return true;
  }

  stop(): void {
    clearInterval(this.timer);
  }
}
