// Warm-up schedule arithmetic, pure: for a plan and an instant, which day of the plan it is in the
// plan's time zone, the caps of that day, and the day and hour windows the counts belong to
// (keys and the instants they end). Days are local calendar days, so a DST day lasts 23 or 25
// hours; an hour window is a local clock hour, keyed by the UTC instant it starts, so the hour a
// DST change repeats is two windows. A plan's provider groups have schedules of their own on the
// plan's calendar (warmupCalendars).
import type { WarmupPlanConfig } from '../config/warmup-plan.ts';

export interface WarmupWindow {
  /** Day of the plan (1 = the start date; 0 before it, under day 1's caps). */
  day: number;
  dailyCap: number;
  /** Local date of the day window, YYYY-MM-DD. */
  dayKey: string;
  dayEndsAt: number;
  hourlyCap?: number;
  /** ISO instant the hour window started. */
  hourKey: string;
  hourEndsAt: number;
}

const DAY_MS = 86_400_000;
const HOUR_MS = 3_600_000;
const formatters = new Map<string, Intl.DateTimeFormat>();

function formatterFor(timeZone: string): Intl.DateTimeFormat {
  let formatter = formatters.get(timeZone);
  if (!formatter) {
    formatter = new Intl.DateTimeFormat('en-US', { timeZone, hourCycle: 'h23', year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit', second: '2-digit' });
    formatters.set(timeZone, formatter);
  }
  return formatter;
}

interface LocalTime {
  /** Days since 1970-01-01 of the local date. */
  dayNumber: number;
  date: string;
  minute: number;
  second: number;
}

export function localTime(instant: number, timeZone: string): LocalTime {
  const parts: Record<string, number> = {};
  for (const part of formatterFor(timeZone).formatToParts(instant)) if (part.type !== 'literal') parts[part.type] = Number(part.value);
  const { year = 0, month = 1, day = 1, minute = 0, second = 0 } = parts;
  const dayNumber = Date.UTC(year, month - 1, day) / DAY_MS;
  return { dayNumber, date: new Date(dayNumber * DAY_MS).toISOString().slice(0, 10), minute, second };
}

/** The first instant after `instant` whose local date is later than `instant`'s (local midnight, or the first instant of a day that skips it). */
export function nextLocalDayStart(instant: number, timeZone: string): number {
  const today = localTime(instant, timeZone).dayNumber;
  // A local day never lasts more than 26 hours, so the answer lies within (instant, instant + 27h].
  let low = instant;
  let high = instant + 27 * HOUR_MS;
  while (high - low > 1) {
    const middle = Math.floor((low + high) / 2);
    if (localTime(middle, timeZone).dayNumber > today) high = middle;
    else low = middle;
  }
  return high;
}

/** A schedule and the calendar it is counted in: the plan's own, or a provider group's under the plan's start and time zone. */
export type WarmupCalendar = Pick<WarmupPlanConfig, 'start' | 'timeZone' | 'schedule'>;

/** The plan's calendar for all destinations, then each provider group's. */
export function warmupCalendars(plan: WarmupPlanConfig): { providerGroup?: string; calendar: WarmupCalendar }[] {
  const groups = (plan.providerGroups ?? []).map((group) => ({ providerGroup: group.name, calendar: { start: plan.start, timeZone: plan.timeZone, schedule: group.schedule } }));
  return [{ calendar: plan }, ...groups];
}

/** The window `now` falls in, or undefined when the schedule is over (the address is warm for it). */
export function warmupWindow(plan: WarmupCalendar, now: number): WarmupWindow | undefined {
  const local = localTime(now, plan.timeZone);
  const startDay = Date.UTC(Number(plan.start.slice(0, 4)), Number(plan.start.slice(5, 7)) - 1, Number(plan.start.slice(8, 10))) / DAY_MS;
  const day = Math.max(0, local.dayNumber - startDay + 1);
  const last = plan.schedule[plan.schedule.length - 1];
  if (!last || day > last.day) return undefined;
  const step = plan.schedule.findLast((candidate) => candidate.day <= Math.max(day, 1)) ?? plan.schedule[0]!;
  const dayEndsAt = nextLocalDayStart(now, plan.timeZone);
  const hourStart = now - (now % 1000) - (local.minute * 60 + local.second) * 1000;
  return {
    day,
    dailyCap: step.daily,
    dayKey: local.date,
    dayEndsAt,
    ...(step.hourly !== undefined ? { hourlyCap: step.hourly } : {}),
    hourKey: new Date(hourStart).toISOString(),
    hourEndsAt: Math.min(hourStart + HOUR_MS, dayEndsAt),
  };
}
