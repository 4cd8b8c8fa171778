// The operator accepts the command line the chart gives it, whatever the values: a flag it
// refuses (e.g. --log-format) would crash-loop the install, and namespace mode must watch each
// listed namespace and keep its Lease in the release namespace where its Role is.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseOperatorOptions } from '../../cli/operator-command.ts';
import { ALL_ON_VALUES, findOne, NAMESPACE_SCOPE_VALUES, renderChart } from './helm.ts';

function operatorArgs(options: Parameters<typeof renderChart>[0]): string[] {
  const deployment = findOne(renderChart(options), 'Deployment') as unknown as { spec: { template: { spec: { containers: { args: string[] }[] } } } };
  const [command, ...args] = deployment.spec.template.spec.containers[0]!.args;
  assert.equal(command, 'operator');
  return args;
}

for (const [name, valuesFiles] of [['default values', []], ['ci/all-on-values.yaml', [ALL_ON_VALUES]], ['ci/namespace-scope-values.yaml', [NAMESPACE_SCOPE_VALUES]]] as const) {
  test(`the operator accepts the arguments the chart renders with ${name}`, () => {
    const args = operatorArgs({ valuesFiles: [...valuesFiles] });
    assert.doesNotThrow(() => parseOperatorOptions(args, { POD_NAMESPACE: 'mail' }), `vmta operator ${args.join(' ')}`);
  });
}

test('namespace mode with several namespaces and replicas: each namespace watched, the Lease in the release namespace', () => {
  const args = operatorArgs({ valuesFiles: [NAMESPACE_SCOPE_VALUES], set: ['replicaCount=2'] });
  // the chart renders in namespace "mail"; POD_NAMESPACE is what the pod gets from the downward API
  const options = parseOperatorOptions(args, { POD_NAMESPACE: 'mail' })!;
  assert.deepEqual(options.namespaces, ['mail', 'mail-staging']);
  assert.equal(options.leaderElect, true);
  assert.equal(options.leaseNamespace, 'mail');
  const elsewhere = parseOperatorOptions(operatorArgs({ set: ['rbac.scope=namespace', 'rbac.namespaces={team-a,team-b}', 'replicaCount=2'] }), { POD_NAMESPACE: 'mail' })!;
  assert.deepEqual([elsewhere.namespaces, elsewhere.leaseNamespace], [['team-a', 'team-b'], 'mail']);
});
