// status.warmup from the pods' GET /warmup answers (operator/controller/warmup-status.ts), over a
// class of inputs: 0 to 3 ready pods, each answering today's count, nothing, yesterday's count,
// a list without the VirtualMTA, or numbers that are not counts; at instants before the plan's
// start, on its days (with and without hourly caps, either side of a local midnight) and after
// its last day. Day and caps must be the plan's pool caps (never the per-pod share a pod
// reports), use the sum over the pods that answered for today, podsReporting those pods and
// podsExpected every ready pod. A pool with nothing warming reads no pod.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { WarmupPlan } from '../../mta/config/warmup-plan.ts';
import type { WarmupStatus } from '../../mta/delivery/warmup-ledger.ts';
import type { VirtualMtaPool } from '../../operator/api/virtual-mta-pool.ts';
import { warmupStatus, type WarmupReader } from '../../operator/controller/warmup-status.ts';
import type { KubeObject } from '../../operator/kube/types.ts';

const HOUR = 3_600_000;
// New York: UTC-5 in December, so local midnight is 05:00Z.
const plan = WarmupPlan.parse({ start: '2026-12-01', timeZone: 'America/New_York', schedule: [{ day: 1, daily: 200 }, { day: 2, daily: 500, hourly: 50 }, { day: 4, daily: 2000, hourly: 200 }] });
// A second warming VirtualMTA counted in UTC, whose plan runs longer.
const utcPlan = WarmupPlan.parse({ start: '2026-12-03', schedule: [{ day: 1, daily: 10, hourly: 3 }, { day: 30, daily: 90 }] });

function poolOf(virtualMtas: { name: string; warmup?: typeof plan }[]): VirtualMtaPool {
  return { apiVersion: 'vmta.dev/v1alpha1', kind: 'VirtualMtaPool', metadata: { name: 'outbound', namespace: 'mail' }, spec: { virtualMtas } } as unknown as VirtualMtaPool;
}
const pool = poolOf([{ name: 'warm' }, { name: 'new-ny', warmup: plan }, { name: 'new-utc', warmup: utcPlan }]);

interface Expected {
  day: number;
  dailyCap: number;
  hourlyCap?: number;
  dayEndsAt: string;
}
/** Instants and what the plans say at them, written out by hand (not computed with warmupWindow). */
const instants: { at: string; ny?: Expected; utc?: Expected }[] = [
  { at: '2026-11-20T12:00:00Z', ny: { day: 0, dailyCap: 200, dayEndsAt: '2026-11-21T05:00:00.000Z' }, utc: { day: 0, dailyCap: 10, hourlyCap: 3, dayEndsAt: '2026-11-21T00:00:00.000Z' } },
  { at: '2026-12-01T04:59:59Z', ny: { day: 0, dailyCap: 200, dayEndsAt: '2026-12-01T05:00:00.000Z' }, utc: { day: 0, dailyCap: 10, hourlyCap: 3, dayEndsAt: '2026-12-02T00:00:00.000Z' } },
  { at: '2026-12-01T05:00:00Z', ny: { day: 1, dailyCap: 200, dayEndsAt: '2026-12-02T05:00:00.000Z' }, utc: { day: 0, dailyCap: 10, hourlyCap: 3, dayEndsAt: '2026-12-02T00:00:00.000Z' } },
  { at: '2026-12-02T15:30:00Z', ny: { day: 2, dailyCap: 500, hourlyCap: 50, dayEndsAt: '2026-12-03T05:00:00.000Z' }, utc: { day: 0, dailyCap: 10, hourlyCap: 3, dayEndsAt: '2026-12-03T00:00:00.000Z' } },
  { at: '2026-12-04T10:00:00Z', ny: { day: 4, dailyCap: 2000, hourlyCap: 200, dayEndsAt: '2026-12-05T05:00:00.000Z' }, utc: { day: 2, dailyCap: 10, hourlyCap: 3, dayEndsAt: '2026-12-05T00:00:00.000Z' } },
  { at: '2026-12-05T04:59:59Z', ny: { day: 4, dailyCap: 2000, hourlyCap: 200, dayEndsAt: '2026-12-05T05:00:00.000Z' }, utc: { day: 3, dailyCap: 10, hourlyCap: 3, dayEndsAt: '2026-12-06T00:00:00.000Z' } },
  // New York's plan is over (day 5 > its last step's day 4): only the UTC plan is warming.
  { at: '2026-12-05T05:00:00Z', utc: { day: 3, dailyCap: 10, hourlyCap: 3, dayEndsAt: '2026-12-06T00:00:00.000Z' } },
  { at: '2027-01-01T12:00:00Z', utc: { day: 30, dailyCap: 90, dayEndsAt: '2027-01-02T00:00:00.000Z' } },
  // Both plans over.
  { at: '2027-01-02T00:00:00Z' },
];

/** What a pod answers: today's counts, nothing, yesterday's counts, a list without the VirtualMTA, or numbers that are no counts. */
const KINDS = ['today', 'silent', 'yesterday', 'missing', 'garbage'] as const;
type Kind = (typeof KINDS)[number];

/** Deterministic use per pod, VirtualMTA and instant. */
function useOf(pod: number, vmta: string, at: string): { daily: number; hourly: number } {
  const seed = [...`${pod}/${vmta}/${at}`].reduce((hash, char) => (hash * 31 + char.charCodeAt(0)) >>> 0, 7);
  const hourly = seed % 17;
  return { daily: hourly + (seed % 113), hourly };
}

function answer(kind: Kind, pod: number, podCount: number, at: string, expected: { name: string; window: Expected }[]): WarmupStatus[] | undefined {
  if (kind === 'silent') return undefined;
  if (kind === 'missing') return [];
  return expected.map(({ name, window }) => {
    const use = useOf(pod, name, at);
    const dayEndsAt = kind === 'yesterday' ? new Date(Date.parse(window.dayEndsAt) - 24 * HOUR).toISOString() : window.dayEndsAt;
    // A pod reports its share of the caps: never what the status shows.
    const share = (cap: number) => Math.floor(cap / Math.max(1, podCount));
    return {
      virtualMta: name,
      day: window.day,
      dailyCap: share(window.dailyCap),
      ...(window.hourlyCap !== undefined ? { hourlyCap: share(window.hourlyCap) } : {}),
      dailyUsed: kind === 'garbage' ? -1 : use.daily,
      hourlyUsed: kind === 'garbage' ? ('3' as unknown as number) : use.hourly,
      dayEndsAt,
    };
  });
}

function combinations(podCount: number): Kind[][] {
  if (podCount === 0) return [[]];
  return combinations(podCount - 1).flatMap((rest) => KINDS.map((kind) => [...rest, kind]));
}

test('over 0..3 pods answering or not, and instants before, in and after the plans: plan caps, sums over today\'s answers, pods counted', async () => {
  let cases = 0;
  for (const { at, ny, utc } of instants) {
    const now = Date.parse(at);
    const expected = [...(ny ? [{ name: 'new-ny', window: ny }] : []), ...(utc ? [{ name: 'new-utc', window: utc }] : [])];
    for (let podCount = 0; podCount <= 3; podCount += 1) {
      for (const kinds of combinations(podCount)) {
        const pods = kinds.map((_, index) => ({ apiVersion: 'v1', kind: 'Pod', metadata: { name: `outbound-${index}`, namespace: 'mail' } }) as KubeObject);
        let reads = 0;
        const reader: WarmupReader = async (pod) => {
          reads += 1;
          const index = Number(pod.metadata.name.split('-')[1]);
          return answer(kinds[index]!, index, podCount, at, expected);
        };
        const status = await warmupStatus(pool, pods, reader, now);
        const label = `${at} with pods answering [${kinds.join(', ')}]`;
        const todays = kinds.flatMap((kind, index) => (kind === 'today' ? [index] : []));
        assert.deepEqual(status, expected.map(({ name, window }) => ({
          virtualMta: name,
          day: window.day,
          dailyCap: window.dailyCap,
          ...(window.hourlyCap !== undefined ? { hourlyCap: window.hourlyCap } : {}),
          used: todays.reduce((sum, pod) => sum + useOf(pod, name, at).daily, 0),
          hourlyUsed: todays.reduce((sum, pod) => sum + useOf(pod, name, at).hourly, 0),
          podsReporting: todays.length,
          podsExpected: podCount,
          dayEndsAt: window.dayEndsAt,
        })), label);
        assert.equal(reads, expected.length > 0 ? podCount : 0, `${label}: each pod read once while something warms, none otherwise`);
        cases += 1;
      }
    }
  }
  assert.equal(cases, instants.length * (1 + 5 + 25 + 125));
});

test('a pool without warm-up plans has no status.warmup entries and reads no pod', async () => {
  const pods = [{ apiVersion: 'v1', kind: 'Pod', metadata: { name: 'outbound-0', namespace: 'mail' } } as KubeObject];
  const status = await warmupStatus(poolOf([{ name: 'warm' }]), pods, async () => assert.fail('no pod is read'), Date.parse('2026-12-01T12:00:00Z'));
  assert.deepEqual(status, []);
});

test('a pod answering for a VirtualMTA the pool does not warm, or twice for one, adds nothing beyond its first entry', async () => {
  const now = Date.parse('2026-12-02T15:30:00Z');
  const dayEndsAt = '2026-12-03T05:00:00.000Z';
  const entry = (virtualMta: string, dailyUsed: number): WarmupStatus => ({ virtualMta, day: 2, dailyCap: 250, hourlyCap: 25, dailyUsed, hourlyUsed: 1, dayEndsAt });
  const pods = [0, 1].map((index) => ({ apiVersion: 'v1', kind: 'Pod', metadata: { name: `outbound-${index}`, namespace: 'mail' } }) as KubeObject);
  const status = await warmupStatus(poolOf([{ name: 'new-ny', warmup: plan }]), pods, async (pod) => (pod.metadata.name === 'outbound-0' ? [entry('other', 99), entry('new-ny', 4), entry('new-ny', 50)] : [entry('new-ny', 6)]), now);
  assert.deepEqual(status, [{ virtualMta: 'new-ny', day: 2, dailyCap: 500, hourlyCap: 50, used: 10, hourlyUsed: 2, podsReporting: 2, podsExpected: 2, dayEndsAt }]);
});

test('a plan with provider groups has an entry per group still warming; a pod\'s group counts go to that entry only, never to the plan\'s', async () => {
  const grouped = WarmupPlan.parse({
    start: '2026-12-01',
    schedule: [{ day: 1, daily: 1000 }, { day: 10, daily: 5000 }],
    providerGroups: [{ name: 'google', schedule: [{ day: 1, daily: 40, hourly: 10 }, { day: 3, daily: 100 }] }, { name: 'microsoft', schedule: [{ day: 1, daily: 20 }] }],
  });
  const groupedPool = poolOf([{ name: 'new-ip', warmup: grouped }]);
  const pods = [0, 1].map((index) => ({ apiVersion: 'v1', kind: 'Pod', metadata: { name: `outbound-${index}`, namespace: 'mail' } }) as KubeObject);
  const report = (at: string, dayEndsAt: string, pod: number): WarmupStatus[] => [
    { virtualMta: 'new-ip', day: 0, dailyCap: 500, dailyUsed: 100 + pod, hourlyUsed: 1, dayEndsAt },
    { virtualMta: 'new-ip', providerGroup: 'google', day: 0, dailyCap: 20, dailyUsed: 10 + pod, hourlyUsed: 2, dayEndsAt },
    { virtualMta: 'new-ip', providerGroup: 'microsoft', day: 0, dailyCap: 10, dailyUsed: 5 + pod, hourlyUsed: 3, dayEndsAt },
    // A group the plan has not: ignored.
    { virtualMta: 'new-ip', providerGroup: 'yahoo', day: 0, dailyCap: 10, dailyUsed: 99, hourlyUsed: 99, dayEndsAt: at },
  ];
  // Day 1: plan, google (with its hourly cap) and microsoft warming.
  const day1 = await warmupStatus(groupedPool, pods, async (pod) => report('x', '2026-12-02T00:00:00.000Z', Number(pod.metadata.name.split('-')[1])), Date.parse('2026-12-01T12:00:00Z'));
  const common = { podsReporting: 2, podsExpected: 2, dayEndsAt: '2026-12-02T00:00:00.000Z' };
  assert.deepEqual(day1, [
    { virtualMta: 'new-ip', day: 1, dailyCap: 1000, used: 201, hourlyUsed: 2, ...common },
    { virtualMta: 'new-ip', providerGroup: 'google', day: 1, dailyCap: 40, hourlyCap: 10, used: 21, hourlyUsed: 4, ...common },
    { virtualMta: 'new-ip', providerGroup: 'microsoft', day: 1, dailyCap: 20, used: 11, hourlyUsed: 6, ...common },
  ]);
  // Day 3: microsoft's schedule is over (its last step was day 1), google's is at its day-3 step.
  const day3 = await warmupStatus(groupedPool, pods, async (pod) => report('x', '2026-12-04T00:00:00.000Z', Number(pod.metadata.name.split('-')[1])), Date.parse('2026-12-03T12:00:00Z'));
  assert.deepEqual(day3.map(({ providerGroup, day, dailyCap, used }) => ({ providerGroup, day, dailyCap, used })), [
    { providerGroup: undefined, day: 3, dailyCap: 1000, used: 201 },
    { providerGroup: 'google', day: 3, dailyCap: 100, used: 21 },
  ]);
});
