// IP warm-up from the VirtualMtaPool into relay.yaml: virtualMtas[].warmup and
// spec.overflowVirtualMtas render as written (defaults filled in) for a class of plans; an
// overflow that names a missing VirtualMTA, the VirtualMTA itself or a warming one is a render
// problem naming the spec field and the value (so the pool gets the condition and Event and no
// ConfigMap); a bad plan is refused when the resource is parsed, naming the field.
import assert from 'node:assert/strict';
import path from 'node:path';
import { test } from 'node:test';
import { parseVmtaResource } from '../../operator/api/parse.ts';
import type { VirtualMtaPool } from '../../operator/api/virtual-mta-pool.ts';
import { loadResourceDir, secretSummaries } from '../../operator/local/resource-files.ts';
import { renderPool } from '../../operator/render/pool.ts';
import { REPOSITORY_ROOT } from '../../scripts/generated-files.ts';
import { copy, exampleInput, renderedRelayConfig } from './example-resources.ts';

type VmtaSpec = VirtualMtaPool['spec']['virtualMtas'][number];

function vmta(name: string, warmup?: VmtaSpec['warmup']): VmtaSpec {
  return { name, hostname: `${name}.example.com`, weight: 1, ...(warmup ? { warmup } : {}) };
}

test('warm-up plans and the pool overflow render into relay.yaml as written', async () => {
  const input = await exampleInput();
  const plans: NonNullable<VmtaSpec['warmup']>[] = [
    { start: '2026-12-01', timeZone: 'UTC', schedule: [{ day: 1, daily: 200 }] },
    { start: '2026-02-28', timeZone: 'America/New_York', schedule: [{ day: 1, daily: 200 }, { day: 2, daily: 500, hourly: 50 }, { day: 30, daily: 100_000 }], overflowTo: ['warm-b', 'warm-a'] },
    { start: '2027-03-28', timeZone: 'Europe/Berlin', schedule: [{ day: 3, daily: 0, hourly: 0 }] },
  ];
  for (const [index, plan] of plans.entries()) {
    for (const overflow of [undefined, ['warm-a'], ['warm-a', 'warm-b']]) {
      const pool = copy(input.pool);
      pool.spec.virtualMtas = [...input.pool.spec.virtualMtas.map(({ warmup: _warmup, ...rest }) => rest), vmta('cold'), vmta('warm-a'), vmta('warm-b')];
      pool.spec.virtualMtas.at(-3)!.warmup = plan;
      if (overflow) pool.spec.overflowVirtualMtas = overflow;
      else delete pool.spec.overflowVirtualMtas;
      const result = renderPool({ ...input, pool });
      assert.deepEqual(result.problems, [], `plan ${index}, overflow ${overflow}`);
      const rendered = renderedRelayConfig(result).pool;
      assert.deepEqual(rendered.virtualMtas.find((entry) => entry.name === 'cold')?.warmup, plan, `plan ${index}`);
      assert.equal(rendered.virtualMtas.find((entry) => entry.name === 'warm-a')?.warmup, undefined, 'a VirtualMTA without a plan renders none');
      assert.deepEqual(rendered.overflowVirtualMtas, overflow ?? [], `plan ${index}, overflow ${overflow}`);
    }
  }
});

test('a resource plan gets its time zone default, as the relay would', () => {
  const parsed = parseVmtaResource({ apiVersion: 'vmta.dev/v1alpha1', kind: 'VirtualMtaPool', metadata: { name: 'pool' }, spec: { virtualMtas: [{ name: 'cold', hostname: 'cold.example.com', warmup: { start: '2026-12-01', schedule: [{ day: 1, daily: 200 }] } }] } });
  assert.ok(parsed.ok, JSON.stringify(parsed));
  assert.equal((parsed.value as VirtualMtaPool).spec.virtualMtas[0]!.warmup?.timeZone, 'UTC');
});

test('an overflow to a missing, warming or the same VirtualMTA is a render problem naming the field and the value', async () => {
  const input = await exampleInput();
  const plan = (overflowTo?: string[]) => ({ start: '2026-12-01', timeZone: 'UTC', schedule: [{ day: 1, daily: 200 }], ...(overflowTo ? { overflowTo } : {}) });
  const cases: [string, VmtaSpec[], string[] | undefined, string, RegExp][] = [
    ['pool overflow to a missing VirtualMTA', [vmta('cold', plan()), vmta('warm')], ['warm', 'gone'], 'spec.overflowVirtualMtas[1]', /no VirtualMTA named "gone".*\(got "gone"\)/],
    ['pool overflow to a warming VirtualMTA', [vmta('cold', plan()), vmta('cool', plan())], ['cool'], 'spec.overflowVirtualMtas[0]', /"cool" is warming itself/],
    ['overflowTo a missing VirtualMTA', [vmta('cold', plan(['nope'])), vmta('warm')], undefined, 'spec.virtualMtas[0].warmup.overflowTo[0]', /no VirtualMTA named "nope"/],
    ['overflowTo itself', [vmta('warm'), vmta('cold', plan(['warm', 'cold']))], undefined, 'spec.virtualMtas[1].warmup.overflowTo[1]', /cannot overflow to itself/],
    ['overflowTo a warming VirtualMTA (a chain)', [vmta('a', plan(['b'])), vmta('b', plan(['c'])), vmta('c')], undefined, 'spec.virtualMtas[0].warmup.overflowTo[0]', /"b" is warming itself/],
    ['overflowTo each other (a cycle)', [vmta('a', plan(['b'])), vmta('b', plan(['a']))], undefined, 'spec.virtualMtas[1].warmup.overflowTo[0]', /"a" is warming itself/],
    ['a schedule for a provider group the pool has not', [vmta('cold', { ...plan(), providerGroups: [{ name: 'yahoo', schedule: [{ day: 1, daily: 5 }] }] }), vmta('warm')], undefined, 'spec.virtualMtas[0].warmup.providerGroups[0].name', /no provider group named "yahoo"/],
  ];
  for (const [what, virtualMtas, overflow, field, words] of cases) {
    const pool = copy(input.pool);
    pool.spec.virtualMtas = virtualMtas;
    if (overflow) pool.spec.overflowVirtualMtas = overflow;
    const result = renderPool({ ...input, pool });
    const found = result.problems.filter((problem) => problem.reason === 'InvalidWarmup');
    assert.ok(found.some((problem) => problem.message.includes(`VirtualMtaPool "${pool.metadata.name}" ${field}: `) && words.test(problem.message)), `${what}: expected a problem on ${field} matching ${words}, got ${JSON.stringify(result.problems)}`);
    assert.ok(found.every((problem) => problem.object.kind === 'VirtualMtaPool'), what);
  }
});

test('a bad plan is refused when the resource is parsed, naming the field', () => {
  const pool = (warmup: unknown) => ({ apiVersion: 'vmta.dev/v1alpha1', kind: 'VirtualMtaPool', metadata: { name: 'pool' }, spec: { virtualMtas: [{ name: 'cold', hostname: 'cold.example.com', warmup }] } });
  const field = 'spec.virtualMtas[0].warmup';
  const cases: [string, unknown, string, RegExp][] = [
    ['days not ascending', { start: '2026-12-01', schedule: [{ day: 2, daily: 200 }, { day: 2, daily: 500 }] }, `${field}.schedule[1].day`, /ascend/],
    ['hourly above daily', { start: '2026-12-01', schedule: [{ day: 1, daily: 200, hourly: 201 }] }, `${field}.schedule[0].hourly`, /above the daily cap/],
    ['not a calendar date', { start: '2026-02-30', schedule: [{ day: 1, daily: 200 }] }, `${field}.start`, /calendar date/],
    ['a date too long', { start: '2026-12-01T00:00:00Z', schedule: [{ day: 1, daily: 200 }] }, `${field}.start`, /./],
    ['an unknown time zone', { start: '2026-12-01', timeZone: 'Mars/Olympus', schedule: [{ day: 1, daily: 200 }] }, `${field}.timeZone`, /IANA time zone/],
    ['no steps', { start: '2026-12-01', schedule: [] }, `${field}.schedule`, /./],
    ['a negative cap', { start: '2026-12-01', schedule: [{ day: 1, daily: -1 }] }, `${field}.schedule[0].daily`, /./],
    ['an unknown field', { start: '2026-12-01', schedule: [{ day: 1, daily: 200 }], weekly: 5 }, field, /weekly/],
    ['a group\'s days not ascending', { start: '2026-12-01', schedule: [{ day: 1, daily: 200 }], providerGroups: [{ name: 'google', schedule: [{ day: 3, daily: 5 }, { day: 2, daily: 9 }] }] }, `${field}.providerGroups[0].schedule[1].day`, /ascend/],
    ['a group with two schedules', { start: '2026-12-01', schedule: [{ day: 1, daily: 200 }], providerGroups: [{ name: 'google', schedule: [{ day: 1, daily: 5 }] }, { name: 'google', schedule: [{ day: 1, daily: 6 }] }] }, `${field}.providerGroups[1].name`, /two schedules/],
  ];
  for (const [what, warmup, path, words] of cases) {
    const result = parseVmtaResource(pool(warmup));
    const problems = result.ok ? [] : result.problems;
    assert.ok(problems.some((problem) => problem.startsWith(`${path}:`) && words.test(problem)), `${what}: expected a problem on ${path} matching ${words}, got ${JSON.stringify(problems)}`);
  }
});

test('examples/warmup/ loads and renders its warming VirtualMTA with the pool overflow', async () => {
  const loaded = await loadResourceDir(path.join(REPOSITORY_ROOT, 'examples/warmup'));
  assert.deepEqual(loaded.errors, []);
  const result = renderPool({ pool: loaded.resources.pools[0]!, listeners: [], policies: [], secrets: secretSummaries(loaded.resources.secrets), image: 'registry.example/vmta:1.0.0', namespace: 'mail' });
  assert.deepEqual(result.problems, []);
  const rendered = renderedRelayConfig(result).pool;
  assert.deepEqual(rendered.overflowVirtualMtas, ['vmta-warm']);
  assert.equal(rendered.virtualMtas.find((entry) => entry.name === 'vmta-new')?.warmup?.schedule[0]?.daily, 200);
  assert.deepEqual(rendered.virtualMtas.find((entry) => entry.name === 'vmta-new')?.warmup?.providerGroups?.map((group) => [group.name, group.schedule[0]?.daily]), [['google', 50]]);
});
