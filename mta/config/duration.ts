// Durations and rates as PowerMTA writes them ("10m", "4d", "100/h"): parsing into
// milliseconds and per-interval counts, shared by the relay's config schema and the operator.

const DURATION_UNITS_MS = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const;

export const DURATION_PATTERN = /^(\d+)(ms|s|m|h|d)$/;
export const DURATION_HINT = 'a duration like 500ms, 30s, 10m, 4h or 4d';

/** Milliseconds of a duration string such as "10m"; throws on anything else. */
export function parseDuration(text: string): number {
  const match = DURATION_PATTERN.exec(text);
  if (!match) throw new Error(`"${text}" is not ${DURATION_HINT}`);
  return Number(match[1]) * DURATION_UNITS_MS[match[2] as keyof typeof DURATION_UNITS_MS];
}

export const RATE_PATTERN = /^(\d+)\/(s|m|h)$/;
export const RATE_HINT = 'a rate like 10/s, 600/m or 5000/h';

export interface Rate {
  count: number;
  perMs: number;
}

/** A rate such as "100/h" as a count per interval in milliseconds. */
export function parseRate(text: string): Rate {
  const match = RATE_PATTERN.exec(text);
  if (!match) throw new Error(`"${text}" is not ${RATE_HINT}`);
  return { count: Number(match[1]), perMs: DURATION_UNITS_MS[match[2] as 's' | 'm' | 'h'] };
}
