// What each warming VirtualMTA has sent in its current day and hour window, against its caps
// (warmup-schedule.ts) scaled to this pod's share of the pool: the plan's caps for all
// destinations, and a provider group's caps for the domains of that group (counted under
// "<vmta>/<group>"; a message to such a domain takes a unit of both). The counts are kept on the
// spool volume (<spool>/state/warmup-counts.json, through writeStateFileSync: temporary file,
// fsync, rename) so a restart does not hand a cold address a fresh day. Units taken in one event-loop
// turn are written together right after it, before any of their SMTP transactions can finish.
// An unreadable file is set aside (".unreadable") with an error line: the day starts again at 0.
import { readFileSync, renameSync } from 'node:fs';
import path from 'node:path';
import type { Logger } from 'pino';
import { z } from 'zod';
import type { VirtualMtaConfig } from '../config/schema.ts';
import { writeStateFileSync } from '../spool/state-file.ts';
import { warmupCalendars, warmupWindow, type WarmupWindow } from './warmup-schedule.ts';

export const WARMUP_COUNTS_FILE = 'warmup-counts.json';

const Counts = z.strictObject({ dayKey: z.string(), dayUsed: z.number().int().min(0), hourKey: z.string(), hourUsed: z.number().int().min(0) });
const CountsFile = z.strictObject({ version: z.literal(1), virtualMtas: z.record(z.string(), Counts) });
type Counts = z.output<typeof Counts>;

export type WarmupVerdict = { allowed: true } | { allowed: false; reason: string; until: number };

export interface WarmupStatus {
  virtualMta: string;
  /** Set for the caps of one provider group; absent for the plan's caps over all destinations. */
  providerGroup?: string;
  day: number;
  /** This pod's caps (the pool's cap x this pod's share). */
  dailyCap: number;
  hourlyCap?: number;
  dailyUsed: number;
  hourlyUsed: number;
  dayEndsAt: string;
}

export interface WarmupLedgerOptions {
  /** The counts file; omitted = counts kept in memory only. */
  stateDir?: string;
  logger: Logger;
  /** This pod's part of a pool-wide cap at a time (fleet-share.ts countShare); the whole cap when one pod serves the pool. */
  capShare?: (cap: number, now: number) => number;
}

/** Counts of a VirtualMTA's plan, or of one of its provider groups (a VirtualMTA name has no "/"). */
function countsKey(virtualMta: string, providerGroup: string | undefined): string {
  return providerGroup === undefined ? virtualMta : `${virtualMta}/${providerGroup}`;
}

export class WarmupLedger {
  readonly #file: string | undefined;
  readonly #logger: Logger;
  readonly #capShare: (cap: number, now: number) => number;
  readonly #counts = new Map<string, Counts>();
  #writeQueued = false;

  constructor(options: WarmupLedgerOptions) {
    this.#file = options.stateDir ? path.join(options.stateDir, WARMUP_COUNTS_FILE) : undefined;
    this.#logger = options.logger;
    this.#capShare = options.capShare ?? ((cap) => cap);
    this.#load();
  }

  /**
   * May the VirtualMTA send one more message now, to a domain of `providerGroup` (undefined: a
   * domain in no group, or not resolved yet)? It must be within the plan's caps and its group's.
   * With `take`, an allowed unit is counted against each.
   */
  admit(vmta: VirtualMtaConfig, now: number, take: boolean, providerGroup?: string): WarmupVerdict {
    const live: Counts[] = [];
    for (const { providerGroup: group, window, counts, caps } of this.#live(vmta, now, (candidate) => candidate === undefined || candidate === providerGroup)) {
      const day = `warm-up day ${window.day}${group === undefined ? '' : ` (provider group ${group})`}`;
      if (counts.dayUsed >= caps.daily) return { allowed: false, reason: `${day}: daily cap ${caps.daily} reached`, until: window.dayEndsAt };
      if (caps.hourly !== undefined && counts.hourUsed >= caps.hourly) return { allowed: false, reason: `${day}: hourly cap ${caps.hourly} reached`, until: window.hourEndsAt };
      live.push(counts);
    }
    if (take && live.length > 0) {
      for (const counts of live) {
        counts.dayUsed += 1;
        counts.hourUsed += 1;
      }
      this.#queueWrite();
    }
    return { allowed: true };
  }

  /** Day, caps and use of every VirtualMTA still warming at `now`: one entry for its plan's caps and one per provider group still warming. */
  status(virtualMtas: Iterable<VirtualMtaConfig>, now: number): WarmupStatus[] {
    const statuses: WarmupStatus[] = [];
    for (const vmta of virtualMtas) {
      for (const { providerGroup, window, counts, caps } of this.#live(vmta, now, () => true)) {
        statuses.push({
          virtualMta: vmta.name,
          ...(providerGroup !== undefined ? { providerGroup } : {}),
          day: window.day,
          dailyCap: caps.daily,
          ...(caps.hourly !== undefined ? { hourlyCap: caps.hourly } : {}),
          dailyUsed: counts.dayUsed,
          hourlyUsed: counts.hourUsed,
          dayEndsAt: new Date(window.dayEndsAt).toISOString(),
        });
      }
    }
    return statuses;
  }

  /** The VirtualMTA's calendars (its plan's, then those of the provider groups `wanted` takes) still warming at `now`: window, counts and this pod's caps. */
  *#live(vmta: VirtualMtaConfig, now: number, wanted: (providerGroup: string | undefined) => boolean): Generator<{ providerGroup: string | undefined; window: WarmupWindow; counts: Counts; caps: { daily: number; hourly?: number } }> {
    if (!vmta.warmup) return;
    for (const { providerGroup, calendar } of warmupCalendars(vmta.warmup)) {
      if (!wanted(providerGroup)) continue;
      const window = warmupWindow(calendar, now);
      if (!window) continue;
      yield { providerGroup, window, counts: this.#current(countsKey(vmta.name, providerGroup), window), caps: this.#caps(window, now) };
    }
  }

  /** Write pending counts now (at stop). */
  flush(): void {
    if (!this.#file) return;
    this.#writeQueued = false;
    const body = { version: 1, virtualMtas: Object.fromEntries(this.#counts) };
    try {
      writeStateFileSync(this.#file, JSON.stringify(body));
    } catch (error) {
      this.#logger.error({ file: this.#file, err: error }, 'writing the warm-up counts failed');
    }
  }

  #caps(window: WarmupWindow, now: number): { daily: number; hourly?: number } {
    return { daily: this.#capShare(window.dailyCap, now), ...(window.hourlyCap !== undefined ? { hourly: this.#capShare(window.hourlyCap, now) } : {}) };
  }

  /** The counts under `key` (countsKey), started again when the day or hour window changed. */
  #current(key: string, window: WarmupWindow): Counts {
    let counts = this.#counts.get(key);
    if (!counts || counts.dayKey !== window.dayKey) {
      counts = { dayKey: window.dayKey, dayUsed: 0, hourKey: window.hourKey, hourUsed: 0 };
      this.#counts.set(key, counts);
    } else if (counts.hourKey !== window.hourKey) {
      counts.hourKey = window.hourKey;
      counts.hourUsed = 0;
    }
    return counts;
  }

  #queueWrite(): void {
    if (!this.#file || this.#writeQueued) return;
    this.#writeQueued = true;
    setImmediate(() => {
      if (this.#writeQueued) this.flush();
    });
  }

  #load(): void {
    if (!this.#file) return;
    let text: string;
    try {
      text = readFileSync(this.#file, 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
      this.#setAside(error as Error);
      return;
    }
    let parsed;
    try {
      parsed = CountsFile.safeParse(JSON.parse(text));
    } catch (error) {
      this.#setAside(error as Error);
      return;
    }
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      this.#setAside(new Error(`${issue?.path.join('.') || '(root)'}: ${issue?.message ?? 'invalid'}`));
      return;
    }
    for (const [name, counts] of Object.entries(parsed.data.virtualMtas)) this.#counts.set(name, counts);
  }

  #setAside(error: Error): void {
    const file = this.#file!;
    const aside = `${file}.unreadable`;
    try {
      renameSync(file, aside);
    } catch {
      // nothing to set aside
    }
    this.#logger.error({ file, setAside: aside, err: error }, `warm-up counts unreadable (${error.message}); set aside as ${path.basename(aside)}, counting from 0`);
  }
}
