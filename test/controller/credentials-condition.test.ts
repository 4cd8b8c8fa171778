// In the cluster the operator reports unusable AUTH credentials before a relay would refuse them:
// emptying the users Secret of the example pool makes each AUTH-required SmtpListener Ready=False
// with reason NoCredentials, the pool not Ready with the same words, and a Warning Event; a user
// value the relay cannot parse makes the RelayPolicy InvalidCredentials. The running ConfigMap is
// left alone, and repairing the Secret makes everything Ready again.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { VmtaOperator } from '../../operator/controller/operator.ts';
import type { FakeKubeApi, StoredObject } from '../fixtures/fake-kube-api.ts';
import { eventually, startFakeApi } from '../kube/helpers.ts';
import { condition, fakeRelayReader, loadExamples, NAMESPACE, startOperator } from './harness.ts';

let api: FakeKubeApi;
let operator: VmtaOperator;
const get = (apiVersion: string, kind: string, name: string) => api.get(apiVersion, kind, NAMESPACE, name);
const pool = () => get('vmta.dev/v1alpha1', 'VirtualMtaPool', 'outbound');
const encoded = (values: Record<string, string>) => Object.fromEntries(Object.entries(values).map(([key, value]) => [key, Buffer.from(value).toString('base64')]));

function setUsers(values: Record<string, string>): void {
  const secret = get('v1', 'Secret', 'relay-users')!;
  const { stringData: _stringData, ...rest } = secret as StoredObject & { stringData?: unknown };
  api.put({ ...rest, data: encoded(values) } as StoredObject);
}

async function ready(what: string, object: () => StoredObject | undefined, status: 'True' | 'False', reason?: string) {
  return eventually(what, () => {
    const found = condition(object(), 'Ready');
    return found?.status === status && (reason === undefined || found.reason === reason) ? found : undefined;
  });
}

before(async () => {
  const started = await startFakeApi({ bookmarkIntervalMs: 500 });
  api = started.api;
  await loadExamples(api);
  operator = startOperator(api, started.kubeconfig, { healthPort: 0, healthHost: '127.0.0.1', resyncPeriodMs: 1500, configHashReader: fakeRelayReader(api) });
  await operator.start();
  await ready('the example pool Ready', pool, 'True');
});

after(async () => {
  await operator?.stop();
  await api?.close();
});

test('a users Secret emptied of every user: NoCredentials on each AUTH-required listener, an Event, and the running config kept', async () => {
  const configBefore = get('v1', 'ConfigMap', 'outbound-config')!.metadata.resourceVersion;
  setUsers({});
  for (const name of ['submission', 'submissions', 'alternate']) {
    const listener = await ready(`${name} NoCredentials`, () => get('vmta.dev/v1alpha1', 'SmtpListener', name), 'False', 'NoCredentials');
    assert.match(listener.message, new RegExp(`SmtpListener "${name}" spec\\.auth\\.required: no client can authenticate: relay policy "submission" spec\\.users\\.secretName Secret "relay-users" holds no user`));
  }
  assert.equal(condition(get('vmta.dev/v1alpha1', 'SmtpListener', 'mx'), 'Ready')?.reason, 'PoolNotRendered', 'the relay listener is not blamed');
  const poolReady = await ready('the pool not Ready', pool, 'False');
  assert.match(poolReady.message, /no client can authenticate/);
  const events = await eventually('a NoCredentials Warning event', () => {
    const found = api.list('v1', 'Event', NAMESPACE).filter((event) => event.reason === 'NoCredentials' && event.type === 'Warning');
    return found.length > 0 ? found : undefined;
  });
  assert.match(String(events[0]!.message), /no client can authenticate/);
  assert.equal(get('v1', 'ConfigMap', 'outbound-config')!.metadata.resourceVersion, configBefore, 'the running config is left alone');
  setUsers({ alice: 'demo-password-alice', bob: 'demo-password-bob' });
  await ready('the pool Ready again', pool, 'True');
});

test('a user value the relay cannot parse: InvalidCredentials on the RelayPolicy naming Secret and key', async () => {
  setUsers({ alice: 'demo-password-alice', bob: 'line one\nline two\n' });
  const policy = await ready('the policy InvalidCredentials', () => get('vmta.dev/v1alpha1', 'RelayPolicy', 'submission'), 'False', 'InvalidCredentials');
  assert.match(policy.message, /RelayPolicy "submission" spec\.users\.secretName: Secret "relay-users" key "bob": holds more than one line/);
  assert.doesNotMatch(policy.message, /line one|line two/, 'the value is never shown');
  setUsers({ alice: 'demo-password-alice', bob: 'demo-password-bob' });
  await ready('the policy Ready again', () => get('vmta.dev/v1alpha1', 'RelayPolicy', 'submission'), 'True');
  await ready('the pool Ready again', pool, 'True');
});
