// Retry-now benchmark (prints figures; not a test): `npm run bench:retry [-- --items 1000000 --rounds 5]`.
// An operator's `vmta queue retry` over one destination queue of `items` scheduled messages, as
// the scheduler runs it in one event-loop turn: DestinationQueue.makeAllDue (one pass over the
// heap's array) against the pass it replaced, drain(due later) then a push per item (the heap
// removes and rebuilds). Medians of `rounds` paired rounds, in the same process; the figure is
// how long the event loop is blocked (no SMTP session, timer or admin request is served then).
import { parseArgs } from 'node:util';
import { DestinationQueue, type QueueItem } from '../mta/delivery/destination-queue.ts';
import { BUILT_IN_DOMAIN_SETTINGS } from '../mta/delivery/domain-settings.ts';

const { values } = parseArgs({ options: { items: { type: 'string', default: '1000000' }, rounds: { type: 'string', default: '5' } } });
const ITEMS = Number(values.items);
const ROUNDS = Number(values.rounds);

function filledQueue(now: number): DestinationQueue {
  const queue = new DestinationQueue('vmta-1', 'blocked.bench', { ...BUILT_IN_DOMAIN_SETTINGS });
  for (let index = 0; index < ITEMS; index += 1) {
    const item = { message: { id: `m${index}`, envelope: {} }, recipients: [0], dueAt: now + 1000 + (index % 600_000) } as unknown as QueueItem;
    queue.scheduled.push(item);
  }
  return queue;
}

function timed(run: () => number): { ms: number; moved: number } {
  const start = performance.now();
  const moved = run();
  return { ms: performance.now() - start, moved };
}

const median = (values: number[]): number => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;
const onePass: number[] = [];
const drainAndPush: number[] = [];
for (let round = 0; round < ROUNDS; round += 1) {
  const now = Date.now();
  const a = filledQueue(now);
  const fast = timed(() => a.makeAllDue(now));
  const b = filledQueue(now);
  const slow = timed(() => {
    let moved = 0;
    for (const item of b.drain((candidate) => candidate.dueAt > now)) {
      item.dueAt = now;
      b.ready.push(item);
      moved += 1;
    }
    return moved;
  });
  if (fast.moved !== ITEMS || slow.moved !== ITEMS) throw new Error(`moved ${fast.moved} and ${slow.moved} of ${ITEMS}`);
  onePass.push(fast.ms);
  drainAndPush.push(slow.ms);
}
console.log(`retry_now items=${ITEMS} rounds=${ROUNDS} make_all_due_ms=${median(onePass).toFixed(1)} drain_and_push_ms=${median(drainAndPush).toFixed(1)} speedup=${(median(drainAndPush) / median(onePass)).toFixed(1)}`);
