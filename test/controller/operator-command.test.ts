import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseOperatorOptions } from '../../cli/operator-command.ts';
import { podReadiness, secretKeysOnly } from '../../operator/controller/cache-transforms.ts';

test('vmta operator options: defaults, namespace scope and leader election settings', () => {
  const options = parseOperatorOptions(['--image', 'img:1', '--namespace', 'mail,mail-staging', '--leader-elect', '--leader-elect-lease-duration', '30s', '--leader-elect-renew-deadline', '20s', '--metrics-bind-address', '127.0.0.1:9090'], {})!;
  assert.deepEqual(
    [options.image, options.namespaces, options.leaderElect, options.leaseNamespace, options.leaseDurationMs, options.renewDeadlineMs, options.retryPeriodMs, options.metrics],
    ['img:1', ['mail', 'mail-staging'], true, 'default', 30_000, 20_000, 2_000, { host: '127.0.0.1', port: 9090 }],
  );
  // the Lease goes where the operator runs (its Role is there), never into a watched namespace
  const scoped = parseOperatorOptions(['--image', 'x', '--namespace', 'mail', '--leader-elect'], { POD_NAMESPACE: 'vmta-system' })!;
  assert.deepEqual([scoped.namespaces, scoped.leaseNamespace], [['mail'], 'vmta-system']);
  assert.equal(parseOperatorOptions(['--image', 'x', '--namespace', 'mail'], {})!.leaseNamespace, 'mail');
  const cluster = parseOperatorOptions([], { VMTA_IMAGE: 'img:2', POD_NAMESPACE: 'ops' })!;
  assert.deepEqual([cluster.image, cluster.namespaces, cluster.leaderElect, cluster.leaseNamespace, cluster.metrics], ['img:2', undefined, false, 'ops', { host: '0.0.0.0', port: 8080 }]);
  assert.equal(parseOperatorOptions(['--image', 'x', '--metrics-bind-address', '0'], {})!.metrics, undefined);
  assert.equal(parseOperatorOptions(['--help'], {}), undefined);
});

test('vmta operator refuses bad options naming the flag and value', () => {
  assert.throws(() => parseOperatorOptions([], {}), /--image: required/);
  assert.throws(() => parseOperatorOptions(['--image', 'x', '--metrics-bind-address', 'localhost'], {}), /--metrics-bind-address: expected host:port.*"localhost"/);
  assert.throws(() => parseOperatorOptions(['--image', 'x', '--leader-elect-lease-duration', 'soon'], {}), /--leader-elect-lease-duration/);
  assert.throws(() => parseOperatorOptions(['--image', 'x', '--leader-elect-renew-deadline', '20s'], {}), /renew-deadline: must be shorter/);
  for (const bad of ['Mail', 'a,,b', 'a,', '-a', 'a_b', 'a'.repeat(64), 'mail, mail']) {
    assert.throws(() => parseOperatorOptions(['--image', 'x', `--namespace=${bad}`], {}), new RegExp(`--namespace: .*in "${bad}"|--namespace: "mail" is listed twice`), bad);
  }
  assert.throws(() => parseOperatorOptions(['--image', 'x', '--max-concurrent-reconciles', '0'], {}), /--max-concurrent-reconciles: expected a positive integer \(got "0"\)/);
});

test('the operator caches Secret key names but never their values, and of pods only readiness, phase and whether the relay runs', () => {
  const secret = secretKeysOnly({ apiVersion: 'v1', kind: 'Secret', metadata: { name: 's', namespace: 'n', managedFields: [{}] }, data: { alice: 'cGFzcw==', carol: '' }, stringData: { bob: '{SCRYPT}1024$8$1$c2FsdHNhbHQ=$a2V5a2V5a2V5a2V5a2V5a2V5' } });
  const userSecrets = { alice: { kind: 'clear' }, carol: { problem: 'key "carol" is empty' }, bob: { kind: 'scrypt' } };
  assert.deepEqual(secret, { apiVersion: 'v1', kind: 'Secret', metadata: { name: 's', namespace: 'n', uid: undefined, resourceVersion: undefined }, data: { alice: '', carol: '', bob: '' }, vmtaPublicKeys: {}, vmtaUserSecrets: userSecrets });
  assert.doesNotMatch(JSON.stringify(secret), /cGFzcw|pass|c2FsdHNhbHQ|a2V5/, 'no value, encoded or not, is kept');
  const pod = podReadiness({
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: 'p-0', namespace: 'n', labels: { a: 'b' }, annotations: { big: 'x'.repeat(100) } },
    spec: { containers: [] },
    status: {
      podIP: '10.0.0.1',
      phase: 'Running',
      conditions: [{ type: 'Ready', status: 'True', lastTransitionTime: 't' }, { type: 'Initialized', status: 'True' }],
      containerStatuses: [
        { name: 'relay', ready: true, started: true, restartCount: 2, image: 'i', state: { running: { startedAt: 's' } }, lastState: { terminated: { exitCode: 1 } } },
        { name: 'sidecar', ready: true, started: true, state: { running: { startedAt: 's' } } },
      ],
    },
  });
  assert.deepEqual(pod.status, { podIP: '10.0.0.1', phase: 'Running', conditions: [{ type: 'Ready', status: 'True' }], containerStatuses: [{ name: 'relay', started: true, restartCount: 2, state: { running: { startedAt: 's' } } }] });
  assert.equal('spec' in pod, false);
});
