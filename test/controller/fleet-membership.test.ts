// The operator against the fake API server publishes the example pool's fleet membership
// (docs/fleet-limits.md): a ConfigMap "<pool>-fleet" owned by the pool and mounted in its pods,
// listing the ordinals of the pods whose relay runs. A pod that is not ready but whose relay runs
// (draining, a missed readiness probe) keeps its share; one whose relay stopped is re-shared away
// lowering first (previousMembers, raiseAfter past the kubelet's propagation), without touching
// relay.yaml or the pod template (no restart); its return while that raise is pending waits for it.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { VmtaOperator } from '../../operator/controller/operator.ts';
import { RAISE_DELAY_MS } from '../../operator/controller/fleet-membership.ts';
import type { FakeKubeApi, StoredObject } from '../fixtures/fake-kube-api.ts';
import { eventually, startFakeApi } from '../kube/helpers.ts';
import { condition, loadExamples, NAMESPACE, startOperator } from './harness.ts';

let api: FakeKubeApi;
let operator: VmtaOperator;
const POOL = 'outbound';
const get = (apiVersion: string, kind: string, name: string) => api.get(apiVersion, kind, NAMESPACE, name);
const membership = () => {
  const text = (get('v1', 'ConfigMap', `${POOL}-fleet`)?.data as Record<string, string> | undefined)?.['membership.json'];
  return text === undefined ? undefined : (JSON.parse(text) as { members: number[]; previousMembers?: number[]; raiseAfter?: string });
};
const templateHash = () => ((get('apps/v1', 'StatefulSet', POOL)!.spec as { template: { metadata: { annotations: Record<string, string> } } }).template.metadata.annotations)['vmta.dev/pod-template-hash'];
const relayYaml = () => (get('v1', 'ConfigMap', `${POOL}-config`)!.data as Record<string, string>)['relay.yaml'] ?? '';

function setReady(podName: string, ready: boolean): void {
  const pod = get('v1', 'Pod', podName) as StoredObject;
  api.putStatus('v1', 'Pod', NAMESPACE, podName, { ...(pod.status as object), conditions: [{ type: 'Ready', status: ready ? 'True' : 'False' }] });
}

/** The relay container running (started past its startup probe) or stopped, waiting to restart. */
function setRelayRunning(podName: string, running: boolean): void {
  const pod = get('v1', 'Pod', podName) as StoredObject;
  const state = running ? { running: { startedAt: new Date().toISOString() } } : { waiting: { reason: 'CrashLoopBackOff' } };
  api.putStatus('v1', 'Pod', NAMESPACE, podName, { ...(pod.status as object), containerStatuses: [{ name: 'relay', ready: running, started: running, restartCount: 1, state }] });
}

before(async () => {
  const started = await startFakeApi({ bookmarkIntervalMs: 500 });
  api = started.api;
  await loadExamples(api);
  operator = startOperator(api, started.kubeconfig, { healthPort: 0, healthHost: '127.0.0.1', resyncPeriodMs: 1500 });
  await operator.start();
});

after(async () => {
  await operator.stop();
  await api.close();
});

test('the pool\'s delivering pods are published in its own fleet ConfigMap, mounted in the pods and named in relay.yaml', async () => {
  await eventually('the pool Ready with both pods in the fleet', () => condition(get('vmta.dev/v1alpha1', 'VirtualMtaPool', POOL), 'Ready')?.status === 'True' && membership()?.members.join() === '0,1');
  assert.deepEqual(membership(), { members: [0, 1] }, 'the first members need no lowering: nobody held a share before');
  const fleet = get('v1', 'ConfigMap', `${POOL}-fleet`)!;
  const owner = get('vmta.dev/v1alpha1', 'VirtualMtaPool', POOL)!;
  assert.ok(fleet.metadata.ownerReferences?.some((ref) => ref.controller && ref.uid === owner.metadata.uid), 'owned by the pool (garbage collected with it)');
  const template = (get('apps/v1', 'StatefulSet', POOL)!.spec as { template: { spec: { volumes: { name: string; configMap?: { name: string } }[]; containers: { volumeMounts: { name: string; mountPath: string }[] }[] } } }).template.spec;
  assert.deepEqual(template.volumes.find((volume) => volume.name === 'fleet')?.configMap, { name: `${POOL}-fleet` });
  assert.equal(template.containers[0]!.volumeMounts.find((mount) => mount.name === 'fleet')?.mountPath, '/etc/vmta/fleet');
  assert.match(relayYaml(), /fleet:\n\s+membershipFile: \/etc\/vmta\/fleet\/membership\.json\n/);
});

test('a pod that is not ready but delivers (draining, a missed probe) keeps its share', async () => {
  const before = membership();
  setReady(`${POOL}-1`, false);
  await new Promise((resolve) => setTimeout(resolve, 3000)); // several reconciles (resync 1.5 s)
  assert.deepEqual(membership(), before, 'readiness alone changes no share');
  setReady(`${POOL}-1`, true);
});

test('a pod whose relay stopped is re-shared away lowering first, with no change to relay.yaml or the pod template; its return waits for the pending raise', async () => {
  const [hashBefore, configBefore] = [templateHash(), relayYaml()];
  const changedAt = Date.now();
  setRelayRunning(`${POOL}-1`, false);
  const lowered = await eventually('pod 1 out of the membership', () => (membership()?.members.join() === '0' ? membership() : undefined));
  assert.deepEqual(lowered.previousMembers, [0, 1], 'the previous members go with the change: every pod takes the smaller share until raiseAfter');
  const raiseIn = Date.parse(lowered.raiseAfter!) - changedAt;
  assert.ok(raiseIn >= RAISE_DELAY_MS - 1000 && raiseIn <= RAISE_DELAY_MS + 10_000, `raiseAfter ${raiseIn} ms after the change`);
  assert.equal(templateHash(), hashBefore, 'the pod template is unchanged: no pod restarts for a re-share');
  assert.equal(relayYaml(), configBefore, 'relay.yaml is unchanged: its hash is the pods\' config version');
  setRelayRunning(`${POOL}-1`, true);
  await new Promise((resolve) => setTimeout(resolve, 3000)); // several reconciles (resync 1.5 s)
  assert.deepEqual(membership(), lowered, 'a change while a raise is pending waits for it');
});
