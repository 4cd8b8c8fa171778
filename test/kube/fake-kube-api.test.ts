// The fake API server must behave like the real one where the controller depends on it.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { isConflict, type KubeClient } from '../../operator/kube/client.ts';
import { RESOURCE_TYPES } from '../../operator/kube/resources.ts';
import type { KubeObject } from '../../operator/kube/types.ts';
import type { FakeKubeApi } from '../fixtures/fake-kube-api.ts';
import { eventually, startFakeApi } from './helpers.ts';

let api: FakeKubeApi;
let client: KubeClient;

before(async () => {
  ({ api, client } = await startFakeApi({ simulateWorkloads: false }));
});
after(async () => {
  await api.close();
});

function pool(name: string, replicas: number): KubeObject {
  return { apiVersion: 'vmta.dev/v1alpha1', kind: 'VirtualMtaPool', metadata: { name, namespace: 'fake' }, spec: { replicas } };
}

test('an update with a stale resourceVersion gets 409 Conflict', async () => {
  const created = await client.create({ apiVersion: 'coordination.k8s.io/v1', kind: 'Lease', metadata: { name: 'l', namespace: 'fake' }, spec: {} });
  await client.update({ ...created, spec: { holderIdentity: 'a' } });
  await assert.rejects(client.update({ ...created, spec: { holderIdentity: 'b' } }), (error: unknown) => isConflict(error));
});

test('generation changes with the spec only; the status subresource changes status only', async () => {
  const created = api.put(pool('gen', 1));
  assert.equal(created.metadata.generation, 1);
  await client.mergePatch(RESOURCE_TYPES.VirtualMtaPool, 'fake', 'gen', { status: { replicas: 1 }, spec: { replicas: 5 } }, 'status');
  const afterStatus = api.get('vmta.dev/v1alpha1', 'VirtualMtaPool', 'fake', 'gen')!;
  assert.deepEqual([afterStatus.metadata.generation, (afterStatus.spec as { replicas: number }).replicas, afterStatus.status], [1, 1, { replicas: 1 }]);
  api.put({ ...pool('gen', 1), metadata: { name: 'gen', namespace: 'fake', labels: { a: 'b' } } });
  assert.equal(api.get('vmta.dev/v1alpha1', 'VirtualMtaPool', 'fake', 'gen')!.metadata.generation, 1, 'metadata changes keep the generation');
  api.put(pool('gen', 3));
  const afterSpec = api.get('vmta.dev/v1alpha1', 'VirtualMtaPool', 'fake', 'gen')!;
  assert.deepEqual([afterSpec.metadata.generation, afterSpec.status], [2, { replicas: 1 }], 'a spec change bumps generation and keeps status');
});

test('deleting an owner deletes its dependents, and dependents with another living owner stay', async () => {
  const owner = api.put(pool('owner', 1));
  const other = api.put(pool('other', 1));
  const ref = (o: typeof owner) => ({ apiVersion: 'vmta.dev/v1alpha1', kind: 'VirtualMtaPool', name: o.metadata.name, uid: o.metadata.uid, controller: true, blockOwnerDeletion: true });
  api.put({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'owned', namespace: 'fake', ownerReferences: [ref(owner)] } });
  api.put({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'shared', namespace: 'fake', ownerReferences: [ref(owner), { ...ref(other), controller: false }] } });
  api.remove('vmta.dev/v1alpha1', 'VirtualMtaPool', 'fake', 'owner');
  await eventually('the dependent deleted', () => !api.get('v1', 'ConfigMap', 'fake', 'owned'));
  assert.ok(api.get('v1', 'ConfigMap', 'fake', 'shared'), 'an object with another owner is kept');
});

test('server-side apply without force conflicts with a field another manager applied', async () => {
  const body = (value: string) => JSON.stringify({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'ssa', namespace: 'fake' }, data: { key: value } });
  const apply = (manager: string, value: string, force: boolean) =>
    fetch(`${api.url}/api/v1/namespaces/fake/configmaps/ssa?fieldManager=${manager}${force ? '&force=true' : ''}`, { method: 'PATCH', headers: { 'content-type': 'application/apply-patch+yaml' }, body: body(value) });
  assert.equal((await apply('one', 'a', false)).status, 201);
  assert.equal((await apply('two', 'b', false)).status, 409);
  assert.equal((await apply('two', 'b', true)).status, 200);
  assert.deepEqual(api.get('v1', 'ConfigMap', 'fake', 'ssa')!.data, { key: 'b' });
});
