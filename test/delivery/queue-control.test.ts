import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { queueRoutes } from '../../mta/admin/queue-api.ts';
import type { RuntimeConfig, RuntimeConfigInput } from '../../mta/config/schema.ts';
import { accessRefusal, matchRoute, type AdminResponse, type AdminRoute } from '../../mta/admin/routes.ts';
import { loopbackAddresses, startSinkGroup, type SinkMx } from '../fixtures/sink-mx.ts';
import { buildConfig, settle, startHarness, waitFor, type Harness } from './harness.ts';

let sinks: SinkMx[];
let harness: Harness;
let routes: AdminRoute[];

before(async () => {
  sinks = await startSinkGroup([{}, {}]);
  const [mx, other] = sinks as [SinkMx, SinkMx];
  harness = await startHarness({
    mxPort: mx.port,
    zone: {
      'many.test': { mx: [{ preference: 10, exchange: 'mx.many.test' }] },
      'paused.test': { mx: [{ preference: 10, exchange: 'mx.many.test' }] },
      'flush.test': { mx: [{ preference: 10, exchange: 'mx.other.test' }] },
      'purge.test': { mx: [{ preference: 10, exchange: 'mx.other.test' }] },
      'mx.many.test': { a: [mx.address] },
      'mx.other.test': { a: [other.address] },
    },
    pool: {
      name: 'pool-control',
      virtualMtas: [
        { name: 'vmta-a', hostname: 'a.sender.test' },
        { name: 'vmta-broken', sourceAddress: '192.0.2.77', hostname: 'broken.sender.test' },
      ],
      domainDefaults: [
        { match: '*', tlsPolicy: 'none', retryAfter: ['1h'] },
        { match: 'many.test', maxSmtpOut: 2, maxMessagesPerConnection: 3 },
      ],
    },
  });
  routes = queueRoutes(harness.engine);
});

after(async () => {
  await harness?.close();
  await Promise.all((sinks ?? []).map((sink) => sink.close()));
});

/** The test's config with other VirtualMTAs and domain defaults, validated by the real schema. */
function reloadedConfig(virtualMtas: RuntimeConfigInput['pool']['virtualMtas'], domainDefaults: RuntimeConfigInput['pool']['domainDefaults']): RuntimeConfig {
  return buildConfig({ pool: { name: 'pool-control', virtualMtas, ...(domainDefaults ? { domainDefaults } : {}) }, mxPort: harness.config.delivery.mxPort, resolvers: harness.config.delivery.resolvers });
}

/** A call through the route table as the admin server makes it (test/admin/access.test.ts covers the HTTP side); undefined for a path no queue route has. */
async function call(method: string, path: string, body?: unknown, authorized = true): Promise<AdminResponse | undefined> {
  const match = matchRoute(routes, method, path);
  if (!('route' in match)) return match.status === 404 ? undefined : { status: match.status, body: { error: match.error } };
  const refusal = accessRefusal(match.route.access, authorized ? 'full' : 'missing');
  if (refusal) return { status: refusal.status, body: refusal };
  assert.ok('handle' in match.route);
  return match.route.handle({ method, path, params: match.params, query: new URLSearchParams(), body });
}

test('connections are reused up to maxMessagesPerConnection and never exceed maxSmtpOut', async () => {
  const mx = sinks[0]!;
  await call('POST', '/api/v1/queues/pause', { domain: 'many.test' });
  const stored = await Promise.all(Array.from({ length: 12 }, (_, index) => harness.submit({ to: [`user${index}@many.test`] })));
  const queued = harness.engine.listQueues().find((queue) => queue.domain === 'many.test');
  assert.equal(queued?.ready, 12);
  assert.equal(queued?.paused, true);
  await call('POST', '/api/v1/queues/resume', { domain: 'many.test' });
  await waitFor(() => stored.every((message) => harness.spool.removed.includes(message.id)), 'all 12 delivered');
  const sessions = mx.sessions.filter((session) => session.ehloName === 'a.sender.test' && session.messages > 0);
  assert.equal(sessions.reduce((sum, session) => sum + session.messages, 0), 12);
  assert.ok(sessions.every((session) => session.messages <= 3), `at most 3 messages per connection: ${sessions.map((s) => s.messages)}`);
  assert.ok(sessions.some((session) => session.messages > 1), 'connections were reused');
  assert.ok(sessions.length >= 4);
  assert.ok(mx.maxOpenSessions <= 2, `at most 2 connections at once, saw ${mx.maxOpenSessions}`);
});

test('pausing a VirtualMTA holds its mail until it is resumed', async () => {
  const mx = sinks[0]!;
  const paused = await call('POST', '/api/v1/queues/pause', { virtualMta: 'vmta-a' });
  assert.equal(paused?.status, 200);
  const stored = await harness.submit({ to: ['held@paused.test'] });
  await settle();
  assert.equal(mx.messages.some((message) => message.to.includes('held@paused.test')), false);
  const listed = await call('GET', '/api/v1/queues');
  const queues = (listed?.body as { queues: { domain: string; paused: boolean; messages: number }[] }).queues;
  assert.deepEqual(queues.filter((queue) => queue.domain === 'paused.test').map((queue) => [queue.paused, queue.messages]), [[true, 1]]);
  const shown = await call('GET', `/api/v1/messages/${stored.id}`);
  assert.equal((shown?.body as { recipients: { status: string }[] }).recipients[0]?.status, 'pending');
  await call('POST', '/api/v1/queues/resume', { virtualMta: 'vmta-a' });
  await waitFor(() => mx.messages.find((message) => message.to.includes('held@paused.test')), 'delivery after resume');
});

test('retry now (flush) sends scheduled mail at once', async () => {
  const other = sinks[1]!;
  other.options = { ...other.options, rcptReplies: { 'later@flush.test': '451 4.3.0 Not now' } };
  const stored = await harness.submit({ to: ['later@flush.test'] });
  await waitFor(() => harness.spool.recorded.some((entry) => entry.id === stored.id), 'the deferral');
  const queue = harness.engine.listQueues().find((entry) => entry.domain === 'flush.test');
  assert.equal(queue?.scheduled, 1);
  assert.ok(queue?.nextRetryAt && Date.parse(queue.nextRetryAt) > Date.now() + 50 * 60_000, 'next retry about an hour away');
  other.options = { ...other.options, rcptReplies: {} };
  const flushed = await call('POST', '/api/v1/queues/retry', { domain: 'flush.test' });
  assert.equal((flushed?.body as { messages: number }).messages, 1);
  await waitFor(() => harness.spool.removed.includes(stored.id), 'delivery after retry now');
});

test('destructive calls need the admin token; bounce and delete need a selector or all', async () => {
  assert.equal((await call('POST', '/api/v1/queues/delete', { domain: 'purge.test' }, false))?.status, 401);
  assert.equal((await call('POST', '/api/v1/queues/pause', {}, false))?.status, 401);
  assert.equal((await call('POST', '/api/v1/queues/bounce', {}))?.status, 400);
  assert.equal((await call('POST', '/api/v1/queues/pause', { domain: 5 }))?.status, 400);
  assert.equal((await call('POST', '/api/v1/queues/pause', { virtualMta: 'vmta-typo' }))?.status, 404);
  assert.equal(await call('GET', '/api/v1/unrelated'), undefined, 'other paths are not queue routes');
});

test('delete drops a queue without a DSN; bounce sends one', async () => {
  const other = sinks[1]!;
  await call('POST', '/api/v1/queues/pause', { domain: 'purge.test' });
  const dropped = await harness.submit({ from: 'owner@flush.test', to: ['x@purge.test'] });
  const deleted = await call('POST', '/api/v1/queues/delete', { domain: 'purge.test', virtualMta: 'vmta-a' });
  assert.equal((deleted?.body as { messages: number }).messages, 1);
  assert.ok(harness.spool.removed.includes(dropped.id));
  assert.equal((await call('GET', `/api/v1/messages/${dropped.id}`))?.status, 404);

  const bounced = await harness.submit({ from: 'owner@flush.test', to: ['y@purge.test'] });
  const result = await call('POST', '/api/v1/queues/bounce', { domain: 'purge.test' });
  assert.equal((result?.body as { messages: number }).messages, 1);
  await waitFor(() => other.messages.find((message) => message.to.includes('owner@flush.test') && message.body.includes(bounced.id)), 'the DSN of the bounced message');
  await settle();
  assert.equal(other.messages.some((message) => message.body.includes(dropped.id)), false, 'no DSN for the deleted message');
});

test('a VirtualMTA whose source address is not on this host is reported unusable and its mail waits', async () => {
  const listed = await call('GET', '/api/v1/queues');
  const broken = (listed?.body as { virtualMtas: { name: string; usable: boolean; detail: string | null }[] }).virtualMtas.find((vmta) => vmta.name === 'vmta-broken');
  assert.equal(broken?.usable, false);
  assert.match(broken?.detail ?? '', /192\.0\.2\.77 cannot be bound/);
  const stored = await harness.submit({ to: ['waits@many.test'], virtualMta: 'vmta-broken' });
  await settle();
  assert.equal(harness.spool.recorded.some((entry) => entry.id === stored.id), false, 'no failed attempt recorded');
  harness.engine.refreshGauges();
  assert.match(await harness.metrics.registry.getSingleMetricAsString('vmta_virtual_mta_usable'), /vmta_virtual_mta_usable\{virtual_mta="vmta-broken"\} 0/);
});

test('a reload that gives the VirtualMTA a bindable source address makes it usable and sends its waiting mail', async () => {
  const mx = sinks[0]!;
  const waiting = harness.engine.listQueues().find((queue) => queue.virtualMta === 'vmta-broken');
  assert.match(waiting?.lastError ?? '', /unusable/);
  const fixedAddress = loopbackAddresses(1)[0]!;
  const reloaded = reloadedConfig(
    [
      { name: 'vmta-a', hostname: 'a.sender.test' },
      { name: 'vmta-broken', sourceAddress: fixedAddress, hostname: 'broken.sender.test' },
    ],
    [{ match: '*', tlsPolicy: 'none', retryAfter: ['1h'] }],
  );
  await harness.engine.reload(reloaded);
  assert.equal(harness.engine.virtualMtaStatus().find((vmta) => vmta.name === 'vmta-broken')?.usable, true);
  const received = await waitFor(() => mx.messages.find((message) => message.to.includes('waits@many.test')), 'delivery after the reload');
  assert.equal(received.remoteAddress, fixedAddress);
  assert.equal(received.ehloName, 'broken.sender.test');
});

test('maxMessageRate spaces messages out (at least the configured interval between them)', async () => {
  const mx = sinks[0]!;
  const reloaded = reloadedConfig([{ name: 'vmta-a', hostname: 'a.sender.test' }], [{ match: '*', tlsPolicy: 'none' }, { match: 'paced.test', maxMessageRate: '10/s', maxSmtpOut: 4 }]);
  await harness.engine.reload(reloaded);
  harness.dns.set('paced.test', { mx: [{ preference: 10, exchange: 'mx.many.test' }] });
  const started = Date.now();
  const stored = await Promise.all(Array.from({ length: 4 }, (_, index) => harness.submit({ to: [`p${index}@paced.test`] })));
  await waitFor(() => stored.every((message) => harness.spool.removed.includes(message.id)), 'all paced messages delivered');
  // 4 messages at 10/s: the 4th may start no sooner than 300 ms after the 1st (a lower bound, safe on a slow machine).
  assert.ok(Date.now() - started >= 300, `took ${Date.now() - started} ms`);
  assert.equal(mx.messages.filter((message) => message.to.some((address) => address.endsWith('@paced.test'))).length, 4);
});
