// The connection cache (mta/delivery/idle-connections.ts) through the real engine, DNS server and
// sink MX: messages that arrive one after the other, each after the last was sent, share one
// connection while they come within delivery.connectionIdleTimeout, and each get one of their own
// when the gaps are longer or the timeout is 0s; maxMessagesPerConnection still ends a connection;
// an idle connection gives its slot up at once to another domain of its provider group; and
// stopping the engine does not wait for the idle time.
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { startSinkMx, type SinkMx } from '../fixtures/sink-mx.ts';
import { startHarness, waitFor, type Harness } from './harness.ts';

const cleanups: (() => Promise<unknown>)[] = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

async function setup(delivery: { connectionIdleTimeout: string }, domainDefaults: Record<string, unknown> = {}, extraPool: Record<string, unknown> = {}): Promise<{ sink: SinkMx; harness: Harness }> {
  const sink = await startSinkMx({ address: '127.0.0.1' });
  cleanups.push(() => sink.close());
  const harness = await startHarness({
    mxPort: sink.port,
    zone: {
      'a.test': { mx: [{ preference: 10, exchange: 'mx.a.test' }] },
      'b.test': { mx: [{ preference: 10, exchange: 'mx.b.test' }] },
      'mx.a.test': { a: ['127.0.0.1'] },
      'mx.b.test': { a: ['127.0.0.1'] },
    },
    pool: { name: 'pool-cache', virtualMtas: [{ name: 'vmta-cache', hostname: 'cache.sender.test' }], domainDefaults: [{ match: '*', tlsPolicy: 'none', ...domainDefaults }], ...extraPool },
    delivery,
  });
  cleanups.push(() => harness.close());
  return { sink, harness };
}

/** Submits `count` messages to `domain`, each once the one before was delivered and `gapMs` later. */
async function sendOneByOne(harness: Harness, domain: string, count: number, gapMs: number): Promise<void> {
  for (let index = 0; index < count; index++) {
    const message = await harness.submit({ to: [`user${index}@${domain}`] });
    await waitFor(() => harness.spool.removed.includes(message.id), `delivery of message ${index + 1}`);
    await new Promise((resolve) => setTimeout(resolve, gapMs));
  }
}

for (const { idle, gapMs, count, sessions, why } of [
  { idle: '5s', gapMs: 50, count: 6, sessions: 1, why: 'every message within the idle time of the last: one connection' },
  { idle: '5s', gapMs: 0, count: 4, sessions: 1, why: 'no gap at all: one connection' },
  { idle: '0s', gapMs: 50, count: 4, sessions: 4, why: 'idle time 0s: a connection per message' },
  { idle: '200ms', gapMs: 600, count: 3, sessions: 3, why: 'gaps longer than the idle time: a connection per message' },
]) {
  test(`connectionIdleTimeout ${idle}, ${count} messages ${gapMs} ms apart -> ${sessions} session(s) at the MX (${why})`, async () => {
    const { sink, harness } = await setup({ connectionIdleTimeout: idle }, { maxMessagesPerConnection: 100 });
    await sendOneByOne(harness, 'a.test', count, gapMs);
    assert.equal(sink.messages.length, count);
    assert.equal(sink.connections, sessions, `sessions at the MX: ${sink.connections}`);
  });
}

test('maxMessagesPerConnection still ends a cached connection: 5 messages at 2 per connection -> 3 sessions', async () => {
  const { sink, harness } = await setup({ connectionIdleTimeout: '5s' }, { maxMessagesPerConnection: 2 });
  await sendOneByOne(harness, 'a.test', 5, 20);
  assert.equal(sink.connections, 3);
});

test('an idle connection gives its provider group slot up at once to another domain of the group', async () => {
  const { sink, harness } = await setup({ connectionIdleTimeout: '120s' }, {}, { providerGroups: [{ name: 'one-slot', mxHosts: ['mx.a.test', 'mx.b.test'], maxSmtpOut: 1 }] });
  await sendOneByOne(harness, 'a.test', 1, 0);
  const started = Date.now();
  const forB = await harness.submit({ to: ['user@b.test'] });
  // Within 20 s, not the 120 s a.test's connection could idle.
  await waitFor(() => harness.spool.removed.includes(forB.id), 'delivery to b.test', 20_000);
  console.log(`b.test delivered ${Date.now() - started} ms after it was queued`);
  assert.equal(sink.maxOpenSessions, 1, 'never more than the group slot');
});

test('stopping the engine ends idle connections at once instead of waiting out the idle time', async () => {
  const { sink, harness } = await setup({ connectionIdleTimeout: '120s' });
  await sendOneByOne(harness, 'a.test', 1, 0);
  assert.equal(sink.openSessions, 1, 'the connection is idle, still open');
  const started = Date.now();
  await harness.engine.stop();
  assert.ok(Date.now() - started < 20_000, `stop took ${Date.now() - started} ms`);
  await waitFor(() => sink.openSessions === 0, 'the idle connection to close');
});
