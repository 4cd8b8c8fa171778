// How many CPUs this process may use: the scheduler affinity (`os.availableParallelism()`)
// bounded by the cgroup v2 CPU quota (`cpu.max`: "<quota> <period>" or "max <period>"), which is
// how a container's `resources.limits.cpu` reaches the pod. A quota of 1.5 CPUs allows 1 full
// core's worth of processes (floor, at least 1): a second process would only be throttled. This is
// the default for the relay's process count (docs/delivery-engine.md, "Several processes").
import { readFile } from 'node:fs/promises';
import { availableParallelism } from 'node:os';

export const CGROUP_CPU_MAX = '/sys/fs/cgroup/cpu.max';

export interface CpuAllowance {
  cpus: number;
  /** What bounded it: "affinity" (no quota, or one above the affinity) or "cgroup quota". */
  source: 'affinity' | 'cgroup quota';
  /** The quota in CPUs when one is set (may be fractional). */
  quotaCpus?: number;
}

/** The CPU quota `cpu.max` sets, in CPUs; undefined for "max" (none). Throws naming the file and its content when it is neither. */
export function parseCpuMax(text: string, file = CGROUP_CPU_MAX): number | undefined {
  const match = /^(max|\d+)\s+(\d+)\s*$/.exec(text.trim());
  const period = Number(match?.[2]);
  if (!match || !(period > 0)) throw new Error(`${file}: expected "<quota> <period>" or "max <period>" (got ${JSON.stringify(text.trim())})`);
  if (match[1] === 'max') return undefined;
  const quota = Number(match[1]);
  if (!(quota > 0)) throw new Error(`${file}: quota must be positive (got ${JSON.stringify(text.trim())})`);
  return quota / period;
}

/** The CPUs allowed; a missing `cpu.max` (cgroup v1, no cgroup namespace) means no quota. */
export async function cpuAllowance(file = CGROUP_CPU_MAX, affinity = availableParallelism()): Promise<CpuAllowance> {
  const text = await readFile(file, 'utf8').catch((error: NodeJS.ErrnoException) => {
    if (error.code === 'ENOENT') return undefined;
    throw error;
  });
  const quotaCpus = text === undefined ? undefined : parseCpuMax(text, file);
  if (quotaCpus === undefined) return { cpus: affinity, source: 'affinity' };
  const byQuota = Math.max(1, Math.floor(quotaCpus));
  return byQuota < affinity ? { cpus: byQuota, source: 'cgroup quota', quotaCpus } : { cpus: affinity, source: 'affinity', quotaCpus };
}
