// Warm-up schedule arithmetic over classes of dates, time zones and day boundaries (DST included),
// and the plan's validation: steps ascend, overflow names exist and are warm, provider group
// schedules follow the same rules and name groups of the pool, errors name the field.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { RuntimeConfig, type RuntimeConfigInput } from '../../mta/config/schema.ts';
import { WarmupPlan } from '../../mta/config/warmup-plan.ts';
import { localTime, nextLocalDayStart, warmupWindow } from '../../mta/delivery/warmup-schedule.ts';

const HOUR = 3_600_000;
const plan = (timeZone: string) => WarmupPlan.parse({ start: '2026-03-01', timeZone, schedule: [{ day: 1, daily: 200 }, { day: 3, daily: 500, hourly: 50 }, { day: 40, daily: 50_000 }] });

test('the day of the plan counts local calendar days from the start date; steps hold until the next step; past the last step the address is warm', () => {
  for (const timeZone of ['UTC', 'America/New_York', 'Asia/Kolkata', 'Pacific/Kiritimati', 'Pacific/Pago_Pago']) {
    const startOfDay = (offsetDays: number): number => {
      // From 14h before the UTC midnight (every zone is within 14h of UTC), the first hour in the local day.
      let instant = Date.UTC(2026, 2, 1 + offsetDays) - 14 * HOUR;
      while (localTime(instant, timeZone).date !== new Date(Date.UTC(2026, 2, 1 + offsetDays)).toISOString().slice(0, 10)) instant += HOUR;
      return instant;
    };
    const cases: [number, number | undefined, number | undefined][] = [
      [-3, 0, 200],
      [0, 1, 200],
      [1, 2, 200],
      [2, 3, 500],
      [38, 39, 500],
      [39, 40, 50_000],
      [40, undefined, undefined],
      [400, undefined, undefined],
    ];
    for (const [offset, day, cap] of cases) {
      const window = warmupWindow(plan(timeZone), startOfDay(offset));
      assert.equal(window?.day, day, `${timeZone} +${offset}d`);
      assert.equal(window?.dailyCap, cap, `${timeZone} +${offset}d`);
    }
    assert.equal(warmupWindow(plan(timeZone), startOfDay(2))?.hourlyCap, 50);
    assert.equal(warmupWindow(plan(timeZone), startOfDay(1))?.hourlyCap, undefined);
  }
});

test('a day window ends at the next local midnight, whatever the zone offset (whole, half-hour, +14h, -11h)', () => {
  const expectations: [string, number][] = [
    ['UTC', Date.UTC(2026, 5, 11, 0)],
    ['Asia/Kolkata', Date.UTC(2026, 5, 10, 18, 30)],
    ['Pacific/Kiritimati', Date.UTC(2026, 5, 10, 10)],
    ['Pacific/Pago_Pago', Date.UTC(2026, 5, 11, 11)],
    ['America/St_Johns', Date.UTC(2026, 5, 11, 2, 30)],
  ];
  for (const [timeZone, midnight] of expectations) {
    for (const before of [1, 60_000, 5 * HOUR, 23 * HOUR]) {
      assert.equal(nextLocalDayStart(midnight - before, timeZone), midnight, `${timeZone}, ${before}ms before midnight`);
    }
    const window = warmupWindow(WarmupPlan.parse({ start: '2026-06-01', timeZone, schedule: [{ day: 30, daily: 1 }] }), midnight - 1);
    assert.equal(window?.dayEndsAt, midnight);
    assert.equal(warmupWindow(WarmupPlan.parse({ start: '2026-06-01', timeZone, schedule: [{ day: 30, daily: 1 }] }), midnight)?.day, 11);
  }
});

test('DST days last 23 and 25 hours, and the hour a fall-back repeats is two hour windows', () => {
  const berlin = WarmupPlan.parse({ start: '2026-03-01', timeZone: 'Europe/Berlin', schedule: [{ day: 300, daily: 10, hourly: 1 }] });
  const springDay = Date.UTC(2026, 2, 28, 23); // 2026-03-29 00:00 CET
  assert.equal(warmupWindow(berlin, springDay + HOUR)!.dayEndsAt - springDay, 23 * HOUR);
  const autumnDay = Date.UTC(2026, 9, 24, 22); // 2026-10-25 00:00 CEST
  assert.equal(warmupWindow(berlin, autumnDay + HOUR)!.dayEndsAt - autumnDay, 25 * HOUR);
  // 02:00-03:00 local happens twice on 2026-10-25: 00:00Z-01:00Z (CEST) and 01:00Z-02:00Z (CET).
  const first = warmupWindow(berlin, Date.UTC(2026, 9, 25, 0, 30))!;
  const second = warmupWindow(berlin, Date.UTC(2026, 9, 25, 1, 30))!;
  assert.notEqual(first.hourKey, second.hourKey);
  assert.equal(first.dayKey, second.dayKey);
  assert.equal(first.hourEndsAt, Date.UTC(2026, 9, 25, 1));
  // A half-hour zone's hours start at :30 UTC.
  const kolkata = warmupWindow(WarmupPlan.parse({ start: '2026-03-01', timeZone: 'Asia/Kolkata', schedule: [{ day: 300, daily: 10, hourly: 1 }] }), Date.UTC(2026, 5, 1, 7, 45))!;
  assert.equal(kolkata.hourKey, '2026-06-01T07:30:00.000Z');
  assert.equal(kolkata.hourEndsAt, Date.UTC(2026, 5, 1, 8, 30));
});

function configWith(pool: Partial<RuntimeConfigInput['pool']>): ReturnType<typeof RuntimeConfig.safeParse> {
  return RuntimeConfig.safeParse({
    apiVersion: 'vmta.dev/relay-config/v1',
    hostname: 'relay.test',
    pool: { name: 'pool-a', virtualMtas: [{ name: 'cold', hostname: 'cold.test' }, { name: 'warm', hostname: 'warm.test' }], ...pool },
    listeners: [],
    relayPolicies: [],
    spool: { path: '/tmp/spool' },
  });
}

const issueOf = (result: ReturnType<typeof RuntimeConfig.safeParse>): string => (result.success ? 'accepted' : result.error.issues.map((issue) => `${issue.path.join('.')}: ${issue.message}`).join('; '));

test('bad plans are refused with the field and value named', () => {
  const bad: [unknown, RegExp][] = [
    [{ start: '2026-02-30', schedule: [{ day: 1, daily: 1 }] }, /warmup\.start: a calendar date YYYY-MM-DD/],
    [{ start: '2026-12-01', timeZone: 'Mars/Olympus', schedule: [{ day: 1, daily: 1 }] }, /warmup\.timeZone: an IANA time zone/],
    [{ start: '2026-12-01', schedule: [] }, /warmup\.schedule/],
    [{ start: '2026-12-01', schedule: [{ day: 2, daily: 1 }, { day: 2, daily: 5 }] }, /warmup\.schedule\.1\.day: days must ascend: 2 after day 2/],
    [{ start: '2026-12-01', schedule: [{ day: 3, daily: 1 }, { day: 1, daily: 5 }] }, /warmup\.schedule\.1\.day: days must ascend/],
    [{ start: '2026-12-01', schedule: [{ day: 1, daily: 10, hourly: 11 }] }, /warmup\.schedule\.0\.hourly: hourly cap 11 is above the daily cap 10/],
    [{ start: '2026-12-01', schedule: [{ day: 1, daily: -1 }] }, /warmup\.schedule\.0\.daily/],
  ];
  for (const [warmup, expected] of bad) {
    assert.match(issueOf(configWith({ virtualMtas: [{ name: 'cold', hostname: 'cold.test', warmup: warmup as never }] })), expected);
  }
});

test('overflow names must exist, differ from the VirtualMTA and be warm: no chain or cycle is possible', () => {
  const warmup = { start: '2026-12-01', schedule: [{ day: 1, daily: 1 }] };
  assert.match(issueOf(configWith({ overflowVirtualMtas: ['nowhere'] })), /pool\.overflowVirtualMtas\.0: no VirtualMTA named "nowhere"/);
  assert.match(issueOf(configWith({ virtualMtas: [{ name: 'cold', hostname: 'cold.test', warmup: { ...warmup, overflowTo: ['cold'] } }] })), /pool\.virtualMtas\.0\.warmup\.overflowTo\.0: VirtualMTA "cold" cannot overflow to itself/);
  const cycle = configWith({ virtualMtas: [{ name: 'cold', hostname: 'cold.test', warmup: { ...warmup, overflowTo: ['warm'] } }, { name: 'warm', hostname: 'warm.test', warmup: { ...warmup, overflowTo: ['cold'] } }] });
  assert.match(issueOf(cycle), /pool\.virtualMtas\.0\.warmup\.overflowTo\.0: overflow VirtualMTA "warm" is warming itself/);
  assert.match(issueOf(cycle), /pool\.virtualMtas\.1\.warmup\.overflowTo\.0: overflow VirtualMTA "cold" is warming itself/);
  assert.match(issueOf(configWith({ overflowVirtualMtas: ['cold'], virtualMtas: [{ name: 'cold', hostname: 'cold.test', warmup }, { name: 'warm', hostname: 'warm.test' }] })), /pool\.overflowVirtualMtas\.0: overflow VirtualMTA "cold" is warming itself/);
  assert.equal(issueOf(configWith({ overflowVirtualMtas: ['warm'], virtualMtas: [{ name: 'cold', hostname: 'cold.test', warmup }, { name: 'warm', hostname: 'warm.test' }] })), 'accepted');
});

test('provider group schedules are checked as the plan\'s and must name a provider group of the pool, once each', () => {
  const providerGroups = [{ name: 'google', mxHosts: ['*.google.test'] }, { name: 'microsoft', mxHosts: ['*.outlook.test'] }];
  const withGroups = (groups: unknown) => configWith({ providerGroups, virtualMtas: [{ name: 'cold', hostname: 'cold.test', warmup: { start: '2026-12-01', schedule: [{ day: 1, daily: 100 }], providerGroups: groups as never } }, { name: 'warm', hostname: 'warm.test' }] });
  const bad: [unknown, RegExp][] = [
    [[{ name: 'google', schedule: [{ day: 2, daily: 1 }, { day: 1, daily: 5 }] }], /warmup\.providerGroups\.0\.schedule\.1\.day: days must ascend: 1 after day 2/],
    [[{ name: 'google', schedule: [{ day: 1, daily: 10, hourly: 20 }] }], /warmup\.providerGroups\.0\.schedule\.0\.hourly: hourly cap 20 is above the daily cap 10/],
    [[{ name: 'google', schedule: [] }], /warmup\.providerGroups\.0\.schedule/],
    [[{ name: 'google', schedule: [{ day: 1, daily: 1 }] }, { name: 'google', schedule: [{ day: 1, daily: 2 }] }], /warmup\.providerGroups\.1\.name: provider group "google" has two schedules/],
    [[{ name: 'yahoo', schedule: [{ day: 1, daily: 1 }] }], /pool\.virtualMtas\.0\.warmup\.providerGroups\.0\.name: no provider group named "yahoo" in the pool's providerGroups/],
    [[{ name: 'google', schedule: [{ day: 1, daily: 1 }], extra: true }], /warmup\.providerGroups\.0/],
  ];
  for (const [groups, expected] of bad) assert.match(issueOf(withGroups(groups)), expected, JSON.stringify(groups));
  assert.equal(issueOf(withGroups([{ name: 'google', schedule: [{ day: 1, daily: 20 }, { day: 5, daily: 200, hourly: 50 }] }, { name: 'microsoft', schedule: [{ day: 1, daily: 10 }] }])), 'accepted');
});
