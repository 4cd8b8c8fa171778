// The listener self-check on a real cluster: the operator pod probes a pool's listeners through
// their Services (cluster DNS, kube-proxy, the chart's NetworkPolicy) and writes what a client
// sees into each SmtpListener's status: SelfCheck True with TLS version, certificate expiry and
// banner for a STARTTLS submission listener, an implicit-TLS one and a plaintext relay one. Then
// the listener's hostname is changed to one its certificate does not name: SelfCheck turns False
// at the name step with a Warning Event, and the operator's /metrics says so.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { createTestCa, type TestCa } from '../fixtures/tls.ts';
import { clusterEnv } from './support/env.ts';
import { apply, condition, createNamespace, deleteNamespace, getJson, kubectl, waitFor } from './support/kubectl.ts';

const env = clusterEnv();
const NAMESPACE = `vmta-selfcheck-${process.pid}`;
const POOL = 'checked';
const HOSTNAME = 'relay.selfcheck.test';
const OTHER_HOSTNAME = 'other.selfcheck.test';
let ca: TestCa;

type Json = Record<string, any>;

function tlsSecret(names: string[]): Json {
  const certificate = ca.issue(names, { days: 20 });
  return { apiVersion: 'v1', kind: 'Secret', metadata: { name: 'listener-tls' }, type: 'kubernetes.io/tls', stringData: { 'tls.crt': certificate.cert.toString(), 'tls.key': certificate.key.toString(), 'ca.crt': ca.ca.toString() } };
}

function objects(): Json[] {
  const listener = (name: string, spec: Json) => ({ apiVersion: 'vmta.dev/v1alpha1', kind: 'SmtpListener', metadata: { name }, spec: { relayPolicyRef: { name: 'users' }, poolRef: { name: POOL }, selfCheck: { interval: '30s' }, ...spec } });
  return [
    tlsSecret([HOSTNAME]),
    { apiVersion: 'v1', kind: 'Secret', metadata: { name: 'users' }, stringData: { alice: 'selfcheck-password' } },
    { apiVersion: 'vmta.dev/v1alpha1', kind: 'RelayPolicy', metadata: { name: 'users' }, spec: { users: { secretName: 'users', senders: [{ user: 'alice', allowedSenderDomains: ['example.com'] }] }, relayDomains: ['example.com'] } },
    listener('submission', { role: 'submission', tls: { secretName: 'listener-tls' } }),
    listener('submissions', { role: 'submissions', tls: { secretName: 'listener-tls' } }),
    listener('plain', { role: 'relay', port: 2526, tls: { mode: 'none' } }),
    {
      apiVersion: 'vmta.dev/v1alpha1',
      kind: 'VirtualMtaPool',
      metadata: { name: POOL },
      spec: {
        replicas: 1,
        hostname: HOSTNAME,
        virtualMtas: [{ name: 'mta1', hostname: `mta1.${HOSTNAME}` }],
        spool: { mode: 'ephemeral' },
        pod: { resources: { requests: { cpu: '20m', memory: '96Mi' }, limits: { memory: '384Mi' } } },
      },
    },
  ];
}

const listener = (name: string) => getJson(['-n', NAMESPACE, 'get', 'smtplistener', name]);

async function selfCheck(name: string, status: 'True' | 'False', reason: string, timeoutMs = 300_000): Promise<Json> {
  return waitFor(`${name} SelfCheck ${status} ${reason}`, async () => {
    const current = await listener(name);
    const found = condition(current, 'SelfCheck');
    return found?.status === status && found.reason === reason ? current : undefined;
  }, timeoutMs, 2000);
}

async function operatorMetrics(): Promise<string> {
  const pods = await getJson<{ items: Json[] }>(['-n', env.operatorNamespace, 'get', 'pods', '-l', 'app.kubernetes.io/name=vmta-operator']);
  const pod = pods.items.find((item) => item.status?.phase === 'Running');
  assert.ok(pod, 'a running operator pod');
  const port = pod.spec.containers[0].ports.find((p: Json) => p.name === 'metrics').containerPort;
  return kubectl(['get', '--raw', `/api/v1/namespaces/${env.operatorNamespace}/pods/${pod.metadata.name}:${port}/proxy/metrics`]);
}

before(async () => {
  ca = createTestCa('vmta selfcheck CA');
  await createNamespace(NAMESPACE);
  await apply(objects(), { namespace: NAMESPACE });
});

after(async () => {
  await deleteNamespace(NAMESPACE).catch((error: Error) => console.error(error.message));
  ca?.cleanup();
});

test('the operator pod probes each listener through its Service: SelfCheck True, TLS version, certificate expiry and banner in status', async () => {
  for (const [name, port] of [['submission', 587], ['submissions', 465]] as const) {
    const current = await selfCheck(name, 'True', 'Passed');
    assert.equal(current.status.tls, 'TLSv1.3', name);
    assert.match(current.status.banner, new RegExp(`^${HOSTNAME.replaceAll('.', '\\.')} `), name);
    assert.equal(current.status.checkedAddress, `${POOL}-${name}.${NAMESPACE}.svc:${port}`);
    const daysLeft = (Date.parse(current.status.certificateExpires) - Date.now()) / 86_400_000;
    assert.ok(daysLeft > 18 && daysLeft <= 20, `${name} certificateExpires ${current.status.certificateExpires}`);
  }
  const plain = await selfCheck('plain', 'True', 'Passed');
  assert.equal(plain.status.tls, undefined, 'no TLS on the plaintext listener');
  const table = await kubectl(['-n', NAMESPACE, 'get', 'smtplisteners']);
  assert.match(table, /^NAME\s+ROLE\s+PORT\s+POOL\s+READY\s+REASON\s+SELFCHECK\s+TLS\s+AGE/m, table);
  assert.match(table, /^submission\s+submission\s+587\s+checked\s+True\s+Configured\s+True\s+TLSv1\.3/m, table);
  await kubectl(['-n', NAMESPACE, 'wait', '--for=condition=SelfCheck', 'smtplistener/submissions', '--timeout=10s']);
});

test('a listener hostname its certificate does not name: SelfCheck False at the name step, a Warning Event, and the metric at 0', async () => {
  await kubectl(['-n', NAMESPACE, 'patch', 'smtplistener', 'submission', '--type=merge', '-p', JSON.stringify({ spec: { hostname: OTHER_HOSTNAME } })]);
  const current = await selfCheck('submission', 'False', 'CertificateNameMismatch', 180_000);
  assert.match(String(condition(current, 'SelfCheck')?.message), new RegExp(`fails at name: the certificate is not for ${OTHER_HOSTNAME.replaceAll('.', '\\.')}`));
  const events = await waitFor('a SelfCheckCertificateNameMismatch Event', async () => {
    const list = await getJson<{ items: Json[] }>(['-n', NAMESPACE, 'get', 'events', '--field-selector', 'involvedObject.kind=SmtpListener,involvedObject.name=submission']);
    const found = list.items.filter((event) => event.reason === 'SelfCheckCertificateNameMismatch' && event.type === 'Warning');
    return found.length > 0 ? found : undefined;
  }, 60_000);
  assert.equal(events.length, 1);
  const metrics = await operatorMetrics();
  assert.match(metrics, new RegExp(`vmta_listener_check_success\\{listener_namespace="${NAMESPACE}",listener="submission",pool="${POOL}",step="name"\\} 0`));
  assert.match(metrics, new RegExp(`vmta_listener_check_success\\{listener_namespace="${NAMESPACE}",listener="submission",pool="${POOL}",step="chain"\\} 1`));
  assert.match(metrics, new RegExp(`vmta_listener_certificate_expiry_seconds\\{listener_namespace="${NAMESPACE}",listener="submission",pool="${POOL}"\\} \\d+`));
});
