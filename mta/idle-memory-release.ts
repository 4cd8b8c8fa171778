// Gives memory back once a burst of work is over: a flood of garbage connections, a peak of
// submissions, or a queue drained (a retry-now of a large backlog). V8 collects garbage only when
// JavaScript allocates, and an ordinary collection keeps the pages it freed for reuse, so a relay
// that goes quiet after a burst keeps what the burst grew committed, and its RSS with it, until
// traffic returns (`npm run bench:flood` showed 60 MB of garbage still uncollected after a minute
// idle; `npm run bench:scale` had 570 MiB of freed heap pages resident after a drain, with 98 MiB
// of heap in use). Every CHECK_INTERVAL_MS: if at least BURST_UNITS units of work (an accepted
// connection, a message's attempt at a destination recorded, a message recovered from the spool at
// start) were done since the last release and fewer than QUIET_UNITS in the last interval, one
// memory-reducing full collection runs (V8's "last resort" flavour, which also shrinks the young
// generation and returns free pages to the system): a pause of tens of milliseconds, once per
// burst, when nobody is waiting. It needs the `gc` function that `--expose-gc` provides
// (RELAY_NODE_OPTIONS, mta/process-options.ts); without it the relay runs as before. The relay owns
// one, shared by its listeners and its delivery engine.

const CHECK_INTERVAL_MS = 10_000;
const BURST_UNITS = 1_000;
const QUIET_UNITS = 50;

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

  /** Called for every unit of work: an accepted connection, a message's attempt recorded, a message recovered. */
  noteWork(): void {
    this.sinceRelease++;
    this.inInterval++;
  }

  /** Runs the collection if a burst has ended; returns whether it did. Public for tests. */
  check(): boolean {
    const quiet = this.inInterval < QUIET_UNITS;
    this.inInterval = 0;
    if (!this.collect || !quiet || this.sinceRelease < BURST_UNITS) return false;
    this.sinceRelease = 0;
    this.collect({ type: 'major', execution: 'sync', flavor: 'last-resort' });
    return true;
  }

  stop(): void {
    clearInterval(this.timer);
  }
}
