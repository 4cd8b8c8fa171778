// metav1.Condition bookkeeping: a condition keeps its lastTransitionTime while its status stays
// the same, and two statuses compare equal regardless of timestamps, so the controller can write
// status only when something a reader cares about changed; a status list no longer wanted is
// cleared explicitly, since a merge patch keeps what it does not name.
import type { Condition } from '../api/fields.ts';

export type { Condition };

export type ConditionInput = Omit<Condition, 'lastTransitionTime' | 'observedGeneration'>;

/** The conditions to write: `wanted` in order, each keeping its previous transition time when its status did not change. */
export function mergeConditions(previous: Condition[] | undefined, wanted: ConditionInput[], generation: number | undefined, now: Date): Condition[] {
  return wanted.map((condition) => {
    const before = previous?.find((c) => c.type === condition.type);
    const lastTransitionTime = before && before.status === condition.status ? before.lastTransitionTime : now.toISOString().replace(/\.\d{3}Z$/, 'Z');
    const merged: Condition = { type: condition.type, status: condition.status, reason: condition.reason, message: condition.message, lastTransitionTime };
    if (generation !== undefined) merged.observedGeneration = generation;
    return merged;
  });
}

function canonical(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(canonical);
  if (typeof value === 'object' && value !== null) {
    return Object.fromEntries(
      Object.keys(value)
        .filter((k) => (value as Record<string, unknown>)[k] !== undefined)
        .sort()
        .map((k) => [k, canonical((value as Record<string, unknown>)[k])]),
    );
  }
  return value;
}

/** Deep equality of two status objects (key order and undefined members ignored). */
export function sameStatus(a: unknown, b: unknown): boolean {
  return JSON.stringify(canonical(a ?? {})) === JSON.stringify(canonical(b ?? {}));
}

export function findCondition(conditions: Condition[] | undefined, type: string): Condition | undefined {
  return conditions?.find((c) => c.type === type);
}

/** A status list for the merge patch: the entries, null to remove a list that is no longer wanted (a merge patch keeps what it omits), nothing when there was none. */
export function listPatch<K extends string, T>(field: K, entries: readonly T[] | undefined, previous: unknown): { [P in K]?: readonly T[] | null } {
  if (entries && entries.length > 0) return { [field]: entries } as { [P in K]?: readonly T[] };
  return (previous === undefined ? {} : { [field]: null }) as { [P in K]?: null };
}
