// The pod-wide bound on open delivery connections (delivery.maxConnections,
// mta/delivery/session-slots.ts): through the real engine, DNS server and a sink MX, 12 domains
// that may each open 4 connections never hold more than the bound open together, for bounds 1, 3
// and 8, and every message is delivered; with a bound above what the domains ask for they open
// more at once (so the figure above is the bound's); a connection with nothing to send quits
// while other domains wait for a slot, however long it could idle. The slot list itself: first come first
// served, a queue waiting once however often it asks, forgotten queues never handed out.
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { DestinationQueue } from '../../mta/delivery/destination-queue.ts';
import { SessionSlots } from '../../mta/delivery/session-slots.ts';
import { startSinkMx, type SinkMx } from '../fixtures/sink-mx.ts';
import { startHarness, waitFor } from './harness.ts';

const DOMAINS = Array.from({ length: 12 }, (_, index) => `d${index}.test`);
const cleanups: (() => Promise<unknown>)[] = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

async function burst(maxConnections: number, connectionIdleTimeout = '0s', maxMessagesPerConnection = 1): Promise<SinkMx> {
  const sink = await startSinkMx({ address: '127.0.0.1' });
  cleanups.push(() => sink.close());
  const zone = Object.fromEntries(DOMAINS.flatMap((domain) => [[domain, { mx: [{ preference: 10, exchange: `mx.${domain}` }] }], [`mx.${domain}`, { a: ['127.0.0.1'] }]]));
  const harness = await startHarness({
    mxPort: sink.port,
    zone,
    pool: { name: 'pool-slots', virtualMtas: [{ name: 'vmta-slots', hostname: 'slots.sender.test' }], domainDefaults: [{ match: '*', tlsPolicy: 'none', maxSmtpOut: 4, maxMessagesPerConnection }] },
    delivery: { maxConnections, connectionIdleTimeout },
  });
  cleanups.push(() => harness.close());
  harness.engine.pause({ virtualMta: 'vmta-slots' });
  const messages = await Promise.all(DOMAINS.flatMap((domain) => Array.from({ length: 4 }, (_, index) => harness.submit({ to: [`u${index}@${domain}`] }))));
  harness.engine.resume({ virtualMta: 'vmta-slots' });
  await waitFor(() => messages.every((message) => harness.spool.removed.includes(message.id)), 'every message delivered', 60_000);
  assert.equal(sink.messages.length, messages.length);
  return sink;
}

for (const bound of [1, 3, 8]) {
  test(`maxConnections ${bound}: 12 domains x 4 connections allowed each never hold more than ${bound} open; all 48 delivered`, async () => {
    const sink = await burst(bound);
    assert.ok(sink.maxOpenSessions <= bound, `at most ${bound} open at once, saw ${sink.maxOpenSessions}`);
  });
}

test('maxConnections 1 with a 120s idle time: a connection whose queue is empty quits for the domains waiting instead of idling', async () => {
  // A connection may carry all 4 messages of its domain and then finds its queue empty: idling
  // would cost 120 s per change of domain, and the 60 s wait for the 48 messages would fail.
  const sink = await burst(1, '120s', 100);
  assert.equal(sink.maxOpenSessions, 1);
});

test('with a bound above what the domains ask for, they open more than 8 at once', async () => {
  const sink = await burst(1000);
  assert.ok(sink.maxOpenSessions > 8, `${sink.maxOpenSessions} open at once`);
});

test('slots: first come first served, one wait per queue, forgotten queues never handed out', () => {
  let max = 2;
  const slots = new SessionSlots(() => max);
  const [a, b, c, d] = ['a', 'b', 'c', 'd'].map((domain) => new DestinationQueue('vmta', domain, {} as never)) as [DestinationQueue, DestinationQueue, DestinationQueue, DestinationQueue];
  assert.equal(slots.take(a), true);
  assert.equal(slots.take(a), true);
  for (const queue of [b, c, b, d, c]) assert.equal(slots.take(queue), false);
  slots.forget(c);
  assert.deepEqual([...slots.waitingWhileFree()], [], 'no slot free: nothing handed out');
  slots.release();
  const handed = [...slots.waitingWhileFree()];
  assert.deepEqual(handed.map((queue) => queue.domain), ['b', 'd'], 'b first (it asked first), d next: one slot free and neither took it');
  max = 5;
  assert.equal(slots.take(b), true);
  assert.equal(slots.open, 2);
});
