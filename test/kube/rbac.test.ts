import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { renderOperatorRole } from '../../operator/kube/rbac.ts';
import { OPERATOR_PERMISSIONS } from '../../operator/kube/resources.ts';
import type { VmtaOperator } from '../../operator/controller/operator.ts';
import type { FakeKubeApi, StoredObject } from '../fixtures/fake-kube-api.ts';
import { condition, loadExamples, NAMESPACE, startOperator } from '../controller/harness.ts';
import { httpRelayDrainClient } from '../../operator/controller/relay-drain-client.ts';
import { eventually, startFakeApi } from './helpers.ts';

const GROUPS: Record<string, string> = {
  configmaps: '', services: '', secrets: '', pods: '', events: '',
  statefulsets: 'apps', deployments: 'apps', poddisruptionbudgets: 'policy', leases: 'coordination.k8s.io',
  smtplisteners: 'vmta.dev', relaypolicies: 'vmta.dev', virtualmtapools: 'vmta.dev',
};

let api: FakeKubeApi;
let operator: VmtaOperator;

before(async () => {
  const started = await startFakeApi();
  api = started.api;
  await loadExamples(api);
  operator = startOperator(api, started.kubeconfig, {
    leaderElection: { namespace: NAMESPACE, leaseDurationMs: 2000, renewDeadlineMs: 1500, retryPeriodMs: 200 },
    eventAggregationWindowMs: 0,
    relayDrainClient: httpRelayDrainClient({ adminAddress: () => undefined }),
  });
  await operator.start();
});
after(async () => {
  await operator.stop();
  await api.close();
});

test('config/rbac/role.yaml is generated from OPERATOR_PERMISSIONS (npm run generate)', async () => {
  const committed = await readFile(path.join(import.meta.dirname, '..', '..', 'config', 'rbac', 'role.yaml'), 'utf8');
  assert.equal(committed, renderOperatorRole(), 'config/rbac/role.yaml is stale: run npm run generate');
});

test('the role grants exactly the verbs the operator uses through create, change, problems, pruning and leader election', async () => {
  const pool = () => api.get('vmta.dev/v1alpha1', 'VirtualMtaPool', NAMESPACE, 'outbound');
  const edit = (kind: string, name: string, change: (o: StoredObject) => void) => {
    const object = api.get('vmta.dev/v1alpha1', kind, NAMESPACE, name)!;
    change(object);
    api.put(object);
  };
  await eventually('Ready', () => condition(pool(), 'Ready')?.status === 'True');
  // Prune a Service, then the StatefulSet (spool persistent -> ephemeral), then the Deployment.
  api.remove('vmta.dev/v1alpha1', 'SmtpListener', NAMESPACE, 'alternate');
  edit('VirtualMtaPool', 'outbound', (p) => ((p.spec as { spool: { mode: string } }).spool.mode = 'ephemeral'));
  await eventually('a Deployment instead of the StatefulSet', () => api.get('apps/v1', 'Deployment', NAMESPACE, 'outbound') && !api.get('apps/v1', 'StatefulSet', NAMESPACE, 'outbound'));
  edit('VirtualMtaPool', 'outbound', (p) => ((p.spec as { spool: { mode: string } }).spool.mode = 'persistent'));
  await eventually('the StatefulSet back', () => api.get('apps/v1', 'StatefulSet', NAMESPACE, 'outbound') && !api.get('apps/v1', 'Deployment', NAMESPACE, 'outbound'));
  // A scale-in reads the admin token Secret for the drain (no relay answers here: it ends at its timeout).
  api.put({ apiVersion: 'v1', kind: 'Secret', metadata: { name: 'drain-token', namespace: NAMESPACE }, data: { token: Buffer.from('token').toString('base64') } });
  edit('VirtualMtaPool', 'outbound', (p) => Object.assign(p.spec as object, { admin: { tokenSecretName: 'drain-token' }, drain: { timeout: '1s' }, replicas: 1 }));
  await eventually('the drain timed out', () => condition(pool(), 'Draining')?.reason === 'DrainTimedOut');
  // A problem, reported twice: an Event is created, then its count patched.
  edit('SmtpListener', 'mx', (l) => ((l.spec as { relayPolicyRef: { name: string } }).relayPolicyRef.name = 'missing'));
  // Ready=False for this problem (not for a step before it, such as the drain's scale-in under load): its Event exists now.
  await eventually('Ready=False for the missing policy', () => condition(pool(), 'Ready')?.status === 'False' && condition(pool(), 'Ready')?.reason === 'PolicyNotFound');
  await eventually('the PolicyNotFound Event', () => api.list('v1', 'Event', NAMESPACE).some((e) => e.reason === 'PolicyNotFound'));
  edit('VirtualMtaPool', 'outbound', (p) => (p.metadata.annotations = { touched: '1' }));
  await eventually('the event count patched', () => api.list('v1', 'Event', NAMESPACE).some((e) => e.reason === 'PolicyNotFound' && Number(e.count) >= 2));
  await eventually('lease renewed', () => api.requests.some((r) => r.resource === 'leases' && r.verb === 'update'));

  // Watches go through @kubernetes/client-node's Watch (its own user agent); only the operator watches here.
  const used = new Set(api.requests.filter((r) => r.userAgent?.startsWith('vmta-operator') || r.verb === 'watch').map((r) => `${GROUPS[r.resource]}|${r.resource}${r.subresource ? `/${r.subresource}` : ''}|${r.verb}`));
  const declared = new Set(OPERATOR_PERMISSIONS.flatMap((rule) => rule.resources.flatMap((resource) => rule.verbs.map((verb) => `${rule.group}|${resource}|${verb}`))));
  assert.deepEqual([...used].filter((u) => !declared.has(u)).sort(), [], 'every request is granted');
  assert.deepEqual([...declared].filter((d) => !used.has(d)).sort(), [], 'every grant is used');
});
