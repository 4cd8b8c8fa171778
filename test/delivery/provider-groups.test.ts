import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { providerGroupFor } from '../../mta/delivery/destination-limits.ts';
import { ProviderGroup } from '../../mta/config/schema.ts';
import { startSinkGroup, type SinkMx } from '../fixtures/sink-mx.ts';
import { startHarness, waitFor, type Harness } from './harness.ts';

const GROUP_LIMIT = 2;
const GROUP_RATE_PER_S = 8;
/** Three domains on three MX host names of one provider, matched by a wildcard and an exact pattern. */
const GROUPED = { 'a.test': 'mx1.bigmail.test', 'b.test': 'mx2.bigmail.test', 'c.test': 'inbound.bigmail-partner.test' } as const;

let sinks: SinkMx[];
let grouped: Harness;
let ungrouped: Harness;
const deliveredAt: number[] = [];

function zone(address: string) {
  return Object.fromEntries(Object.entries(GROUPED).flatMap(([domain, mx]) => [[domain, { mx: [{ preference: 10, exchange: mx }] }], [mx, { a: [address] }]]));
}

before(async () => {
  sinks = await startSinkGroup([{ replyFor: (stage) => (stage === 'data' ? void deliveredAt.push(Date.now()) : undefined) }, {}]);
  const [groupSink, controlSink] = sinks as [SinkMx, SinkMx];
  const domainDefaults = [{ match: '*', tlsPolicy: 'none' as const, maxSmtpOut: 10, maxMessagesPerConnection: 1 }];
  grouped = await startHarness({
    mxPort: groupSink.port,
    zone: zone(groupSink.address),
    pool: {
      name: 'pool-groups',
      virtualMtas: [{ name: 'vmta-groups', hostname: 'groups.sender.test' }],
      domainDefaults,
      providerGroups: [{ name: 'bigmail', mxHosts: ['*.bigmail.test', 'inbound.bigmail-partner.test'], maxSmtpOut: GROUP_LIMIT, maxMessageRate: `${GROUP_RATE_PER_S}/s` }],
    },
  });
  ungrouped = await startHarness({
    mxPort: controlSink.port,
    zone: zone(controlSink.address),
    pool: { name: 'pool-nogroups', virtualMtas: [{ name: 'vmta-nogroups', hostname: 'nogroups.sender.test' }], domainDefaults },
  });
});

after(async () => {
  await grouped?.close();
  await ungrouped?.close();
  await Promise.all((sinks ?? []).map((sink) => sink.close()));
});

async function sendToEveryDomain(harness: Harness, perDomain: number) {
  const vmta = harness.config.pool.virtualMtas[0]!.name;
  // Learn every domain's MX (and so its group) first, then release the burst at once.
  const warmUp = await Promise.all(Object.keys(GROUPED).map((domain) => harness.submit({ to: [`first@${domain}`] })));
  await waitFor(() => warmUp.every((message) => harness.spool.removed.includes(message.id)), 'warm-up delivery');
  harness.engine.pause({ virtualMta: vmta });
  const burst = await Promise.all(Object.keys(GROUPED).flatMap((domain) => Array.from({ length: perDomain }, (_, index) => harness.submit({ to: [`u${index}@${domain}`] }))));
  harness.engine.resume({ virtualMta: vmta });
  await waitFor(() => burst.every((message) => harness.spool.removed.includes(message.id)), 'delivery of the burst', 60_000);
  return burst.length;
}

test('domains whose MX hosts match one provider group share its connection limit and rate', async () => {
  const [groupSink] = sinks as [SinkMx];
  deliveredAt.length = 0;
  const sent = await sendToEveryDomain(grouped, 8);
  assert.ok(groupSink.maxOpenSessions <= GROUP_LIMIT, `at most ${GROUP_LIMIT} connections for the three domains together, saw ${groupSink.maxOpenSessions}`);
  const burst = deliveredAt.slice(-sent).sort((a, b) => a - b);
  const measured = ((burst.length - 1) * 1000) / (burst.at(-1)! - burst[0]!);
  console.log(`provider group: max concurrent ${groupSink.maxOpenSessions} (limit ${GROUP_LIMIT}), ${measured.toFixed(2)} msg/s over ${burst.length} (limit ${GROUP_RATE_PER_S}/s)`);
  assert.ok(measured <= GROUP_RATE_PER_S * 1.05, `group rate ${measured.toFixed(2)}/s within ${GROUP_RATE_PER_S}/s`);
});

test('without the group the same domains open more connections than the group allows (the limit above is the group\'s)', async () => {
  const [, controlSink] = sinks as [SinkMx, SinkMx];
  await sendToEveryDomain(ungrouped, 8);
  assert.ok(controlSink.maxOpenSessions > GROUP_LIMIT, `per-domain limits only: ${controlSink.maxOpenSessions} connections at once`);
});

test('an MX host belongs to the first group with a matching pattern; sub-domain patterns do not match the bare domain', () => {
  const groups = [
    ProviderGroup.parse({ name: 'google', mxHosts: ['*.google.com', 'aspmx.l.google.com'] }),
    ProviderGroup.parse({ name: 'microsoft', mxHosts: ['*.protection.outlook.com'] }),
    ProviderGroup.parse({ name: 'catch-google', mxHosts: ['*.l.google.com'] }),
  ];
  const cases: [string[], string | undefined][] = [
    [['ASPMX.L.GOOGLE.COM.'], 'google'],
    [['alt1.aspmx.l.google.com'], 'google'],
    [['example-com.mail.protection.outlook.com'], 'microsoft'],
    [['mx.example.net', 'eu-smtp.mail.protection.outlook.com'], 'microsoft'],
    [['google.com'], undefined],
    [['protection.outlook.com'], undefined],
    [['mx.example.net'], undefined],
  ];
  for (const [hosts, expected] of cases) assert.equal(providerGroupFor(groups, hosts)?.name, expected, `${hosts}`);
  assert.throws(() => ProviderGroup.parse({ name: 'Bad Name', mxHosts: ['*.x.test'] }));
  assert.throws(() => ProviderGroup.parse({ name: 'empty', mxHosts: [] }));
});

test('a group\'s domain settings hold for its domains from their first connection on: TLS required where the pool says none', async () => {
  const [sink] = await startSinkGroup([{}]); // no STARTTLS offered
  const harness = await startHarness({
    mxPort: sink!.port,
    zone: { ...zone(sink!.address), 'plain.test': { mx: [{ preference: 10, exchange: 'mx.plain.test' }] }, 'mx.plain.test': { a: [sink!.address] } },
    pool: {
      name: 'pool-group-settings',
      virtualMtas: [{ name: 'vmta-gs', hostname: 'gs.sender.test' }],
      domainDefaults: [{ match: '*', tlsPolicy: 'none' }, { match: 'c.test', tlsPolicy: 'none' }],
      providerGroups: [{ name: 'bigmail', mxHosts: ['*.bigmail.test', 'inbound.bigmail-partner.test'], domainSettings: { tlsPolicy: 'required', retryAfter: ['1h'] } }],
    },
  });
  try {
    const plain = await harness.submit({ to: ['u@plain.test'] });
    const grouped = await Promise.all(['a.test', 'b.test'].map((domain) => harness.submit({ to: [`u@${domain}`] })));
    const ownBlock = await harness.submit({ to: ['u@c.test'] });
    await waitFor(() => [plain, ownBlock].every((message) => harness.spool.removed.includes(message.id)), 'the plain domain and the one with its own block delivered in clear');
    // A failure of the TLS route defers the whole queue (recorded per destination, not per message).
    await waitFor(() => ['a.test', 'b.test'].every((domain) => harness.engine.listQueues().find((summary) => summary.domain === domain)?.lastError), 'a first attempt for the group\'s domains');
    const queues = harness.engine.listQueues();
    for (const domain of ['a.test', 'b.test']) {
      const queue = queues.find((summary) => summary.domain === domain);
      assert.equal(queue?.providerGroup, 'bigmail');
      assert.match(queue?.lastError ?? '', /STARTTLS|TLS/i, `${domain}: TLS is required by its group, and this MX offers none`);
    }
    assert.ok(grouped.every((message) => !harness.spool.removed.includes(message.id)), 'nothing of the group was sent in clear');
    assert.ok(!sink!.messages.some((message) => message.to.some((address) => /@[ab]\.test$/.test(address))), 'the sink got no mail for the group\'s domains');
  } finally {
    await harness.close();
    await sink!.close();
  }
});
