import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { ServerSideApplier, containsFields } from '../../operator/kube/apply.ts';
import { EventRecorder } from '../../operator/kube/event-recorder.ts';
import type { KubeClient } from '../../operator/kube/client.ts';
import type { KubeObject } from '../../operator/kube/types.ts';
import type { FakeKubeApi } from '../fixtures/fake-kube-api.ts';
import { startFakeApi } from './helpers.ts';

let api: FakeKubeApi;
let client: KubeClient;

before(async () => {
  ({ api, client } = await startFakeApi());
});
after(async () => {
  await api.close();
});

function service(port: number): KubeObject {
  return { apiVersion: 'v1', kind: 'Service', metadata: { name: 'smtp', namespace: 'apply', labels: { app: 'relay' } }, spec: { ports: [{ name: 'smtp', port }], selector: { app: 'relay' } } };
}

test('containsFields ignores fields the server added but not a changed or missing one', () => {
  const live = { spec: { clusterIP: '10.0.0.1', ports: [{ name: 'smtp', port: 25, protocol: 'TCP' }] } };
  assert.equal(containsFields(live, { spec: { ports: [{ name: 'smtp', port: 25 }] } }), true);
  assert.equal(containsFields(live, { spec: { ports: [{ name: 'smtp', port: 587 }] } }), false);
  assert.equal(containsFields(live, { spec: { ports: [{ name: 'smtp', port: 25 }, { name: 'x', port: 1 }] } }), false);
  assert.equal(containsFields(live, { spec: { type: 'LoadBalancer' } }), false);
});

test('applier creates, skips an unchanged object without a request, and applies a change', async () => {
  const applier = new ServerSideApplier(client);
  const created = await applier.apply(service(25), undefined);
  assert.equal(created.written, true);
  const live = api.get('v1', 'Service', 'apply', 'smtp')!;
  assert.equal((live.spec as { clusterIP?: string }).clusterIP !== undefined, true, 'the server defaulted clusterIP');
  const writes = api.writes().length;
  const again = await applier.apply(service(25), live);
  assert.equal(again.written, false);
  assert.equal(api.writes().length, writes, 'no request for an unchanged object');
  const changed = await applier.apply(service(2525), live);
  assert.equal(changed.written, true);
  const after = api.get('v1', 'Service', 'apply', 'smtp')!;
  assert.deepEqual((after.spec as { ports: unknown }).ports, [{ name: 'smtp', port: 2525 }]);
  assert.equal(Number(after.metadata.resourceVersion) > Number(live.metadata.resourceVersion), true);
});

test('the fake server does not bump resourceVersion or generation for an apply that changes nothing', async () => {
  await client.apply({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'same', namespace: 'apply' }, data: { a: '1' } });
  const first = api.get('v1', 'ConfigMap', 'apply', 'same')!;
  await client.apply({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'same', namespace: 'apply' }, data: { a: '1' } });
  const second = api.get('v1', 'ConfigMap', 'apply', 'same')!;
  assert.equal(second.metadata.resourceVersion, first.metadata.resourceVersion);
  // A field dropped from the applied configuration is removed from the object.
  await client.apply({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'same', namespace: 'apply' }, data: { b: '2' } });
  assert.deepEqual(api.get('v1', 'ConfigMap', 'apply', 'same')!.data, { b: '2' });
});

test('event recorder aggregates a repeated event instead of writing it again', async () => {
  const recorder = new EventRecorder(client, { aggregationWindowMs: 60_000 });
  const involved: KubeObject = { apiVersion: 'vmta.dev/v1alpha1', kind: 'VirtualMtaPool', metadata: { name: 'p', namespace: 'apply', uid: 'u1' } };
  const before = api.writes().length;
  await recorder.record(involved, 'Warning', 'PolicyNotFound', 'no RelayPolicy "x"');
  await recorder.record(involved, 'Warning', 'PolicyNotFound', 'no RelayPolicy "x"');
  await recorder.record(involved, 'Warning', 'PolicyNotFound', 'no RelayPolicy "x"');
  assert.equal(api.writes().length - before, 1);
  const events = api.list('v1', 'Event', 'apply');
  assert.equal(events.length, 1);
  assert.deepEqual([events[0]!.reason, events[0]!.type, (events[0]!.involvedObject as { name: string }).name], ['PolicyNotFound', 'Warning', 'p']);
  const expired = new EventRecorder(client, { aggregationWindowMs: 0 });
  await expired.record(involved, 'Normal', 'Applied', 'm');
  await expired.record(involved, 'Normal', 'Applied', 'm');
  const applied = api.list('v1', 'Event', 'apply').filter((e) => e.reason === 'Applied');
  assert.equal(applied.length, 1);
  assert.equal(applied[0]!.count, 2, 'after the window the count is patched');
  // Reported at once (two reconciles): still one Event, its count the number of reports.
  for (const reports of [2, 3, 5]) {
    const reason = `Concurrent${reports}`;
    await Promise.all(Array.from({ length: reports }, () => expired.record(involved, 'Warning', reason, 'm')));
    const concurrent = api.list('v1', 'Event', 'apply').filter((e) => e.reason === reason);
    assert.deepEqual(concurrent.map((e) => e.count), [reports], `${reports} reports at once: one Event counting ${reports}`);
  }
});

test('the client refuses a request the RBAC role does not grant', async () => {
  await assert.rejects(client.delete({ group: '', version: 'v1', kind: 'Secret', plural: 'secrets', namespaced: true }, 'apply', 'x'), /RBAC does not grant "delete" on core\/secrets/);
});
