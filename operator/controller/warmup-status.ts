// The warm-up progress of a pool for its status (status.warmup): one entry per VirtualMTA of the
// spec whose plan is still running at `now`, and one per provider group of its plan whose own
// schedule is (with providerGroup set). Day and caps come from the plan (warmupWindow): the
// caps the whole pool may send, not the share of them each pod reports. Use is summed over the
// ready pods that answer, at the open `GET /warmup` of their admin port (mta/admin/warmup-api.ts),
// with an entry of that VirtualMTA for the same day; a pod that does not answer, or answers for
// another day (a clock or config behind), is left out of the sum and of podsReporting. Pluggable
// like the egress proxy reader, so tests against the fake API server can answer for pods.
// Status is written as a merge patch, so an entry list that becomes empty is removed with null.
import type { WarmupStatus as PodWarmupStatus } from '../../mta/delivery/warmup-ledger.ts';
import { warmupCalendars, warmupWindow } from '../../mta/delivery/warmup-schedule.ts';
import type { VirtualMtaPool } from '../api/virtual-mta-pool.ts';
import type { KubeObject } from '../kube/types.ts';
import { ADMIN_PORT } from '../render/layout.ts';
import { getPodAdminJson } from './pod-admin-json.ts';

/** The warm-up entries a pod reports, or undefined when it cannot be read. */
export type WarmupReader = (pod: KubeObject) => Promise<PodWarmupStatus[] | undefined>;

export interface PoolWarmupStatus {
  virtualMta: string;
  /** Set for the caps of one provider group's domains; absent for the plan's caps over all destinations. */
  providerGroup?: string;
  /** Day of the plan (0 before its start, under day 1's caps). */
  day: number;
  /** The pool's caps of the day and hour, from the plan. */
  dailyCap: number;
  hourlyCap?: number;
  /** Units the reporting pods sent in the current day, summed. */
  used: number;
  /** Units the reporting pods sent in their current hour, summed. */
  hourlyUsed: number;
  podsReporting: number;
  podsExpected: number;
  dayEndsAt: string;
}

export function httpWarmupReader(options: { port?: number; timeoutMs?: number } = {}): WarmupReader {
  const port = options.port ?? ADMIN_PORT;
  const timeoutMs = options.timeoutMs ?? 2000;
  return async (pod) => {
    const body = (await getPodAdminJson(pod, '/warmup', port, timeoutMs)) as { virtualMtas?: unknown } | undefined;
    return Array.isArray(body?.virtualMtas) ? (body.virtualMtas as PodWarmupStatus[]) : undefined;
  };
}

const count = (value: unknown): value is number => typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;

/** Per warming VirtualMTA in spec order (its plan's caps, then its groups'): the day and caps at `now`, and the pods' use summed. */
export async function warmupStatus(pool: VirtualMtaPool, pods: readonly KubeObject[], reader: WarmupReader, now: number = Date.now()): Promise<PoolWarmupStatus[]> {
  const warming = pool.spec.virtualMtas.flatMap((vmta) =>
    (vmta.warmup ? warmupCalendars(vmta.warmup) : []).flatMap(({ providerGroup, calendar }) => {
      const window = warmupWindow(calendar, now);
      return window ? [{ name: vmta.name, providerGroup, window }] : [];
    }),
  );
  if (warming.length === 0) return [];
  const reports = await Promise.all(pods.map(async (pod) => (await reader(pod)) ?? []));
  return warming.map(({ name, providerGroup, window }) => {
    const dayEndsAt = new Date(window.dayEndsAt).toISOString();
    const today = reports.flatMap((entries) => {
      const entry = entries.find((candidate) => candidate?.virtualMta === name && candidate.providerGroup === providerGroup && candidate.dayEndsAt === dayEndsAt);
      return entry && count(entry.dailyUsed) && count(entry.hourlyUsed) ? [entry] : [];
    });
    return {
      virtualMta: name,
      ...(providerGroup !== undefined ? { providerGroup } : {}),
      day: window.day,
      dailyCap: window.dailyCap,
      ...(window.hourlyCap !== undefined ? { hourlyCap: window.hourlyCap } : {}),
      used: today.reduce((sum, entry) => sum + entry.dailyUsed, 0),
      hourlyUsed: today.reduce((sum, entry) => sum + entry.hourlyUsed, 0),
      podsReporting: today.length,
      podsExpected: pods.length,
      dayEndsAt,
    };
  });
}

