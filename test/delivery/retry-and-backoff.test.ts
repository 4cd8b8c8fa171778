import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { simpleParser } from 'mailparser';
import { startSinkGroup, type SinkMx } from '../fixtures/sink-mx.ts';
import { startHarness, waitFor, type Harness } from './harness.ts';
import { ManualClock } from './manual-clock.ts';

const MINUTE = 60_000;
let sinks: SinkMx[];
let clock: ManualClock;
let harness: Harness;

before(async () => {
  sinks = await startSinkGroup([{}, {}]);
  const [mx, senderMx] = sinks as [SinkMx, SinkMx];
  clock = new ManualClock();
  harness = await startHarness({
    clock,
    mxPort: mx.port,
    zone: {
      'slow.test': { mx: [{ preference: 10, exchange: 'mx.slow.test' }] },
      'throttle.test': { mx: [{ preference: 10, exchange: 'mx.slow.test' }] },
      'mx.slow.test': { a: [mx.address] },
      'sender.test': { mx: [{ preference: 10, exchange: 'mx.sender.test' }] },
      'mx.sender.test': { a: [senderMx.address] },
    },
    pool: {
      name: 'pool-retry',
      virtualMtas: [{ name: 'vmta-retry', hostname: 'retry.sender.test' }],
      domainDefaults: [
        { match: '*', tlsPolicy: 'none' },
        { match: 'slow.test', retryAfter: ['1m', '5m'], bounceAfter: '10m' },
        { match: 'throttle.test', retryAfter: ['10m'], backoff: { replyPatterns: ['^421', '4\\.7\\.[0-9]+'], retryAfter: '30m', returnAfter: '1h' } },
      ],
    },
  });
  mx.options = {
    ...mx.options,
    rcptReplies: { 'later@slow.test': '451 4.3.0 Try again later', 'busy@throttle.test': '450 4.7.1 Too many messages, slow down' },
  };
});

after(async () => {
  await harness?.close();
  await Promise.all((sinks ?? []).map((sink) => sink.close()));
});

const attemptsOf = (id: string) => harness.spool.recorded.filter((entry) => entry.id === id).length;

test('retries follow retryAfter on the clock and the recipient expires at bounceAfter with a 4.4.7 DSN', async () => {
  const senderMx = sinks[1]!;
  const start = clock.now();
  const stored = await harness.submit({ to: ['later@slow.test'], subject: 'keeps failing' });
  await waitFor(() => attemptsOf(stored.id) === 1, 'the first attempt');
  assert.equal((await harness.durableRecipients(stored.id))?.[0]?.nextAttemptAt, start + 1 * MINUTE);

  clock.advance(MINUTE - 1_000);
  await new Promise((resolve) => setTimeout(resolve, 300));
  assert.equal(attemptsOf(stored.id), 1, 'no attempt before the first retry is due');
  clock.advance(1_000);
  await waitFor(() => attemptsOf(stored.id) === 2, 'the second attempt at +1m');
  assert.equal((await harness.durableRecipients(stored.id))?.[0]?.nextAttemptAt, start + 6 * MINUTE, 'then the last wait (5m) repeats');

  clock.advance(5 * MINUTE);
  await waitFor(() => attemptsOf(stored.id) === 3, 'the third attempt at +6m');
  assert.equal((await harness.durableRecipients(stored.id))?.[0]?.nextAttemptAt, start + 10 * MINUTE, 'capped at the bounceAfter deadline');

  clock.advance(4 * MINUTE);
  await waitFor(() => harness.spool.removed.includes(stored.id), 'expiry at +10m');
  const last = harness.spool.recorded.filter((entry) => entry.id === stored.id).at(-1);
  assert.equal(last?.result.status, 'bounced');
  assert.match(last?.result.lastResult ?? '', /expired.*451 4\.3\.0/);

  const dsn = await waitFor(() => senderMx.messages.find((message) => message.body.includes(stored.id)), 'the expiry DSN');
  const parsed = await simpleParser(dsn.body);
  const block = (parsed.text ?? '').split(/\n\s*\n/).find((paragraph) => paragraph.includes('Final-Recipient:'));
  assert.match(block ?? '', /^Status: 4\.4\.7$/m);
  assert.match(block ?? '', /^Action: failed$/m);
  const accounting = (await harness.accountingLines()).filter((line) => line.queueId === stored.id);
  assert.deepEqual(accounting.map((line) => [line.result, line.attempt]), [['deferred', 1], ['deferred', 2], ['deferred', 3], ['bounced', 4]]);
  assert.equal(accounting.at(-1)?.bounceCategory, 'message-expired');
});

test('a throttling reply enters backoff (longer retry, visible in queues and metrics) and a delivery leaves it', async () => {
  const mx = sinks[0]!;
  const stored = await harness.submit({ to: ['busy@throttle.test'] });
  await waitFor(() => attemptsOf(stored.id) === 1, 'the throttled attempt');
  const queue = harness.engine.listQueues().find((entry) => entry.domain === 'throttle.test');
  assert.equal(queue?.backoff.active, true);
  assert.equal((await harness.durableRecipients(stored.id))?.[0]?.nextAttemptAt, clock.now() + 30 * MINUTE, 'backoff retryAfter (30m), not the normal 10m');
  harness.engine.refreshGauges();
  assert.match(await harness.metrics.registry.getSingleMetricAsString('vmta_backoff_active'), /vmta_backoff_active\{virtual_mta="vmta-retry",domain="other"\} 1/);

  mx.options = { ...mx.options, rcptReplies: {} };
  clock.advance(10 * MINUTE);
  await new Promise((resolve) => setTimeout(resolve, 300));
  assert.equal(attemptsOf(stored.id), 1, 'no retry at the normal interval while in backoff');
  clock.advance(20 * MINUTE);
  await waitFor(() => harness.spool.removed.includes(stored.id), 'delivery after the backoff retry');
  const after = harness.engine.listQueues().find((entry) => entry.domain === 'throttle.test');
  assert.equal(after?.backoff.active ?? false, false, 'a delivery returns the queue to normal');
  harness.engine.refreshGauges();
  assert.doesNotMatch(await harness.metrics.registry.getSingleMetricAsString('vmta_backoff_active'), /\} 1/);
});
