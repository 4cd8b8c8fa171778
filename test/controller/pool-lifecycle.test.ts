import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { VmtaOperator } from '../../operator/controller/operator.ts';
import type { FakeKubeApi, JsonObject, StoredObject } from '../fixtures/fake-kube-api.ts';
import { eventually, startFakeApi } from '../kube/helpers.ts';
import { condition, fakeRelayReader, IMAGE, loadExamples, NAMESPACE, startOperator } from './harness.ts';

let api: FakeKubeApi;
let operator: VmtaOperator;
/** Pods listed here report this config hash instead of their ConfigMap's (a relay that has not reloaded). */
const pinnedHashes = new Map<string, string>();

const POOL = 'outbound';
const get = (apiVersion: string, kind: string, name: string) => api.get(apiVersion, kind, NAMESPACE, name);
const pool = () => get('vmta.dev/v1alpha1', 'VirtualMtaPool', POOL);

async function waitReady(what: string, generation?: number): Promise<StoredObject> {
  return eventually(what, () => {
    const p = pool();
    const ready = condition(p, 'Ready');
    const observed = (p?.status as { observedGeneration?: number } | undefined)?.observedGeneration;
    return ready?.status === 'True' && (generation === undefined || observed === generation) ? p : undefined;
  });
}

/** Waits until the operator has written nothing for a second (the previous test's changes settled). */
async function settle(): Promise<void> {
  await eventually('the operator to settle', async () => {
    const from = api.requests.length;
    await new Promise((r) => setTimeout(r, 1000));
    return api.writes(from).length === 0;
  });
}

function templateAnnotations(): Record<string, string> {
  const sts = get('apps/v1', 'StatefulSet', POOL)!;
  return ((sts.spec as { template: { metadata: { annotations: Record<string, string> } } }).template.metadata.annotations);
}

function edit(apiVersion: string, kind: string, name: string, change: (object: StoredObject) => void): void {
  const object = get(apiVersion, kind, name)!;
  change(object);
  api.put(object);
}

before(async () => {
  const started = await startFakeApi({ bookmarkIntervalMs: 500 });
  api = started.api;
  await loadExamples(api);
  operator = startOperator(api, started.kubeconfig, { healthPort: 0, healthHost: '127.0.0.1', resyncPeriodMs: 1500, configHashReader: fakeRelayReader(api, pinnedHashes) });
  await operator.start();
});

after(async () => {
  await operator.stop();
  await api.close();
});

test('the example pool gets its ConfigMap, StatefulSet, Services and PDB, owned by the pool, and becomes Ready', async () => {
  const ready = await waitReady('the example pool to be Ready');
  const uid = ready.metadata.uid;
  const owned = (o: StoredObject | undefined) => o?.metadata.ownerReferences?.find((r) => r.uid === uid);
  const configMap = get('v1', 'ConfigMap', `${POOL}-config`);
  const statefulSet = get('apps/v1', 'StatefulSet', POOL);
  const pdb = api.list('policy/v1', 'PodDisruptionBudget', NAMESPACE);
  const services = api.list('v1', 'Service', NAMESPACE).map((s) => s.metadata.name).sort();
  assert.ok(configMap && statefulSet && pdb.length === 1);
  for (const object of [configMap, statefulSet, pdb[0]]) {
    assert.deepEqual({ ...owned(object) }, { apiVersion: 'vmta.dev/v1alpha1', kind: 'VirtualMtaPool', name: POOL, uid, controller: true, blockOwnerDeletion: true });
  }
  assert.deepEqual(services, ['outbound-alternate', 'outbound-headless', 'outbound-mx', 'outbound-submission', 'outbound-submissions'].sort());
  const container = (statefulSet.spec as { template: { spec: { containers: { image: string }[] } } }).template.spec.containers[0]!;
  assert.equal(container.image, IMAGE);
  const status = ready.status as JsonObject;
  assert.equal(status.observedGeneration, ready.metadata.generation);
  assert.equal(status.readyReplicas, 2);
  assert.equal(status.configHash, (configMap.metadata.annotations ?? {})['vmta.dev/config-hash']);
  assert.deepEqual((status.virtualMtas as JsonObject[]).map((v) => v.name), ['mta1', 'mta2']);
  for (const type of ['Progressing', 'Degraded']) assert.equal(condition(ready, type)?.status, 'False', type);
  assert.equal(condition(ready, 'ConfigApplied')?.status, 'True');
  const listener = get('vmta.dev/v1alpha1', 'SmtpListener', 'submission');
  assert.deepEqual([condition(listener, 'Ready')?.status, (listener?.status as JsonObject).port], ['True', 587]);
  assert.equal(condition(get('vmta.dev/v1alpha1', 'RelayPolicy', 'submission'), 'Ready')?.status, 'True');
});

test('nothing is written in steady state, across resyncs and status updates of the workload', async () => {
  await waitReady('Ready');
  await eventually('listener statuses', () => condition(get('vmta.dev/v1alpha1', 'SmtpListener', 'alternate'), 'Ready')?.status === 'True');
  await new Promise((r) => setTimeout(r, 1000));
  const from = api.requests.length;
  // Two resync periods: every cached object is replayed and reconciled again.
  await new Promise((r) => setTimeout(r, 3500));
  const reconciles = await operator.metrics.reconcileTotal.get();
  assert.ok(reconciles.values.reduce((n, v) => n + v.value, 0) > 0);
  assert.deepEqual(api.writes(from), [], 'no write request while nothing changed');
});

test('a hot change (relay policy) updates the ConfigMap only; pods keep their template', async () => {
  const before = await waitReady('Ready');
  const templateBefore = templateAnnotations();
  const configBefore = (before.status as { configHash: string }).configHash;
  const from = api.requests.length;
  edit('vmta.dev/v1alpha1', 'RelayPolicy', 'submission', (policy) => {
    (policy.spec as { alwaysAllowRelaying?: string[] }).alwaysAllowRelaying = ['10.1.0.0/16'];
  });
  const after = await eventually('the new config hash', () => {
    const p = pool();
    const hash = (p?.status as { configHash?: string } | undefined)?.configHash;
    return hash && hash !== configBefore && condition(p, 'Ready')?.status === 'True' ? p : undefined;
  });
  assert.ok(after);
  assert.deepEqual(templateAnnotations(), templateBefore, 'the pod template did not change');
  const writes = api.writes(from).filter((w) => w.userAgent?.startsWith('vmta-operator'));
  assert.ok(writes.some((w) => w.resource === 'configmaps' && w.verb === 'patch'));
  assert.ok(!writes.some((w) => w.resource === 'statefulsets'), `no StatefulSet write: ${JSON.stringify(writes)}`);
});

test('ConfigApplied stays False, naming the pod, until every ready pod reports the rendered config hash', async () => {
  await waitReady('Ready');
  pinnedHashes.set('outbound-1', 'a-config-hash-from-before');
  try {
    const pending = await eventually('ConfigApplied=False', () => {
      const c = condition(pool(), 'ConfigApplied');
      return c?.status === 'False' ? c : undefined;
    }, 30_000);
    assert.equal(pending.reason, 'ConfigPending');
    assert.match(pending.message, /1\/2 ready pods run config .*waiting for outbound-1/);
    assert.deepEqual([condition(pool(), 'Ready')?.status, condition(pool(), 'Ready')?.reason], ['False', 'ConfigPending']);
  } finally {
    pinnedHashes.clear();
  }
  await waitReady('Ready once the pod reloaded');
  assert.equal(condition(pool(), 'ConfigApplied')?.status, 'True');
});

test('a cold change (resources) changes the pod template hash and rolls the pods', async () => {
  await waitReady('Ready');
  const hashBefore = templateAnnotations()['vmta.dev/pod-template-hash'];
  edit('vmta.dev/v1alpha1', 'VirtualMtaPool', POOL, (p) => {
    (p.spec as { pod: { resources: { limits: { memory: string } } } }).pod.resources.limits.memory = '1Gi';
  });
  const generation = pool()!.metadata.generation;
  await waitReady('Ready at the new generation', generation);
  assert.notEqual(templateAnnotations()['vmta.dev/pod-template-hash'], hashBefore);
});

test('a listener that is removed loses its Service; one that names a missing policy makes the pool not Ready without touching its objects', async () => {
  await waitReady('Ready');
  api.remove('vmta.dev/v1alpha1', 'SmtpListener', NAMESPACE, 'alternate');
  await eventually('the alternate Service pruned', () => !get('v1', 'Service', 'outbound-alternate'));

  const configBefore = get('v1', 'ConfigMap', `${POOL}-config`)!.metadata.resourceVersion;
  edit('vmta.dev/v1alpha1', 'SmtpListener', 'submissions', (l) => {
    (l.spec as { relayPolicyRef: { name: string } }).relayPolicyRef.name = 'missing';
  });
  const broken = await eventually('Ready=False', () => (condition(pool(), 'Ready')?.status === 'False' && condition(pool(), 'Degraded')?.status === 'True' ? pool() : undefined));
  const ready = condition(broken, 'Ready')!;
  assert.equal(ready.reason, 'PolicyNotFound');
  assert.match(ready.message, /SmtpListener "submissions" spec\.relayPolicyRef/);
  assert.match(ready.message, /missing/);
  const listenerReady = await eventually('listener condition', () => {
    const c = condition(get('vmta.dev/v1alpha1', 'SmtpListener', 'submissions'), 'Ready');
    return c?.status === 'False' ? c : undefined;
  });
  assert.equal(listenerReady.reason, 'PolicyNotFound');
  const events = await eventually('a Warning event', () => api.list('v1', 'Event', NAMESPACE).filter((e) => e.reason === 'PolicyNotFound' && e.type === 'Warning'));
  assert.ok(events.length >= 1);
  assert.equal(get('v1', 'ConfigMap', `${POOL}-config`)!.metadata.resourceVersion, configBefore, 'the running config is left alone');

  edit('vmta.dev/v1alpha1', 'SmtpListener', 'submissions', (l) => {
    (l.spec as { relayPolicyRef: { name: string } }).relayPolicyRef.name = 'submission';
  });
  await waitReady('Ready again after the fix');
});

test('a second pool with a problem does not disturb the healthy one', async () => {
  await waitReady('Ready');
  await settle();
  const from = api.requests.length;
  api.put({
    apiVersion: 'vmta.dev/v1alpha1',
    kind: 'SmtpListener',
    metadata: { name: 'broken-mx', namespace: NAMESPACE },
    spec: { role: 'relay', tls: { secretName: 'relay-tls' }, relayPolicyRef: { name: 'nope' }, poolRef: { name: 'broken' } },
  });
  api.put({
    apiVersion: 'vmta.dev/v1alpha1',
    kind: 'VirtualMtaPool',
    metadata: { name: 'broken', namespace: NAMESPACE },
    spec: { hostname: 'b.example.com', virtualMtas: [{ name: 'v1', hostname: 'v1.example.com' }] },
  });
  await eventually('broken pool not Ready', () => condition(api.get('vmta.dev/v1alpha1', 'VirtualMtaPool', NAMESPACE, 'broken'), 'Ready')?.status === 'False');
  assert.equal(condition(pool(), 'Ready')?.status, 'True');
  const touched = api.writes(from).filter((w) => w.name?.startsWith('outbound') || w.name === POOL);
  assert.deepEqual(touched, []);
  assert.equal(api.list('apps/v1', 'StatefulSet', NAMESPACE).filter((s) => s.metadata.name === 'broken').length, 0);
  api.remove('vmta.dev/v1alpha1', 'SmtpListener', NAMESPACE, 'broken-mx');
  api.remove('vmta.dev/v1alpha1', 'VirtualMtaPool', NAMESPACE, 'broken');
});

test('the paused annotation stops reconciling the pool and says so in a condition', async () => {
  await waitReady('Ready');
  edit('vmta.dev/v1alpha1', 'VirtualMtaPool', POOL, (p) => {
    p.metadata.annotations = { ...p.metadata.annotations, 'vmta.dev/paused': 'true' };
  });
  const paused = await eventually('Paused condition', () => condition(pool(), 'Paused'));
  assert.equal(paused.status, 'True');
  const configBefore = get('v1', 'ConfigMap', `${POOL}-config`)!.metadata.resourceVersion;
  edit('vmta.dev/v1alpha1', 'RelayPolicy', 'submission', (policy) => {
    (policy.spec as { alwaysAllowRelaying?: string[] }).alwaysAllowRelaying = ['10.2.0.0/16'];
  });
  await new Promise((r) => setTimeout(r, 1500));
  assert.equal(get('v1', 'ConfigMap', `${POOL}-config`)!.metadata.resourceVersion, configBefore, 'a paused pool is not applied');
  edit('vmta.dev/v1alpha1', 'VirtualMtaPool', POOL, (p) => {
    delete p.metadata.annotations!['vmta.dev/paused'];
  });
  await eventually('the change applied after resuming', () => get('v1', 'ConfigMap', `${POOL}-config`)!.metadata.resourceVersion !== configBefore);
  await eventually('Paused condition gone', () => !condition(pool(), 'Paused'));
});

test('a broken watch (410 Gone and a dropped connection) is recovered and later changes are reconciled', async () => {
  await waitReady('Ready');
  const hashBefore = (pool()!.status as { configHash: string }).configHash;
  api.breakWatches();
  edit('vmta.dev/v1alpha1', 'RelayPolicy', 'submission', (policy) => {
    (policy.spec as { alwaysAllowRelaying?: string[] }).alwaysAllowRelaying = ['10.3.0.0/16'];
  });
  api.compactHistory();
  await eventually('the change made during the outage applied', () => {
    const status = pool()?.status as { configHash?: string } | undefined;
    return status?.configHash !== hashBefore && condition(pool(), 'Ready')?.status === 'True';
  });
  const relists = operator.caches.policies.stats.relistsAfterGone;
  assert.ok(relists >= 1, 'the policy informer relisted after 410');
});

test('health, readiness and metrics endpoints answer with controller-runtime metric names', async () => {
  const base = `http://127.0.0.1:${operator.healthPort}`;
  assert.equal((await fetch(`${base}/healthz`)).status, 200);
  assert.equal((await fetch(`${base}/readyz`)).status, 200);
  const text = await (await fetch(`${base}/metrics`)).text();
  for (const name of [
    'controller_runtime_reconcile_total{controller="virtualmtapool",result="success"}',
    'controller_runtime_reconcile_time_seconds_bucket',
    'controller_runtime_active_workers{controller="virtualmtapool"}',
    'controller_runtime_max_concurrent_reconciles{controller="virtualmtapool"} 4',
    'controller_runtime_reconcile_errors_total',
    'workqueue_depth{name="vmta"}',
    'workqueue_adds_total{name="vmta"}',
    'workqueue_queue_duration_seconds_bucket',
    'workqueue_work_duration_seconds_bucket',
  ]) {
    assert.ok(text.includes(name), `metrics include ${name}`);
  }
});

test('deleting the pool garbage-collects everything it owned', async () => {
  await waitReady('Ready');
  api.remove('vmta.dev/v1alpha1', 'VirtualMtaPool', NAMESPACE, POOL);
  const remaining = () =>
    [
      ['apps/v1', 'StatefulSet'],
      ['v1', 'ConfigMap'],
      ['v1', 'Service'],
      ['policy/v1', 'PodDisruptionBudget'],
      ['v1', 'Pod'],
    ].flatMap(([apiVersion, kind]) => api.list(apiVersion!, kind!, NAMESPACE).filter((o) => o.metadata.name.startsWith(POOL)));
  await eventually('owned objects gone', () => remaining().length === 0);
  const listener = await eventually('listener reports the missing pool', () => {
    const c = condition(get('vmta.dev/v1alpha1', 'SmtpListener', 'mx'), 'Ready');
    return c?.reason === 'PoolNotFound' ? c : undefined;
  });
  assert.match(listener.message, /SmtpListener "mx" spec\.poolRef\.name: no VirtualMtaPool "outbound"/);
});
