// The operator against the fake API server writes status.warmup for the example pool once its
// VirtualMTA mta1 has a warm-up plan: the plan's day and pool caps (not the half each of the two
// pods reports as its share) and the pods' use summed, with podsReporting and podsExpected. The
// pods' GET /warmup is a stand-in reader (as the egress proxy reader is pluggable); a pod that
// stops answering is counted out, and a warm VirtualMTA (mta2) gets no entry. Unchanged use
// writes nothing; a plan removed from the spec takes status.warmup away (null in the merge patch).
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { WarmupPlan } from '../../mta/config/warmup-plan.ts';
import type { WarmupStatus } from '../../mta/delivery/warmup-ledger.ts';
import { warmupWindow } from '../../mta/delivery/warmup-schedule.ts';
import type { VmtaOperator } from '../../operator/controller/operator.ts';
import type { WarmupReader } from '../../operator/controller/warmup-status.ts';
import type { FakeKubeApi, JsonObject } from '../fixtures/fake-kube-api.ts';
import { eventually, startFakeApi } from '../kube/helpers.ts';
import { condition, loadExamples, NAMESPACE, startOperator } from './harness.ts';

const POOL = 'outbound';
const warmup = { start: new Date().toISOString().slice(0, 10), timeZone: 'UTC', schedule: [{ day: 1, daily: 400, hourly: 60 }, { day: 2, daily: 1000 }] };
const plan = WarmupPlan.parse(warmup);

/** The informers' resync is 10 minutes: only the warm-up refresh brings new use into status.warmup. */
const WARMUP_REFRESH_MS = 300;
let api: FakeKubeApi;
let operator: VmtaOperator;
/** What each pod sent today through mta1; a pod missing here does not answer. */
const podUse = new Map<string, { daily: number; hourly: number }>([[`${POOL}-0`, { daily: 7, hourly: 3 }], [`${POOL}-1`, { daily: 5, hourly: 2 }]]);

/** A relay pod's GET /warmup: its half of the pool's caps and its own use. */
const reader: WarmupReader = async (pod) => {
  const use = podUse.get(pod.metadata.name);
  const window = warmupWindow(plan, Date.now());
  if (!use || !window) return undefined;
  const entry: WarmupStatus = { virtualMta: 'mta1', day: window.day, dailyCap: window.dailyCap / 2, hourlyCap: window.hourlyCap! / 2, dailyUsed: use.daily, hourlyUsed: use.hourly, dayEndsAt: new Date(window.dayEndsAt).toISOString() };
  return [entry];
};

/** No write request across many warm-up refreshes (the pool looked at again every WARMUP_REFRESH_MS), after the previous writes settled. */
async function assertNoWrites(what: string): Promise<void> {
  await eventually('the listener statuses', () => condition(api.get('vmta.dev/v1alpha1', 'SmtpListener', NAMESPACE, 'alternate'), 'Ready')?.status === 'True');
  await new Promise((resolve) => setTimeout(resolve, 1000));
  const from = api.requests.length;
  await new Promise((resolve) => setTimeout(resolve, 3500));
  assert.deepEqual(api.writes(from), [], what);
}

const pool = () => api.get('vmta.dev/v1alpha1', 'VirtualMtaPool', NAMESPACE, POOL);
const warmupOf = () => (pool()?.status as { warmup?: JsonObject[] } | undefined)?.warmup;

before(async () => {
  const started = await startFakeApi({ bookmarkIntervalMs: 500 });
  api = started.api;
  await loadExamples(api);
  const example = pool()!;
  const spec = example.spec as { virtualMtas: JsonObject[] };
  api.put({ ...example, spec: { ...spec, virtualMtas: spec.virtualMtas.map((vmta) => (vmta.name === 'mta1' ? { ...vmta, warmup } : vmta)) } });
  operator = startOperator(api, started.kubeconfig, { healthPort: 0, healthHost: '127.0.0.1', resyncPeriodMs: 600_000, warmupRefreshIntervalMs: WARMUP_REFRESH_MS, warmupReader: reader });
  await operator.start();
});

after(async () => {
  await operator.stop();
  await api.close();
});

test('status.warmup shows the warming VirtualMTA\'s day and the pool\'s caps, with the use of both ready pods summed', async () => {
  await eventually('the pool Ready with status.warmup', () => condition(pool(), 'Ready')?.status === 'True' && warmupOf()?.length === 1);
  const window = warmupWindow(plan, Date.now())!;
  assert.deepEqual(warmupOf(), [{ virtualMta: 'mta1', day: 1, dailyCap: 400, hourlyCap: 60, used: 12, hourlyUsed: 5, podsReporting: 2, podsExpected: 2, dayEndsAt: new Date(window.dayEndsAt).toISOString() }]);
  assert.deepEqual((pool()!.status as { virtualMtas: JsonObject[] }).virtualMtas.map((vmta) => vmta.name), ['mta1', 'mta2'], 'mta2 is warm: listed in virtualMtas, not in warmup');
  await assertNoWrites('unchanged use writes no status');
});

test('a pod that stops answering is counted out of the sum and of podsReporting; more use shows at the next refresh, with no object changed', async () => {
  podUse.delete(`${POOL}-1`);
  podUse.set(`${POOL}-0`, { daily: 9, hourly: 4 });
  const entry = await eventually('status.warmup from one pod', () => (warmupOf()?.[0]?.podsReporting === 1 ? warmupOf()![0] : undefined));
  assert.deepEqual({ used: entry.used, hourlyUsed: entry.hourlyUsed, podsReporting: entry.podsReporting, podsExpected: entry.podsExpected, dailyCap: entry.dailyCap }, { used: 9, hourlyUsed: 4, podsReporting: 1, podsExpected: 2, dailyCap: 400 });
});

test('a plan removed from the spec removes status.warmup', async () => {
  const current = pool()!;
  const spec = current.spec as { virtualMtas: JsonObject[] };
  api.put({ ...current, spec: { ...spec, virtualMtas: spec.virtualMtas.map(({ warmup: _warmup, ...vmta }) => vmta) } });
  await eventually('status.warmup gone', () => condition(pool(), 'Ready')?.status === 'True' && warmupOf() === undefined);
  await assertNoWrites('once removed, status.warmup is not written again');
});
