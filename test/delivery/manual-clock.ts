// A Clock for tests that moves only when told to: `advance(ms)` runs every timer that falls due.
import type { Clock, TimerHandle } from '../../mta/delivery/clock.ts';

export class ManualClock implements Clock {
  private current: number;
  private timers: { at: number; callback: () => void; cancelled: boolean }[] = [];

  constructor(start = Date.UTC(2026, 0, 1)) {
    this.current = start;
  }

  now(): number {
    return this.current;
  }

  setTimer(delayMs: number, callback: () => void): TimerHandle {
    const timer = { at: this.current + Math.max(delayMs, 0), callback, cancelled: false };
    this.timers.push(timer);
    return { cancel: () => (timer.cancelled = true) };
  }

  advance(ms: number): void {
    this.current += ms;
    const due = this.timers.filter((timer) => !timer.cancelled && timer.at <= this.current);
    this.timers = this.timers.filter((timer) => !timer.cancelled && timer.at > this.current);
    for (const timer of due) timer.callback();
  }
}
