// The chart grants exactly what the operator's client may do: OPERATOR_PERMISSIONS of
// operator/kube/resources.ts (which the client enforces), the Lease rule in the release
// namespace and everything else in the watched namespaces.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { OWNED_KINDS } from '../../operator/controller/reconciler.ts';
import { isPermitted, OPERATOR_PERMISSIONS, RESOURCE_TYPES } from '../../operator/kube/resources.ts';
import { findOne, renderChart } from './helm.ts';

type PermissionRule = (typeof OPERATOR_PERMISSIONS)[number];
interface PolicyRule {
  apiGroups: string[];
  resources: string[];
  verbs: string[];
}

/** group/resource -> sorted verbs, whatever way the rules are grouped. */
function grants(rules: Array<{ groups: string[]; resources: string[]; verbs: string[] }>): Record<string, string[]> {
  const result: Record<string, Set<string>> = {};
  for (const rule of rules) {
    for (const group of rule.groups) {
      for (const resource of rule.resources) {
        const key = `${group}/${resource}`;
        result[key] ??= new Set();
        for (const verb of rule.verbs) result[key].add(verb);
      }
    }
  }
  return Object.fromEntries(Object.entries(result).map(([key, verbs]) => [key, [...verbs].sort()]));
}

test('chart RBAC equals OPERATOR_PERMISSIONS of operator/kube/resources.ts', () => {
  const isLease = (rule: PermissionRule): boolean => rule.group === 'coordination.k8s.io' && rule.resources.includes('leases');
  const manifests = renderChart();
  const toGrants = (rules: PolicyRule[]) => grants(rules.map((rule) => ({ groups: rule.apiGroups, resources: rule.resources, verbs: rule.verbs })));
  const fromCode = (rules: PermissionRule[]) => grants(rules.map((rule) => ({ groups: [rule.group], resources: rule.resources, verbs: rule.verbs })));
  const clusterRole = findOne(manifests, 'ClusterRole') as unknown as { rules: PolicyRule[] };
  assert.deepEqual(toGrants(clusterRole.rules), fromCode(OPERATOR_PERMISSIONS.filter((rule) => !isLease(rule))), 'watched-namespace permissions');
  const leaseRole = findOne(manifests, 'Role', 'vmta-vmta-operator-leader-election') as unknown as { rules: PolicyRule[] };
  assert.deepEqual(toGrants(leaseRole.rules), fromCode(OPERATOR_PERMISSIONS.filter(isLease)), 'release-namespace Lease permissions');
});

test('every kind the operator applies is granted create as well as patch (server-side apply creates what is missing)', () => {
  for (const kind of OWNED_KINDS) {
    const type = RESOURCE_TYPES[kind];
    for (const verb of ['create', 'patch'] as const) assert.ok(isPermitted(type.group, type.plural, verb), `${verb} on ${type.group || 'core'}/${type.plural} (${kind})`);
  }
});
