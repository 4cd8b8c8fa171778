// The chart's NetworkPolicy for relay pods, rendered by helm and read with NetworkPolicy
// semantics (a small evaluator below: a connection is admitted when one ingress rule matches its
// port and its source): for the pods the operator really renders for examples/, every listener
// port admits anyone, and the admin port only the operator's pods, peer relays of the namespace
// and the configured monitoring pods; pods of other namespaces, other pods of the namespace and
// clients outside the cluster are refused on it. One policy per namespace where relays run.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { renderPool } from '../../operator/render/pool.ts';
import { ALL_ON_VALUES, findAll, NAMESPACE_SCOPE_VALUES, renderChart } from './helm.ts';
import type { Manifest } from './kubernetes-schemas.ts';
import { exampleInput } from '../render/example-resources.ts';

interface Selector {
  matchLabels?: Record<string, string>;
  matchExpressions?: unknown[];
}
interface Peer {
  namespaceSelector?: Selector;
  podSelector?: Selector;
  ipBlock?: unknown;
}
interface Rule {
  ports?: { protocol?: string; port?: number | string; endPort?: number }[];
  from?: Peer[];
}
interface Policy extends Manifest {
  spec: { podSelector: Selector; policyTypes: string[]; ingress: Rule[] };
}

/** A source of traffic: a pod (its namespace's labels and its own) or a client outside the cluster. */
type Source = { namespace: string; pod: Record<string, string> } | 'outside';

function matches(selector: Selector, labels: Record<string, string>): boolean {
  assert.equal(selector.matchExpressions, undefined, 'the evaluator reads matchLabels only');
  return Object.entries(selector.matchLabels ?? {}).every(([key, value]) => labels[key] === value);
}

function peerAdmits(peer: Peer, source: Source, policyNamespace: string): boolean {
  if (source === 'outside') return false;
  assert.equal(peer.ipBlock, undefined, 'no ipBlock peers expected');
  const namespaceLabels = { 'kubernetes.io/metadata.name': source.namespace };
  const namespaceOk = peer.namespaceSelector ? matches(peer.namespaceSelector, namespaceLabels) : source.namespace === policyNamespace;
  return namespaceOk && (peer.podSelector ? matches(peer.podSelector, source.pod) : true);
}

function admits(policy: Policy, port: number, source: Source): boolean {
  return policy.spec.ingress.some((rule) => {
    const portOk = !rule.ports || rule.ports.some((entry) => (entry.protocol ?? 'TCP') === 'TCP' && typeof entry.port === 'number' && port >= entry.port && port <= (entry.endPort ?? entry.port));
    const fromOk = !rule.from || rule.from.some((peer) => peerAdmits(peer, source, policy.metadata.namespace!));
    return portOk && fromOk;
  });
}

const policies = (manifests: Manifest[]) => findAll(manifests, 'NetworkPolicy') as Policy[];
const OPERATOR_POD = { 'app.kubernetes.io/name': 'vmta-operator', 'app.kubernetes.io/instance': 'vmta' };

describe('the relay NetworkPolicy', { timeout: 300_000 }, () => {
  test('is on by default in the release namespace and selects the relay pods the operator renders', async () => {
    const [policy, ...more] = policies(renderChart());
    assert.ok(policy, 'a NetworkPolicy is rendered with default values');
    assert.equal(more.length, 0);
    assert.equal(policy.metadata.namespace, 'mail');
    assert.deepEqual(policy.spec.policyTypes, ['Ingress'], 'egress (delivery) is not limited');
    const rendered = renderPool(await exampleInput());
    const workload = rendered.objects.find((object) => object.kind === 'StatefulSet') as unknown as { spec: { template: { metadata: { labels: Record<string, string> } } } };
    assert.ok(matches(policy.spec.podSelector, workload.spec.template.metadata.labels), 'the relay pods carry the labels it selects');
    assert.equal(matches(policy.spec.podSelector, OPERATOR_POD), false, 'the operator pods are not selected');
  });

  test('every listener port of the rendered relay pods admits anyone; the admin port only the operator, peer relays and monitoring', async () => {
    const [policy] = policies(renderChart());
    const rendered = renderPool(await exampleInput());
    const workload = rendered.objects.find((object) => object.kind === 'StatefulSet') as unknown as { spec: { template: { metadata: { labels: Record<string, string> }; spec: { containers: { ports: { name: string; containerPort: number }[] }[] } } } };
    const relayLabels = workload.spec.template.metadata.labels;
    const ports = workload.spec.template.spec.containers.flatMap((container) => container.ports);
    const admin = ports.find((port) => port.name === 'admin')!;
    assert.equal(admin.containerPort, 8025);
    const sources: Record<string, Source> = {
      outside: 'outside',
      'a pod of another namespace': { namespace: 'apps', pod: { app: 'web' } },
      'another pod of the namespace': { namespace: 'mail', pod: { app: 'web' } },
      'a relay of another namespace': { namespace: 'other-mail', pod: relayLabels },
      'the operator': { namespace: 'mail', pod: OPERATOR_POD },
      'a peer relay': { namespace: 'mail', pod: relayLabels },
      'Prometheus in monitoring': { namespace: 'monitoring', pod: { 'app.kubernetes.io/name': 'prometheus' } },
    };
    const mayReachAdmin = new Set(['the operator', 'a peer relay', 'Prometheus in monitoring']);
    const smtpPorts = [...ports.filter((port) => port.name !== 'admin').map((port) => port.containerPort), 25, 465, 587, 2525, 1, 8024, 8026, 65535];
    assert.ok(smtpPorts.length > 8, 'the example pool has listener ports');
    for (const [name, source] of Object.entries(sources)) {
      for (const port of smtpPorts) assert.equal(admits(policy!, port, source), true, `${name} reaches SMTP port ${port}`);
      assert.equal(admits(policy!, admin.containerPort, source), mayReachAdmin.has(name), `${name} ${mayReachAdmin.has(name) ? 'reaches' : 'is refused'} on the admin port`);
    }
  });

  test('one policy per listed namespace, with the configured monitoring selectors', () => {
    const rendered = policies(renderChart({ valuesFiles: [ALL_ON_VALUES] }));
    assert.deepEqual(rendered.map((policy) => policy.metadata.namespace).sort(), ['bulk-mail', 'mail']);
    for (const policy of rendered) {
      assert.equal(admits(policy, 8025, { namespace: 'observability', pod: { 'app.kubernetes.io/name': 'prometheus' } }), true);
      assert.equal(admits(policy, 8025, { namespace: 'observability', pod: { 'app.kubernetes.io/name': 'grafana' } }), false, 'only the selected monitoring pods');
      assert.equal(admits(policy, 8025, { namespace: 'monitoring', pod: { 'app.kubernetes.io/name': 'prometheus' } }), false, 'the default monitoring namespace no longer');
      assert.equal(admits(policy, 8025, { namespace: 'mail', pod: { 'app.kubernetes.io/name': 'vmta-operator', 'app.kubernetes.io/instance': 'vmta' } }), true, 'the operator of the release namespace');
    }
  });

  test('in namespace scope, one policy per watched namespace; none when disabled', () => {
    const scoped = policies(renderChart({ valuesFiles: [NAMESPACE_SCOPE_VALUES] }));
    assert.deepEqual(scoped.map((policy) => policy.metadata.namespace).sort(), ['mail', 'mail-staging'], 'the rbac.namespaces of ci/namespace-scope-values.yaml');
    assert.deepEqual(policies(renderChart({ set: ['networkPolicy.enabled=false'] })), []);
  });
});
