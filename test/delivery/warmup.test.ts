// Warm-up caps in the delivery engine with real sockets: a warming VirtualMTA sends exactly its
// cap from its own source address, the rest leaves through the overflow VirtualMTA, and without
// an overflow the rest waits (with a reason) until the day or hour window ends on the clock. A
// provider group's cap holds for all the domains whose MX hosts are in the group together.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { RuntimeConfigInput } from '../../mta/config/schema.ts';
import { loopbackAddresses, startSinkMx, type SinkMx } from '../fixtures/sink-mx.ts';
import { startHarness, settle, waitFor, type Harness } from './harness.ts';
import { ManualClock } from './manual-clock.ts';

let sink: SinkMx;
let warmingAddress: string;
let overflowAddress: string;
const HOUR = 3_600_000;

before(async () => {
  [warmingAddress, overflowAddress] = loopbackAddresses(2) as [string, string];
  sink = await startSinkMx({ address: loopbackAddresses(1)[0]! });
});

after(async () => {
  await sink?.close();
});

type WarmupInput = NonNullable<RuntimeConfigInput['pool']['virtualMtas'][number]['warmup']>;

function pool(warmup: WarmupInput, overflow: boolean): RuntimeConfigInput['pool'] {
  return {
    name: 'pool-a',
    providerGroups: [{ name: 'google', mxHosts: ['*.google.test'] }],
    domainDefaults: [{ match: '*', tlsPolicy: 'none' }],
    virtualMtas: [
      { name: 'warming', sourceAddress: warmingAddress, hostname: 'warming.sender.test', warmup },
      { name: 'warm', sourceAddress: overflowAddress, hostname: 'warm.sender.test' },
    ],
    ...(overflow ? { overflowVirtualMtas: ['warm'] } : {}),
  };
}

async function harnessWith(warmup: WarmupInput, overflow: boolean, clock?: ManualClock): Promise<Harness> {
  return startHarness({
    mxPort: sink.port,
    zone: {
      'example.test': { mx: [{ preference: 10, exchange: 'mx.example.test' }] },
      'mx.example.test': { a: [sink.address] },
      // Two domains of the provider group "google": their MX hosts match *.google.test.
      'gmail.test': { mx: [{ preference: 5, exchange: 'aspmx.google.test' }] },
      'workspace.test': { mx: [{ preference: 5, exchange: 'aspmx.google.test' }] },
      'aspmx.google.test': { a: [sink.address] },
    },
    pool: pool(warmup, overflow),
    ...(clock ? { clock } : {}),
  });
}

function receivedFor(tag: string): { warming: number; overflow: number; other: number } {
  const mine = sink.messages.filter((message) => message.to.some((address) => address.startsWith(`${tag}-`)));
  const count = (address: string, ehlo: string): number => mine.filter((message) => message.remoteAddress === address && message.ehloName === ehlo).length;
  const warming = count(warmingAddress, 'warming.sender.test');
  const overflow = count(overflowAddress, 'warm.sender.test');
  return { warming, overflow, other: mine.length - warming - overflow };
}

for (const cap of [0, 1, 4]) {
  test(`a warming VirtualMTA with a daily cap of ${cap} sends ${cap} of 7 messages itself and hands the rest to the overflow VirtualMTA`, async () => {
    const harness = await harnessWith({ start: new Date().toISOString().slice(0, 10), schedule: [{ day: 1, daily: cap }, { day: 2, daily: 1000 }] }, true);
    try {
      const tag = `cap${cap}`;
      for (let index = 0; index < 7; index += 1) await harness.submit({ to: [`${tag}-${index}@example.test`], virtualMta: 'warming' });
      await waitFor(() => receivedFor(tag).warming + receivedFor(tag).overflow === 7, 'all 7 messages at the sink');
      assert.deepEqual(receivedFor(tag), { warming: cap, overflow: 7 - cap, other: 0 });
      const [status] = harness.engine.warmupStatus();
      assert.equal(status?.virtualMta, 'warming');
      assert.equal(status?.day, 1);
      assert.equal(status?.dailyCap, cap);
      assert.equal(status?.dailyUsed, cap);
      const overflowMetric = await harness.metrics.registry.getSingleMetricAsString('vmta_warmup_overflow_total');
      if (cap < 7) assert.match(overflowMetric, new RegExp(`vmta_warmup_overflow_total\\{vmta="warming",to="warm"\\} ${7 - cap}\\b`));
      harness.engine.refreshGauges();
      assert.match(await harness.metrics.registry.getSingleMetricAsString('vmta_warmup_used'), new RegExp(`vmta_warmup_used\\{vmta="warming"\\} ${cap}\\b`));
    } finally {
      await harness.close();
    }
  });
}

test('without an overflow VirtualMTA the mail past the daily cap waits, with the reason, until the next day of the plan', async () => {
  const clock = new ManualClock(Date.UTC(2026, 11, 1, 22, 30));
  const harness = await harnessWith({ start: '2026-12-01', schedule: [{ day: 1, daily: 2 }, { day: 2, daily: 10 }] }, false, clock);
  try {
    const tag = 'nooverflow';
    // Two recipients of one domain in one message are one unit of the cap, as PowerMTA counts.
    await harness.submit({ to: [`${tag}-a1@example.test`, `${tag}-a2@example.test`], virtualMta: 'warming' });
    for (let index = 0; index < 4; index += 1) await harness.submit({ to: [`${tag}-${index}@example.test`], virtualMta: 'warming' });
    await waitFor(() => receivedFor(tag).warming === 2, 'two messages within the cap');
    await settle();
    assert.equal(receivedFor(tag).warming, 2);
    const queue = harness.engine.listQueues().find((summary) => summary.virtualMta === 'warming');
    assert.match(queue?.lastError ?? '', /warm-up day 1: daily cap 2 reached; no overflow VirtualMTA, mail waits until 2026-12-02T00:00:00\.000Z/);
    assert.equal(harness.spool.removed.length, 2);
    clock.advance(HOUR + 30 * 60_000);
    await waitFor(() => receivedFor(tag).warming === 5, 'the three waiting messages on day 2');
    assert.equal(receivedFor(tag).overflow, 0);
    assert.equal(harness.engine.warmupStatus()[0]?.day, 2);
  } finally {
    await harness.close();
  }
});

test('an hourly cap holds the mail past it until the next hour, and the daily count goes on across hours', async () => {
  const clock = new ManualClock(Date.UTC(2026, 11, 5, 9, 59));
  const harness = await harnessWith({ start: '2026-12-01', timeZone: 'Europe/Berlin', schedule: [{ day: 5, daily: 5, hourly: 2 }] }, false, clock);
  try {
    const tag = 'hourly';
    for (let index = 0; index < 6; index += 1) await harness.submit({ to: [`${tag}-${index}@example.test`], virtualMta: 'warming' });
    await waitFor(() => receivedFor(tag).warming === 2, 'two messages in the first hour');
    await settle();
    assert.equal(receivedFor(tag).warming, 2);
    assert.match(harness.engine.listQueues().find((summary) => summary.virtualMta === 'warming')?.lastError ?? '', /hourly cap 2 reached; no overflow VirtualMTA, mail waits until 2026-12-05T10:00:00\.000Z/);
    clock.advance(60_000);
    await waitFor(() => receivedFor(tag).warming === 4, 'two more in the next hour');
    clock.advance(HOUR);
    await waitFor(() => receivedFor(tag).warming === 5, 'the fifth in the third hour');
    await settle();
    assert.equal(receivedFor(tag).warming, 5, 'the daily cap of 5 holds although the hour had room');
    assert.deepEqual(
      harness.engine.warmupStatus().map(({ day, dailyCap, hourlyCap, dailyUsed }) => ({ day, dailyCap, hourlyCap, dailyUsed })),
      [{ day: 5, dailyCap: 5, hourlyCap: 2, dailyUsed: 5 }],
    );
  } finally {
    await harness.close();
  }
});

test('a provider group\'s cap holds for its domains together; other domains send under the plan\'s cap alone', async () => {
  const harness = await harnessWith({ start: new Date().toISOString().slice(0, 10), schedule: [{ day: 1, daily: 1000 }], providerGroups: [{ name: 'google', schedule: [{ day: 1, daily: 2 }] }] }, true);
  try {
    const tag = 'group';
    for (let index = 0; index < 4; index += 1) await harness.submit({ to: [`${tag}-g${index}@gmail.test`], virtualMta: 'warming' });
    for (let index = 0; index < 3; index += 1) await harness.submit({ to: [`${tag}-w${index}@workspace.test`], virtualMta: 'warming' });
    for (let index = 0; index < 5; index += 1) await harness.submit({ to: [`${tag}-e${index}@example.test`], virtualMta: 'warming' });
    await waitFor(() => receivedFor(tag).warming + receivedFor(tag).overflow === 12, 'all 12 messages at the sink');
    const inGroup = sink.messages.filter((message) => message.to.some((address) => address.startsWith(`${tag}-`) && /@(gmail|workspace)\.test$/.test(address)));
    const fromWarming = (messages: typeof inGroup) => messages.filter((message) => message.remoteAddress === warmingAddress).length;
    assert.equal(fromWarming(inGroup), 2, 'the group\'s 7 messages: 2 from the warming address (its group cap), over both domains');
    assert.equal(inGroup.length - fromWarming(inGroup), 5, 'the other 5 through the overflow VirtualMTA');
    const outside = sink.messages.filter((message) => message.to.some((address) => address.startsWith(`${tag}-e`)));
    assert.equal(fromWarming(outside), 5, 'a domain in no group is not held by the group\'s cap');
    assert.deepEqual(
      harness.engine.warmupStatus().map(({ virtualMta, providerGroup, dailyCap, dailyUsed }) => ({ virtualMta, providerGroup, dailyCap, dailyUsed })),
      [
        { virtualMta: 'warming', providerGroup: undefined, dailyCap: 1000, dailyUsed: 7 },
        { virtualMta: 'warming', providerGroup: 'google', dailyCap: 2, dailyUsed: 2 },
      ],
    );
    harness.engine.refreshGauges();
    const used = await harness.metrics.registry.getSingleMetricAsString('vmta_warmup_used');
    assert.match(used, /vmta_warmup_used\{vmta="warming",provider_group="google"\} 2\b/);
    assert.match(used, /vmta_warmup_used\{vmta="warming"\} 7\b/);
  } finally {
    await harness.close();
  }
});

test('without an overflow the group\'s domains wait at the group\'s cap, with the group named, while other domains go on', async () => {
  const harness = await harnessWith({ start: new Date().toISOString().slice(0, 10), schedule: [{ day: 1, daily: 1000 }], providerGroups: [{ name: 'google', schedule: [{ day: 1, daily: 1 }] }] }, false);
  try {
    const tag = 'groupwait';
    for (let index = 0; index < 3; index += 1) await harness.submit({ to: [`${tag}-g${index}@gmail.test`], virtualMta: 'warming' });
    for (let index = 0; index < 2; index += 1) await harness.submit({ to: [`${tag}-e${index}@example.test`], virtualMta: 'warming' });
    await waitFor(() => receivedFor(tag).warming === 3, 'one group message and both others');
    await settle();
    assert.deepEqual(receivedFor(tag), { warming: 3, overflow: 0, other: 0 });
    const queues = harness.engine.listQueues().filter((summary) => summary.virtualMta === 'warming');
    assert.match(queues.find((summary) => summary.domain === 'gmail.test')?.lastError ?? '', /warm-up day 1 \(provider group google\): daily cap 1 reached; no overflow VirtualMTA, mail waits until /);
    assert.equal(queues.find((summary) => summary.domain === 'example.test')?.lastError ?? null, null);
  } finally {
    await harness.close();
  }
});
