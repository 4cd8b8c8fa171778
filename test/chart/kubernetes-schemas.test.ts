// The validator the chart tests rely on must refuse what the API server would: a wrong type
// deep in a pod template, a missing required field, and a kind it has no schema for.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { validateManifest, type Manifest } from './kubernetes-schemas.ts';

function statefulSet(containers: unknown[]): Manifest {
  return {
    apiVersion: 'apps/v1',
    kind: 'StatefulSet',
    metadata: { name: 'relay' },
    spec: { serviceName: 'relay', selector: { matchLabels: { app: 'relay' } }, template: { metadata: { labels: { app: 'relay' } }, spec: { containers } } },
  };
}

test('a valid StatefulSet passes', () => {
  validateManifest(statefulSet([{ name: 'mta', image: 'vmta:0.1.0', ports: [{ name: 'admin', containerPort: 8025 }] }]));
});

test('a StatefulSet with a numeric container port name is refused, naming the field', () => {
  assert.throws(
    () => validateManifest(statefulSet([{ name: 'mta', image: 'vmta:0.1.0', ports: [{ name: 8025, containerPort: 8025 }] }])),
    /StatefulSet relay is not a valid apps\/v1\/StatefulSet: .*ports\/0\/name must be string/,
  );
});

test('a container without a name is refused as missing a required field', () => {
  assert.throws(() => validateManifest(statefulSet([{ image: 'vmta:0.1.0' }])), /containers\/0 must have required property name/);
});

test('a ServiceMonitor with a malformed interval is refused by the prometheus-operator schema', () => {
  const serviceMonitor: Manifest = {
    apiVersion: 'monitoring.coreos.com/v1',
    kind: 'ServiceMonitor',
    metadata: { name: 'vmta' },
    spec: { selector: {}, endpoints: [{ port: 'metrics', interval: 'every minute' }] },
  };
  assert.throws(() => validateManifest(serviceMonitor), /endpoints\/0\/interval must match pattern/);
});

test('a kind without a known schema is refused rather than passed unchecked', () => {
  assert.throws(
    () => validateManifest({ apiVersion: 'networking.k8s.io/v1', kind: 'Ingress', metadata: { name: 'x' } }),
    /no schema known for networking.k8s.io\/v1\/Ingress/,
  );
});
