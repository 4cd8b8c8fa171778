// When the controller looks at a converged or converging pool again, without any change to watch:
// a drain in progress (its poll), a pending fleet raise (its time), a rollout (the poll interval),
// DKIM keys not all Published (the DKIM recheck) and a warming VirtualMTA, whose status.warmup
// sums the pods' use and so changes as mail leaves (the warm-up refresh). The soonest one wins;
// undefined leaves the pool to its watches and the informers' resync.
import type { ReconcileOutcome } from './reconciler.ts';

export interface PoolRecheck {
  /** A drain's next poll. */
  drainAfterMs?: number;
  /** A pending fleet re-share's raise. */
  fleetAfterMs?: number;
  /** Every object applied and the workload up to date with the current config. */
  converged: boolean;
  dkimPending: boolean;
  warming: boolean;
}

export interface RecheckIntervals {
  pollIntervalMs: number;
  dkimRecheckIntervalMs: number;
  warmupRefreshIntervalMs: number;
}

export function poolRequeue(recheck: PoolRecheck, intervals: RecheckIntervals): ReconcileOutcome {
  const candidates = [
    recheck.drainAfterMs === undefined ? undefined : Math.min(recheck.drainAfterMs, intervals.pollIntervalMs),
    recheck.fleetAfterMs === undefined ? undefined : recheck.converged ? recheck.fleetAfterMs : Math.min(recheck.fleetAfterMs, intervals.pollIntervalMs),
    recheck.converged ? undefined : intervals.pollIntervalMs,
    recheck.dkimPending ? intervals.dkimRecheckIntervalMs : undefined,
    recheck.warming ? intervals.warmupRefreshIntervalMs : undefined,
  ].filter((ms): ms is number => ms !== undefined);
  return candidates.length > 0 ? { requeueAfterMs: Math.min(...candidates) } : undefined;
}
