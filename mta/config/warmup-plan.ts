// The warm-up plan of a VirtualMTA whose source address is new (runtime config contract, also
// used as is by the VirtualMtaPool resource): a start date, a schedule of daily and optionally
// hourly caps (for all destinations and, optionally, per provider group), the time zone the days
// are counted in, and where mail goes once a cap is reached.
// warmupProblems() checks what one plan cannot check alone: overflow names exist, are not
// warming themselves (so overflow can never loop) and are not the VirtualMTA itself, and the
// provider groups a plan names exist.
import { z } from 'zod';

const DATE_PATTERN = /^(\d{4})-(\d{2})-(\d{2})$/;

/** Whether "YYYY-MM-DD" is a real calendar date (2026-02-30 is not). */
function isCalendarDate(text: string): boolean {
  const match = DATE_PATTERN.exec(text);
  if (!match) return false;
  const [, year, month, day] = match.map(Number) as [number, number, number, number];
  const date = new Date(Date.UTC(year, month - 1, day));
  return date.getUTCFullYear() === year && date.getUTCMonth() === month - 1 && date.getUTCDate() === day;
}

/** Whether Intl knows the IANA time zone name. */
export function isTimeZone(name: string): boolean {
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: name });
    return true;
  } catch {
    return false;
  }
}

export const WarmupStep = z.strictObject({
  day: z.number().int().min(1).max(3650).describe('First day of the plan (day 1 = the start date) this step applies to; it holds until the next step\'s day.'),
  daily: z.number().int().min(0).max(100_000_000).describe('Messages per day (one message to one destination domain is one unit, as PowerMTA counts) for the whole pool.'),
  hourly: z.number().int().min(0).max(100_000_000).optional().describe('Messages per hour for the whole pool; omitted = only the daily cap.'),
});

/** Days must ascend and an hourly cap stay within its day's (issues at `path`). */
function checkSchedule(schedule: readonly z.output<typeof WarmupStep>[], ctx: z.RefinementCtx, path: (string | number)[]): void {
  schedule.forEach((step, index) => {
    const previous = schedule[index - 1];
    if (previous && step.day <= previous.day) ctx.addIssue({ code: 'custom', path: [...path, index, 'day'], input: step.day, message: `days must ascend: ${step.day} after day ${previous.day}` });
    if (step.hourly !== undefined && step.hourly > step.daily) ctx.addIssue({ code: 'custom', path: [...path, index, 'hourly'], input: step.hourly, message: `hourly cap ${step.hourly} is above the daily cap ${step.daily}` });
  });
}

const steps = z.array(WarmupStep).min(1).max(1000);

export const WarmupGroupPlan = z.strictObject({
  name: z.string().min(1).max(63).describe('A provider group of the pool (providerGroups[].name): the caps below hold for all its domains together.'),
  schedule: steps.describe('Steps by ascending day, from the plan\'s start date; after the last step\'s day the group has no cap of its own (the plan\'s schedule still holds).'),
});

export const WarmupPlan = z
  .strictObject({
    start: z.string().max(10).refine(isCalendarDate, 'a calendar date YYYY-MM-DD').describe('Day 1 of the schedule, a date in timeZone (YYYY-MM-DD). Before it the VirtualMTA sends under day 1\'s caps.'),
    timeZone: z.string().max(64).refine(isTimeZone, 'an IANA time zone name such as "UTC" or "America/New_York"').default('UTC').describe('Time zone whose midnights and hours delimit the days and hours of the caps.'),
    schedule: steps.describe('Steps by ascending day for all destinations together; after the last step\'s day the address is warm for them and has no cap.'),
    providerGroups: z.array(WarmupGroupPlan).max(100).optional().describe('Caps of their own for the domains of provider groups (a receiver that throttles a cold address per provider): a message to such a domain counts against its group\'s schedule and the plan\'s, and must be within both.'),
    overflowTo: z.array(z.string().min(1).max(63)).max(100).optional().describe('VirtualMTAs (warm, of the same pool) that take the mail once a cap is reached, in turn; omitted = the pool\'s overflowVirtualMtas. With none, mail waits for the next hour or day.'),
  })
  .superRefine((plan, ctx) => {
    checkSchedule(plan.schedule, ctx, ['schedule']);
    const seen = new Set<string>();
    plan.providerGroups?.forEach((group, index) => {
      checkSchedule(group.schedule, ctx, ['providerGroups', index, 'schedule']);
      if (seen.has(group.name)) ctx.addIssue({ code: 'custom', path: ['providerGroups', index, 'name'], input: group.name, message: `provider group "${group.name}" has two schedules` });
      seen.add(group.name);
    });
  });

export type WarmupPlanConfig = z.output<typeof WarmupPlan>;

export interface WarmupProblem {
  path: (string | number)[];
  input: unknown;
  message: string;
}

/** Overflow names that do not exist, are the VirtualMTA itself or are warming, and group schedules naming no provider group of the pool (paths relative to the pool). */
export function warmupProblems(pool: {
  overflowVirtualMtas?: readonly string[] | undefined;
  providerGroups?: readonly { name: string }[] | undefined;
  virtualMtas: readonly { name: string; warmup?: WarmupPlanConfig | undefined }[];
}): WarmupProblem[] {
  const byName = new Map(pool.virtualMtas.map((vmta) => [vmta.name, vmta]));
  const groups = new Set((pool.providerGroups ?? []).map((group) => group.name));
  const problems: WarmupProblem[] = [];
  const check = (target: string, path: (string | number)[], self?: string): void => {
    const vmta = byName.get(target);
    if (!vmta) problems.push({ path, input: target, message: `no VirtualMTA named "${target}" in the pool` });
    else if (target === self) problems.push({ path, input: target, message: `VirtualMTA "${target}" cannot overflow to itself` });
    else if (vmta.warmup) problems.push({ path, input: target, message: `overflow VirtualMTA "${target}" is warming itself; overflow goes to warm VirtualMTAs only (no chains or cycles)` });
  };
  (pool.overflowVirtualMtas ?? []).forEach((target, index) => check(target, ['overflowVirtualMtas', index]));
  pool.virtualMtas.forEach((vmta, vmtaIndex) => {
    vmta.warmup?.overflowTo?.forEach((target, index) => check(target, ['virtualMtas', vmtaIndex, 'warmup', 'overflowTo', index], vmta.name));
    vmta.warmup?.providerGroups?.forEach((group, index) => {
      if (!groups.has(group.name)) problems.push({ path: ['virtualMtas', vmtaIndex, 'warmup', 'providerGroups', index, 'name'], input: group.name, message: `no provider group named "${group.name}" in the pool's providerGroups` });
    });
  });
  return problems;
}
