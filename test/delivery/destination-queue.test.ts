// An operator's retry of a destination queue (DestinationQueue.makeAllDue) over a class of queue
// shapes: empty, one item, a few, thousands and more than a spread call can take, each with items
// already ready, items already due in the heap and items due later. Every item ends in the ready
// list exactly once (those ready before it first, in their order), due now or earlier, the heap
// is empty, and the count is the items that were waiting for a later time.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { DestinationQueue, queueItem, type QueueItem } from '../../mta/delivery/destination-queue.ts';
import type { Envelope } from '../../mta/spool/types.ts';
import { BUILT_IN_DOMAIN_SETTINGS } from '../../mta/delivery/domain-settings.ts';

const NOW = 1_800_000_000_000;
const item = (id: number, dueAt: number): QueueItem => queueItem({ id: `m${id}`, envelope: {} as Envelope }, [0], dueAt);

test('makeAllDue moves every scheduled item to the ready list once, after the ready ones, and counts those that were due later', () => {
  for (const scheduledCount of [0, 1, 3, 1000, 200_000]) {
    for (const readyCount of [0, 2]) {
      const queue = new DestinationQueue('vmta-1', 'blocked.test', { ...BUILT_IN_DOMAIN_SETTINGS });
      for (let index = 0; index < readyCount; index += 1) queue.ready.push(item(-1 - index, NOW - 10));
      // Every third item is already due (the heap holds it until the next promotion); the rest are due later.
      let later = 0;
      for (let index = 0; index < scheduledCount; index += 1) {
        const due = index % 3 === 0 ? NOW - index : NOW + 1 + ((index * 7919) % 100_000);
        if (due > NOW) later += 1;
        queue.scheduled.push(item(index, due));
      }
      const label = `${scheduledCount} scheduled, ${readyCount} ready`;
      assert.equal(queue.makeAllDue(NOW), later, `${label}: the count of items that waited for later`);
      assert.equal(queue.scheduled.size, 0, `${label}: the heap is empty`);
      const ready = queue.ready.takeAll();
      assert.equal(ready.length, scheduledCount + readyCount, `${label}: nothing lost`);
      assert.deepEqual(ready.slice(0, readyCount).map((entry) => entry.id), Array.from({ length: readyCount }, (_, index) => `m${-1 - index}`), `${label}: the ready items first, in order`);
      assert.equal(new Set(ready.map((entry) => entry.id)).size, ready.length, `${label}: no item twice`);
      assert.ok(ready.every((entry) => entry.dueAt <= NOW), `${label}: every item due now or earlier`);
    }
  }
});
