// The chart as users install it: the operator runs in a pod from the project image under the
// chart's own ServiceAccount, which holds exactly the operator's permissions (server-side apply
// needs create), nothing like cluster-admin.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { clusterEnv } from './support/env.ts';
import { getJson, kubectlResult } from './support/kubectl.ts';
import { RELEASE } from './support/chart.ts';

const env = clusterEnv();
const serviceAccount = `system:serviceaccount:${env.operatorNamespace}:${RELEASE}-vmta-operator`;

test('the operator runs in a pod of the project image, Ready, under the chart ServiceAccount', async () => {
  const pods = await getJson<{ items: { spec: { serviceAccountName: string; containers: { image: string }[] }; status: { conditions?: { type: string; status: string }[] } }[] }>(['-n', env.operatorNamespace, 'get', 'pods', '-l', 'app.kubernetes.io/name=vmta-operator']);
  assert.equal(pods.items.length, 1);
  const pod = pods.items[0]!;
  assert.equal(pod.spec.containers[0]!.image, env.image);
  assert.equal(`system:serviceaccount:${env.operatorNamespace}:${pod.spec.serviceAccountName}`, serviceAccount);
  assert.equal(pod.status.conditions?.find((c) => c.type === 'Ready')?.status, 'True');
});

test('the chart ServiceAccount may create and apply what the operator owns, and nothing beyond it', async () => {
  const canI = async (verb: string, resource: string, namespace = 'default') =>
    (await kubectlResult(['auth', 'can-i', verb, resource, '-n', namespace, `--as=${serviceAccount}`])).stdout.trim();
  for (const resource of ['services', 'configmaps', 'statefulsets.apps', 'deployments.apps', 'poddisruptionbudgets.policy']) {
    assert.equal(await canI('create', resource), 'yes', `create ${resource}`);
    assert.equal(await canI('patch', resource), 'yes', `patch ${resource}`);
  }
  // Secrets: read only (list/watch for the cache, get for a pool's admin token when it drains)
  assert.equal(await canI('get', 'secrets'), 'yes', 'get secrets (the drain token)');
  for (const [verb, resource] of [['create', 'clusterroles.rbac.authorization.k8s.io'], ['create', 'secrets'], ['patch', 'secrets'], ['delete', 'secrets'], ['create', 'pods'], ['delete', 'configmaps'], ['create', 'leases.coordination.k8s.io']]) {
    assert.equal(await canI(verb!, resource!), 'no', `${verb} ${resource} must be refused`);
  }
  assert.equal(await canI('create', 'leases.coordination.k8s.io', env.operatorNamespace), 'yes', 'the Lease in the release namespace');
});
