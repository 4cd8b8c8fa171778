// The operator's listener self-check end to end against the fake API server: the example pool's
// four listeners (relay, submission, submissions, alternate) are probed through their Services,
// which the test points at a real relay process serving those roles with a certificate from a
// test CA (carried as ca.crt in the listeners' TLS Secret), or at misbehaving servers. Status
// fields, the SelfCheck condition, Events (one per distinct outcome) and /metrics are checked.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { setTimeout } from 'node:timers/promises';
import type { VmtaOperator } from '../../operator/controller/operator.ts';
import type { FakeKubeApi, StoredObject } from '../fixtures/fake-kube-api.ts';
import { startMisbehavingSmtp, type MisbehavingSmtp } from '../fixtures/misbehaving-smtp.ts';
import { freePort } from '../fixtures/relay-process.ts';
import { startRoleRelay, type RoleRelay } from '../fixtures/role-relay.ts';
import { createTestCa, type TestCa, type TestCertificate } from '../fixtures/tls.ts';
import { eventually, startFakeApi } from '../kube/helpers.ts';
import { condition, loadExamples, NAMESPACE, startOperator } from './harness.ts';

const HOSTNAME = 'relay.example.com';
/** The example listeners and the role of each (the relay process names its listeners by role). */
const LISTENERS = { mx: 'relay', submission: 'submission', submissions: 'submissions', alternate: 'alternate' } as const;
const SERVICE_PORTS = { mx: 25, submission: 587, submissions: 465, alternate: 2525 } as const;

let ca: TestCa;
let certificate: TestCertificate;
let roleRelay: RoleRelay;
let api: FakeKubeApi;
let operator: VmtaOperator;
let kubeconfig: string;
/** Service name -> loopback port, over the relay's ports: how a test breaks one listener. */
const overrides = new Map<string, number>();
/** What the operator asked the address function for, by Service name: the Service it would connect to. */
const asked = new Map<string, { port: number; clusterIP?: string }>();

const listener = (name: string) => api.get('vmta.dev/v1alpha1', 'SmtpListener', NAMESPACE, name);
const status = (name: string) => (listener(name)?.status ?? {}) as Record<string, unknown>;
const selfCheckEvents = (name: string) => api.list('v1', 'Event', NAMESPACE).filter((event) => (event.involvedObject as { name?: string }).name === name && String(event.reason).startsWith('SelfCheck'));

async function metrics(): Promise<string> {
  return (await fetch(`http://127.0.0.1:${operator.healthPort}/metrics`)).text();
}

function sample(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

const stepSeries = (listenerName: string, step: string) => `vmta_listener_check_success{listener_namespace="${NAMESPACE}",listener="${listenerName}",pool="outbound",step="${step}"}`;

/** Changes the listener's spec (a generation bump) so the operator probes it again now. */
function touch(name: string, maxRecipients: number): void {
  const current = listener(name)!;
  const spec = current.spec as Record<string, unknown>;
  api.put({ ...current, spec: { ...spec, limits: { ...(spec.limits as object | undefined), maxRecipients } } } as StoredObject);
}

async function selfCheck(name: string, wanted: 'True' | 'False', reason: string, after?: string) {
  return eventually(`${name} SelfCheck ${wanted} ${reason}`, () => {
    const found = condition(listener(name), 'SelfCheck');
    const checkedAt = status(name).checkedAt;
    return found?.status === wanted && found.reason === reason && (after === undefined || (typeof checkedAt === 'string' && checkedAt > after)) ? found : undefined;
  }, 30_000).catch((error: Error) => {
    throw new Error(`${error.message}; status now ${JSON.stringify(status(name))}`);
  });
}

before(async () => {
  ca = createTestCa();
  certificate = ca.issue([HOSTNAME], { days: 60 });
  roleRelay = await startRoleRelay(certificate, HOSTNAME);
  const started = await startFakeApi({ bookmarkIntervalMs: 500 });
  api = started.api;
  await loadExamples(api);
  const secret = api.get('v1', 'Secret', NAMESPACE, 'relay-tls')!;
  const { stringData: _stringData, ...rest } = secret as StoredObject & { stringData?: unknown };
  const base64 = (value: Buffer) => value.toString('base64');
  api.put({ ...rest, data: { 'tls.crt': base64(certificate.cert), 'tls.key': base64(certificate.key), 'ca.crt': base64(ca.ca) } } as StoredObject);
  kubeconfig = started.kubeconfig;
  await startSelfCheckingOperator();
});

async function startSelfCheckingOperator(): Promise<void> {
  operator = startOperator(api, kubeconfig, {
    healthPort: 0,
    healthHost: '127.0.0.1',
    selfCheck: {
      stepTimeoutMs: 2000,
      confirmDelayMs: 300,
      address: (service) => {
        asked.set(service.name, { port: service.port, clusterIP: service.clusterIP });
        const listenerName = service.name.replace(/^outbound-/, '') as keyof typeof LISTENERS;
        return { host: '127.0.0.1', port: overrides.get(service.name) ?? roleRelay.ports.get(LISTENERS[listenerName])! };
      },
    },
  });
  await operator.start();
}

after(async () => {
  await operator?.stop();
  await api?.close();
  await roleRelay?.stop();
  ca?.cleanup();
});

test('every example listener passes: SelfCheck True, TLS version, certificate expiry and banner in status, a metric per step', async () => {
  for (const [name, port] of Object.entries(SERVICE_PORTS)) {
    const found = await selfCheck(name, 'True', 'Passed');
    assert.match(found.message, new RegExp(`outbound-${name}\\.${NAMESPACE}\\.svc:${port} passes every step: TLSv1\\.3 TLS_`));
    const fields = status(name);
    assert.equal(fields.tls, 'TLSv1.3');
    assert.match(String(fields.cipher), /^TLS_/);
    assert.match(String(fields.banner), /^relay\.example\.com /);
    assert.equal(fields.checkedAddress, `outbound-${name}.${NAMESPACE}.svc:${port}`);
    const daysLeft = (Date.parse(String(fields.certificateExpires)) - Date.now()) / 86_400_000;
    assert.ok(daysLeft > 58 && daysLeft <= 60, `certificateExpires ${fields.certificateExpires}`);
    assert.equal(condition(listener(name), 'Ready')?.status, 'True', 'Ready is kept beside SelfCheck');
    assert.deepEqual(selfCheckEvents(name), [], 'a first pass is no news');
    const service = api.get('v1', 'Service', NAMESPACE, `outbound-${name}`)!;
    assert.deepEqual(asked.get(`outbound-${name}`), { port, clusterIP: (service.spec as { clusterIP: string }).clusterIP }, 'the probe goes to the Service\'s cluster IP and port');
  }
  const text = await metrics();
  for (const name of Object.keys(SERVICE_PORTS)) {
    for (const step of ['connect', 'banner', 'ehlo', 'tls', 'expiry', 'chain', 'name', 'auth']) assert.equal(sample(text, stepSeries(name, step)), 1, `${name} ${step}`);
    const expiry = sample(text, `vmta_listener_certificate_expiry_seconds{listener_namespace="${NAMESPACE}",listener="${name}",pool="outbound"}`);
    assert.ok(expiry !== undefined && expiry > 58 * 86_400 && expiry <= 60 * 86_400, `expiry seconds ${expiry}`);
  }
});

test('a failure is reported at its step with one Warning Event per distinct failure, and recovery with a Normal Event', async () => {
  await selfCheck('submission', 'True', 'Passed');
  let leaky: MisbehavingSmtp | undefined = await startMisbehavingSmtp({ tlsMode: 'starttls', certificate, authBeforeTls: true });
  try {
    overrides.set('outbound-submission', leaky.port);
    touch('submission', 40);
    const leak = await selfCheck('submission', 'False', 'AuthCheckFailed');
    assert.match(leak.message, /fails at auth: AUTH is offered before TLS/);
    assert.equal(sample(await metrics(), stepSeries('submission', 'auth')), 0);
    assert.equal(sample(await metrics(), stepSeries('submission', 'connect')), 1);
    const first = await eventually('a Warning Event', () => (selfCheckEvents('submission').length > 0 ? selfCheckEvents('submission') : undefined));
    assert.deepEqual(first.map((event) => [event.type, event.reason]), [['Warning', 'SelfCheckAuthCheckFailed']]);

    const checkedAt = String(status('submission').checkedAt);
    await setTimeout(1100); // checkedAt has whole seconds: the next probe must show a later one
    touch('submission', 41);
    await selfCheck('submission', 'False', 'AuthCheckFailed', checkedAt);
    assert.equal(selfCheckEvents('submission').length, 1, 'the same failure again writes no Event');
    assert.equal(selfCheckEvents('submission')[0]!.count, 1);

    await leaky.close();
    leaky = undefined;
    overrides.set('outbound-submission', await freePort());
    touch('submission', 42);
    const refused = await selfCheck('submission', 'False', 'ConnectFailed');
    assert.match(refused.message, /fails at connect: .*connection refused/);
    const text = await metrics();
    assert.equal(sample(text, stepSeries('submission', 'connect')), 0);
    assert.equal(sample(text, stepSeries('submission', 'tls')), undefined, 'steps that did not run have no series');
    assert.equal(status('submission').tls, undefined, 'no TLS version when no TLS session was made');
    await eventually('a second Warning Event', () => (selfCheckEvents('submission').some((event) => event.reason === 'SelfCheckConnectFailed') ? true : undefined));
  } finally {
    await leaky?.close();
    overrides.delete('outbound-submission');
  }
  touch('submission', 43);
  await selfCheck('submission', 'True', 'Passed');
  await eventually('a Normal Event on recovery', () => (selfCheckEvents('submission').some((event) => event.type === 'Normal' && event.reason === 'SelfCheckPassed') ? true : undefined));
  assert.equal(status('submission').tls, 'TLSv1.3');
});

test('a failure that is gone when the confirming probe runs is neither shown nor an Event', async () => {
  await selfCheck('mx', 'True', 'Passed');
  const flaky = await startMisbehavingSmtp({ tlsMode: 'starttls', certificate, dropFirst: 1 });
  try {
    overrides.set('outbound-mx', flaky.port);
    touch('mx', 20);
    await eventually('the confirming probe shown', () => (/^misbehaving\.test /.test(String(status('mx').banner)) ? true : undefined));
    assert.ok(flaky.connections >= 2, `the dropped connection was probed once more (${flaky.connections} connections)`);
    assert.equal(condition(listener('mx'), 'SelfCheck')?.reason, 'Passed');
    assert.deepEqual(selfCheckEvents('mx'), []);
  } finally {
    overrides.delete('outbound-mx');
    await flaky.close();
  }
});

test('an operator restart does not repeat the Warning Event of a failure it already reported', async () => {
  await selfCheck('submissions', 'True', 'Passed');
  overrides.set('outbound-submissions', await freePort());
  try {
    touch('submissions', 30);
    await selfCheck('submissions', 'False', 'ConnectFailed');
    await eventually('the Warning Event', () => (selfCheckEvents('submissions').length === 1 ? true : undefined));
    const checkedAt = String(status('submissions').checkedAt);
    await operator.stop();
    await setTimeout(1100);
    await startSelfCheckingOperator();
    await selfCheck('submissions', 'False', 'ConnectFailed', checkedAt);
    assert.deepEqual(selfCheckEvents('submissions').map((event) => [event.reason, event.count]), [['SelfCheckConnectFailed', 1]]);
  } finally {
    overrides.delete('outbound-submissions');
  }
  touch('submissions', 31);
  await selfCheck('submissions', 'True', 'Passed');
  await eventually('a Normal Event on recovery', () => (selfCheckEvents('submissions').some((event) => event.reason === 'SelfCheckPassed') ? true : undefined));
});

test('selfCheck.enabled false removes the condition, the status fields and the metric series', async () => {
  await selfCheck('alternate', 'True', 'Passed');
  const current = listener('alternate')!;
  api.put({ ...current, spec: { ...(current.spec as object), selfCheck: { enabled: false } } } as StoredObject);
  await eventually('no SelfCheck on alternate', () => (condition(listener('alternate'), 'SelfCheck') === undefined && status('alternate').tls === undefined ? true : undefined));
  assert.equal(condition(listener('alternate'), 'Ready')?.status, 'True');
  for (const field of ['checkedAt', 'checkedAddress', 'banner', 'cipher', 'certificateExpires']) assert.equal(status('alternate')[field], undefined, field);
  const text = await metrics();
  assert.equal(sample(text, stepSeries('alternate', 'connect')), undefined);
  assert.doesNotMatch(text, /vmta_listener_certificate_expiry_seconds\{[^}]*listener="alternate"/);
});

test('a self-check interval under 30s is refused on the listener, naming the field and value', async () => {
  const current = listener('mx')!;
  api.put({ ...current, spec: { ...(current.spec as object), selfCheck: { interval: '5s' } } } as StoredObject);
  const ready = await eventually('mx InvalidSpec', () => {
    const found = condition(listener('mx'), 'Ready');
    return found?.reason === 'InvalidSpec' ? found : undefined;
  });
  assert.match(ready.message, /selfCheck\.interval "5s" must be at least 30s/);
});
