import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { after, before, test } from 'node:test';
import type { FakeKubeApi } from '../fixtures/fake-kube-api.ts';
import { eventually, startFakeApi } from '../kube/helpers.ts';
import { IMAGE, loadExamples, NAMESPACE } from './harness.ts';

const VMTA = path.join(import.meta.dirname, '..', '..', 'cli', 'vmta.ts');
let api: FakeKubeApi;
let kubeconfig: string;
const children: ChildProcess[] = [];

function startOperatorProcess(): ChildProcess {
  const child = spawn(
    process.execPath,
    [
      VMTA, 'operator', '--kubeconfig', kubeconfig, '--namespace', NAMESPACE, '--image', IMAGE, '--leader-elect',
      '--leader-elect-lease-duration', '2s', '--leader-elect-renew-deadline', '1500ms', '--leader-elect-retry-period', '200ms',
      '--metrics-bind-address', '127.0.0.1:0',
    ],
    { stdio: ['ignore', 'ignore', 'inherit'], env: { ...process.env, LOG_LEVEL: 'warn' } },
  );
  children.push(child);
  return child;
}

const holder = () => (api.get('coordination.k8s.io/v1', 'Lease', NAMESPACE, 'vmta-operator-leader')?.spec as { holderIdentity?: string } | undefined)?.holderIdentity;
const writesBy = (pid: number | undefined, from = 0) => api.writes(from).filter((w) => w.userAgent?.endsWith(`_${pid}`));

before(async () => {
  ({ api, kubeconfig } = await startFakeApi());
  await loadExamples(api);
});

after(async () => {
  for (const child of children) if (child.exitCode === null) child.kill('SIGKILL');
  await api.close();
});

test('only the elected operator writes; when it is killed the other takes over the lease and reconciles', async () => {
  const first = startOperatorProcess();
  await eventually('the first operator to lead', () => holder()?.endsWith(`_${first.pid}`), 60_000);
  const second = startOperatorProcess();
  await eventually('the objects of the example pool', () => api.get('apps/v1', 'StatefulSet', NAMESPACE, 'outbound'), 60_000);
  // Give the second operator time to sync its caches and campaign.
  await eventually('the second operator to read the lease', () => api.requests.some((r) => r.resource === 'leases' && r.userAgent?.endsWith(`_${second.pid}`)), 60_000);
  await new Promise((r) => setTimeout(r, 1500));
  assert.ok(writesBy(first.pid).some((w) => w.resource === 'statefulsets'), 'the leader applied the workload');
  assert.deepEqual(writesBy(second.pid), [], 'the standby wrote nothing while the leader lived');

  first.kill('SIGKILL');
  await eventually('the second operator to take over', () => holder()?.endsWith(`_${second.pid}`), 60_000);
  const from = api.requests.length;
  const policy = api.get('vmta.dev/v1alpha1', 'RelayPolicy', NAMESPACE, 'bounces')!;
  (policy.spec as { relayDomains: string[] }).relayDomains.push('returns.example.com');
  api.put(policy);
  await eventually('the new leader to apply the changed config', () => writesBy(second.pid, from).some((w) => w.resource === 'configmaps'), 60_000);
  const lease = api.get('coordination.k8s.io/v1', 'Lease', NAMESPACE, 'vmta-operator-leader')!.spec as { leaseTransitions: number };
  assert.equal(lease.leaseTransitions, 1);

  // A clean shutdown releases the lease at once instead of letting it expire.
  second.kill('SIGTERM');
  await eventually('the lease released', () => holder() === undefined || holder() === null, 30_000);
});
