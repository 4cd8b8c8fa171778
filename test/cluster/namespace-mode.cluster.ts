// Namespace mode as the chart installs it: rbac.scope=namespace with two watched namespaces and
// two replicas. The operator watches exactly those namespaces (a Role in each, no ClusterRole),
// its replicas elect one leader on a Lease in the release namespace (where the leader-election
// Role is), and a pool in each watched namespace is reconciled to Ready pods. The shared
// cluster-mode operator is scaled to zero meanwhile so that only this release acts.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { installRelease, RELEASE, uninstallRelease } from './support/chart.ts';
import { clusterEnv } from './support/env.ts';
import { apply, condition, createNamespace, deleteNamespace, getJson, kubectl, kubectlResult, waitFor } from './support/kubectl.ts';

const env = clusterEnv();
const RELEASE_NAMESPACE = `vmta-nsmode-${process.pid}`;
const WATCHED = [`vmta-nsmode-a-${process.pid}`, `vmta-nsmode-b-${process.pid}`];
const NAMESPACE_RELEASE = 'nsmode';
const sharedOperator = ['-n', env.operatorNamespace, 'deployment', `${RELEASE}-vmta-operator`];

function pool(name: string): object {
  return {
    apiVersion: 'vmta.dev/v1alpha1',
    kind: 'VirtualMtaPool',
    metadata: { name },
    spec: { replicas: 1, spool: { mode: 'ephemeral', size: '64Mi' }, virtualMtas: [{ name: 'mta1', hostname: `${name}.example.com` }] },
  };
}

before(async () => {
  await kubectl(['scale', ...sharedOperator, '--replicas=0']);
  await waitFor('the shared operator stopped', async () => (await getJson(['-n', env.operatorNamespace, 'get', 'pods', '-l', 'app.kubernetes.io/name=vmta-operator'])).items.length === 0, 120_000);
  for (const namespace of WATCHED) await createNamespace(namespace);
  await installRelease({
    release: NAMESPACE_RELEASE,
    namespace: RELEASE_NAMESPACE,
    image: env.image,
    set: ['rbac.scope=namespace', `rbac.namespaces={${WATCHED.join(',')}}`, 'replicaCount=2', 'crds.install=false'],
  });
});

after(async () => {
  await uninstallRelease(NAMESPACE_RELEASE, RELEASE_NAMESPACE).catch((error: Error) => console.error(error.message));
  for (const namespace of [...WATCHED, RELEASE_NAMESPACE]) await deleteNamespace(namespace).catch((error: Error) => console.error(error.message));
  await kubectl(['scale', ...sharedOperator, '--replicas=1']);
  await kubectl(['rollout', 'status', ...sharedOperator, '--timeout=180s'], { timeoutMs: 190_000 });
});

test('two replicas elect one leader on a Lease in the release namespace', async () => {
  const lease = await waitFor('a Lease with a holder in the release namespace', async () => {
    const leases = await getJson<{ items: { spec: { holderIdentity?: string } }[] }>(['-n', RELEASE_NAMESPACE, 'get', 'leases']);
    return leases.items.find((item) => item.spec.holderIdentity);
  }, 90_000);
  const pods = await getJson<{ items: { metadata: { name: string } }[] }>(['-n', RELEASE_NAMESPACE, 'get', 'pods', '-l', 'app.kubernetes.io/name=vmta-operator']);
  assert.equal(pods.items.length, 2);
  assert.ok(pods.items.some((pod) => lease.spec.holderIdentity!.startsWith(`${pod.metadata.name}_`)), `holder ${lease.spec.holderIdentity}`);
  for (const namespace of WATCHED) {
    assert.equal((await getJson<{ items: unknown[] }>(['-n', namespace, 'get', 'leases'])).items.length, 0, `no Lease in watched namespace ${namespace}`);
  }
});

test('a pool in each watched namespace is reconciled to Ready; the ServiceAccount has no cluster-wide rights', async () => {
  for (const namespace of WATCHED) await apply([pool('relay')], { namespace });
  for (const namespace of WATCHED) {
    await waitFor(`pool relay in ${namespace} Ready`, async () => condition(await getJson(['-n', namespace, 'get', 'virtualmtapool', 'relay']), 'Ready')?.status === 'True', 240_000);
  }
  const serviceAccount = `system:serviceaccount:${RELEASE_NAMESPACE}:${NAMESPACE_RELEASE}-vmta-operator`;
  const canI = async (...args: string[]) => (await kubectlResult(['auth', 'can-i', ...args, `--as=${serviceAccount}`])).stdout.trim();
  assert.equal(await canI('create', 'statefulsets.apps', '-n', WATCHED[0]!), 'yes');
  assert.equal(await canI('list', 'virtualmtapools.vmta.dev', '--all-namespaces'), 'no');
  assert.equal(await canI('create', 'configmaps', '-n', 'default'), 'no');
});
