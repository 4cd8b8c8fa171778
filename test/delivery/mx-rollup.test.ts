import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { startSinkGroup, type SinkMx } from '../fixtures/sink-mx.ts';
import { startHarness, waitFor, type Harness } from './harness.ts';

let sinks: SinkMx[];
let harness: Harness;

before(async () => {
  sinks = await startSinkGroup([{}]);
  const [shared] = sinks as [SinkMx];
  harness = await startHarness({
    mxPort: shared.port,
    delivery: { mxRollup: true },
    zone: {
      'alpha.test': { mx: [{ preference: 10, exchange: 'mx.hosting.test' }] },
      'beta.test': { mx: [{ preference: 10, exchange: 'mx.hosting.test' }] },
      'mx.hosting.test': { a: [shared.address] },
    },
    pool: {
      name: 'pool-rollup',
      virtualMtas: [{ name: 'vmta-rollup', hostname: 'rollup.sender.test' }],
      domainDefaults: [{ match: '*', tlsPolicy: 'none', maxSmtpOut: 1, maxMessagesPerConnection: 20 }],
    },
  });
});

after(async () => {
  await harness?.close();
  await Promise.all((sinks ?? []).map((sink) => sink.close()));
});

test('with MX rollup, domains on the same MX hosts share one connection and its limit', async () => {
  const shared = sinks[0]!;
  // Learn the site of both domains first (one message each), then queue more while paused.
  const warmUp = await Promise.all([harness.submit({ to: ['w1@alpha.test'] }), harness.submit({ to: ['w2@beta.test'] })]);
  await waitFor(() => warmUp.every((message) => harness.spool.removed.includes(message.id)), 'warm-up delivery');
  const sites = harness.engine.listQueues().map((queue) => queue.site);
  assert.ok(sites.every((site) => site === 'mx.hosting.test'), `both domains on one site: ${sites}`);

  harness.engine.pause({ virtualMta: 'vmta-rollup' });
  const stored = await Promise.all(['alpha.test', 'beta.test', 'alpha.test', 'beta.test', 'alpha.test', 'beta.test'].map((domain, index) => harness.submit({ to: [`u${index}@${domain}`] })));
  const sessionsBefore = shared.sessions.length;
  harness.engine.resume({ virtualMta: 'vmta-rollup' });
  await waitFor(() => stored.every((message) => harness.spool.removed.includes(message.id)), 'delivery of both domains');
  const newSessions = shared.sessions.slice(sessionsBefore).filter((session) => session.messages > 0);
  assert.equal(newSessions.length, 1, 'one connection carried both domains');
  assert.equal(newSessions[0]?.messages, 6);
  assert.equal(shared.maxOpenSessions, 1, 'the site limit (maxSmtpOut 1) held across the two domains');
});
