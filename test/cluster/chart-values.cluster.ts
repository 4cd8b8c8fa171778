// Every kind the chart renders with every option on (ci/all-on-values.yaml) is accepted by the
// real API server, and the operator runs with those values: three replicas electing one leader
// on a Lease in the release namespace, under the chart's ServiceAccount. The registry of the
// values file is replaced by the image the node has; CRDs are the chart's, already installed by
// the shared release, so this release leaves crds.install off (one owner per CRD). The pool
// namespaces the values name for NetworkPolicies are created here (and only those are removed).
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, test } from 'node:test';
import { parse, parseAllDocuments } from 'yaml';
import { CHART_DIR, helm, imageValues, installRelease, uninstallRelease } from './support/chart.ts';
import { clusterEnv } from './support/env.ts';
import { apply, getJson, kubectl, kubectlResult, waitFor } from './support/kubectl.ts';
import { monitoringCrds } from './support/monitoring-crds.ts';

const env = clusterEnv();
const NAMESPACE = `vmta-allon-${process.pid}`;
const RELEASE = 'allon';
const ALL_ON = `${CHART_DIR}/ci/all-on-values.yaml`;
const overrides = [`operator.relayImage=${env.image}`, 'crds.install=false', 'imagePullSecrets=null'];
/** The namespaces the all-on values put NetworkPolicies in (cluster scope lists its pool namespaces). */
const POLICY_NAMESPACES = ((parse(readFileSync(ALL_ON, 'utf8')) as { networkPolicy?: { namespaces?: string[] } }).networkPolicy?.namespaces ?? []);
const createdNamespaces: string[] = [];

before(async () => {
  await apply(monitoringCrds());
  await waitFor('the monitoring CRDs established', async () => (await kubectlResult(['wait', '--for=condition=Established', 'crd/servicemonitors.monitoring.coreos.com', 'crd/podmonitors.monitoring.coreos.com', 'crd/prometheusrules.monitoring.coreos.com', '--timeout=30s'])).code === 0);
  if ((await kubectlResult(['get', 'namespace', 'monitoring'])).code !== 0) await kubectl(['create', 'namespace', 'monitoring']);
  for (const namespace of POLICY_NAMESPACES) {
    if ((await kubectlResult(['get', 'namespace', namespace])).code === 0) continue;
    await kubectl(['create', 'namespace', namespace]);
    createdNamespaces.push(namespace);
  }
});

after(async () => {
  await uninstallRelease(RELEASE, NAMESPACE).catch((error: Error) => console.error(error.message));
  for (const namespace of [NAMESPACE, ...createdNamespaces]) {
    await kubectl(['delete', 'namespace', namespace, '--ignore-not-found', '--wait=true', '--timeout=120s']).catch((error: Error) => console.error(error.message));
  }
});

test('the chart with every option on renders only objects the API server accepts (server dry-run, CRDs included)', async () => {
  const rendered = await helm(['template', RELEASE, CHART_DIR, '--namespace', NAMESPACE, '--values', ALL_ON, ...imageValues(env.image).flatMap((value) => ['--set', value])]);
  const kinds = new Set(parseAllDocuments(rendered).map((document) => (document.toJS() as { kind?: string } | null)?.kind).filter(Boolean));
  for (const kind of ['CustomResourceDefinition', 'Deployment', 'ServiceAccount', 'ClusterRole', 'ClusterRoleBinding', 'Role', 'RoleBinding', 'Service', 'ServiceMonitor', 'PodMonitor', 'PrometheusRule', 'ConfigMap', 'NetworkPolicy']) {
    assert.ok(kinds.has(kind), `all-on renders a ${kind} (rendered: ${[...kinds].join(', ')})`);
  }
  await kubectl(['create', 'namespace', NAMESPACE]);
  const result = await kubectl(['apply', '--dry-run=server', '-f', '-'], { input: rendered });
  assert.equal(result.trim().split('\n').length, parseAllDocuments(rendered).filter((document) => document.toJS()).length, result);
});

test('helm install with every option on: three operator pods Ready, one leader on the Lease in the release namespace', async () => {
  await kubectl(['delete', 'namespace', NAMESPACE, '--wait=true']);
  await installRelease({ release: RELEASE, namespace: NAMESPACE, image: env.image, valuesFiles: [ALL_ON], set: overrides });
  const deployment = await getJson(['-n', NAMESPACE, 'get', 'deployment', 'vmta']);
  assert.equal(deployment.status.readyReplicas, 3);
  assert.ok(deployment.spec.template.spec.containers[0].args.includes('--max-concurrent-reconciles=8'));
  const lease = await waitFor('a leader on the Lease', async () => {
    const leases = await getJson<{ items: { metadata: { name: string }; spec: { holderIdentity?: string } }[] }>(['-n', NAMESPACE, 'get', 'leases']);
    return leases.items.find((item) => item.spec.holderIdentity);
  }, 60_000);
  const pods = await getJson<{ items: { metadata: { name: string } }[] }>(['-n', NAMESPACE, 'get', 'pods', '-l', 'app.kubernetes.io/name=vmta-operator']);
  assert.ok(pods.items.some((pod) => lease.spec.holderIdentity!.startsWith(`${pod.metadata.name}_`)), `the holder ${lease.spec.holderIdentity} is one of the release's pods`);
  for (const kind of ['servicemonitors', 'podmonitors', 'prometheusrules']) {
    const found = await kubectlResult(['-n', NAMESPACE, 'get', kind, '-o', 'name']);
    assert.match(found.stdout, /\S/, `the release's ${kind} are stored: ${found.stderr}`);
  }
});
