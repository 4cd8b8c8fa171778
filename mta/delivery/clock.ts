// Time as the delivery engine sees it: "now" and one-shot timers. Injected so retry schedules,
// bounce deadlines and backoff can be tested by moving a manual clock instead of waiting.
export interface TimerHandle {
  cancel(): void;
}

export interface Clock {
  now(): number;
  /** Run `callback` once `delayMs` has passed on this clock. */
  setTimer(delayMs: number, callback: () => void): TimerHandle;
}

export const systemClock: Clock = {
  now: () => Date.now(),
  setTimer(delayMs, callback) {
    // setTimeout overflows above 2^31-1 ms; waking early is harmless because the scheduler re-checks due times.
    const timer = setTimeout(callback, Math.min(Math.max(delayMs, 0), 2 ** 31 - 1));
    timer.unref();
    return { cancel: () => clearTimeout(timer) };
  },
};
