import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { KubeClient, loadKubeConfig } from '../../operator/kube/client.ts';
import { LeaderElector } from '../../operator/kube/leader-election.ts';
import type { FakeKubeApi } from '../fixtures/fake-kube-api.ts';
import { eventually, startFakeApi } from './helpers.ts';

let api: FakeKubeApi;
let kubeconfig: string;

before(async () => {
  ({ api, kubeconfig } = await startFakeApi());
});
after(async () => {
  await api.close();
});

function candidate(identity: string, name: string, timeline: string[]) {
  const state = { leading: false };
  const elector = new LeaderElector(new KubeClient(loadKubeConfig(kubeconfig)), {
    namespace: 'default',
    name,
    identity,
    leaseDurationMs: 1000,
    renewDeadlineMs: 700,
    retryPeriodMs: 100,
    onStartedLeading: () => {
      state.leading = true;
      timeline.push(`${identity}+`);
    },
    onStoppedLeading: () => {
      state.leading = false;
      timeline.push(`${identity}-`);
    },
  });
  return { elector, state };
}

test('exactly one of two candidates leads, and the other takes over when the leader releases the lease', async () => {
  const timeline: string[] = [];
  const a = candidate('a', 'release', timeline);
  const b = candidate('b', 'release', timeline);
  a.elector.start();
  await eventually('a leads', () => a.state.leading);
  b.elector.start();
  await new Promise((r) => setTimeout(r, 500));
  assert.equal(b.state.leading, false, 'b waits while a renews');
  await a.elector.stop();
  await eventually('b leads', () => b.state.leading);
  assert.deepEqual(timeline, ['a+', 'a-', 'b+']);
  const lease = api.get('coordination.k8s.io/v1', 'Lease', 'default', 'release');
  assert.equal((lease?.spec as { holderIdentity: string }).holderIdentity, 'b');
  await b.elector.stop();
});

test('a candidate takes over a lease whose holder stopped renewing once it expires', async () => {
  const timeline: string[] = [];
  api.put({
    apiVersion: 'coordination.k8s.io/v1',
    kind: 'Lease',
    metadata: { name: 'expired', namespace: 'default' },
    spec: { holderIdentity: 'crashed', leaseDurationSeconds: 1, renewTime: new Date().toISOString(), leaseTransitions: 0 },
  });
  const b = candidate('b', 'expired', timeline);
  const started = Date.now();
  b.elector.start();
  await eventually('b leads', () => b.state.leading);
  assert.ok(Date.now() - started >= 700, 'waited for the lease to expire');
  const lease = api.get('coordination.k8s.io/v1', 'Lease', 'default', 'expired');
  assert.deepEqual([(lease?.spec as { holderIdentity: string }).holderIdentity, (lease?.spec as { leaseTransitions: number }).leaseTransitions], ['b', 1]);
  await b.elector.stop();
});

test('a leader that cannot renew stops leading before its lease can be taken over', async () => {
  const timeline: string[] = [];
  const a = candidate('a', 'partition', timeline);
  a.elector.start();
  await eventually('a leads', () => a.state.leading);
  api.failAllWith = 503;
  try {
    await eventually('a stops leading', () => !a.state.leading, 5000);
  } finally {
    api.failAllWith = undefined;
  }
  assert.deepEqual(timeline, ['a+', 'a-']);
  await a.elector.stop();
});
