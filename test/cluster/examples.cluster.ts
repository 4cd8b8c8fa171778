// examples/ end to end through real pods: the StatefulSet pool comes up Ready, Python smtplib
// submits through the listener Services (587 STARTTLS + AUTH, 465 implicit TLS, 25 relay) and
// the relay pods deliver to a sink MX on the test host found through a DNS server there; then a
// hot change reaches the running pods without a restart and a cold change rolls them one by one
// while a message queued before the roll (destination refusing it) is delivered after it; last,
// a Prometheus on the host scrapes the pods' /metrics the way the chart's PodMonitor says.
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { parseAllDocuments } from 'yaml';
import { startDnsServer, type TestDnsServer } from '../fixtures/dns-server.ts';
import { createTestCa, startSinkMx, type SinkMx, type TestCa } from '../fixtures/sink-mx.ts';
import { smtplibSend } from '../fixtures/smtp-clients.ts';
import { CHART_DIR, helm, REPO_ROOT } from './support/chart.ts';
import { clusterEnv } from './support/env.ts';
import { scrapeJob, startPrometheus } from './support/prometheus.ts';
import { apply, condition, createNamespace, deleteNamespace, getJson, kubectl, waitFor } from './support/kubectl.ts';

const env = clusterEnv();
const NAMESPACE = `vmta-examples-${process.pid}`;
const DESTINATION = 'dest.test';
const HELD = `held@${DESTINATION}`;
let dns: TestDnsServer;
let sink: SinkMx;
let ca: TestCa;
/** The sink refuses HELD with 451 while this is true and counts the attempts. */
let holding = true;
let heldAttempts = 0;
const rcptReplies = new Proxy({} as Record<string, string>, {
  get(_target, recipient) {
    if (recipient !== HELD) return undefined;
    heldAttempts += 1;
    return holding ? '451 4.3.0 not yet' : undefined;
  },
});

type Json = Record<string, any>;

/** examples/*.yaml as objects, with what this host needs instead of documentation values. */
function exampleObjects(): Json[] {
  const files = readdirSync(join(REPO_ROOT, 'examples')).filter((name) => name.endsWith('.yaml')).sort();
  const objects = files.flatMap((name) => parseAllDocuments(readFileSync(join(REPO_ROOT, 'examples', name), 'utf8')).map((document) => document.toJS() as Json).filter(Boolean));
  const certificate = ca.issue(['relay.example.com', 'localhost']);
  for (const object of objects) {
    if (object.kind === 'Secret' && object.metadata.name === 'relay-tls') object.stringData = { 'tls.crt': certificate.cert.toString(), 'tls.key': certificate.key.toString() };
    if (object.kind === 'VirtualMtaPool') {
      // pods own no 192.0.2.x address; MX lookups go to the test's DNS server; the held message retries soon
      for (const vmta of object.spec.virtualMtas) {
        delete vmta.sourceAddress;
        for (const domain of vmta.domains ?? []) domain.retryAfter = '5s';
      }
      object.spec.resolvers = [`${env.hostIp}:${dns.port}`];
    }
  }
  return objects;
}

async function pool(): Promise<Json> {
  return getJson(['-n', NAMESPACE, 'get', 'virtualmtapool', 'outbound']);
}

async function relayPods(): Promise<Json[]> {
  return (await getJson<{ items: Json[] }>(['-n', NAMESPACE, 'get', 'pods', '-l', 'app.kubernetes.io/name=vmta-relay'])).items;
}

const isReady = (pod: Json) => pod.status?.conditions?.some((c: Json) => c.type === 'Ready' && c.status === 'True') === true;

async function serviceIp(listener: string): Promise<{ ip: string; port: number }> {
  const services = await getJson<{ items: Json[] }>(['-n', NAMESPACE, 'get', 'services', '-l', `vmta.dev/listener=${listener}`]);
  assert.equal(services.items.length, 1, `one Service for listener ${listener}`);
  const service = services.items[0]!;
  return { ip: service.spec.clusterIP, port: service.spec.ports[0].port };
}

/**
 * Whether a TCP connection to the Service's address opens: kube-proxy programs a Service's rules
 * some time after its pods turn Ready (a loaded CI run once refused the first message), so the
 * test waits for that, as a client retrying would, before asserting what the relay does.
 */
function opens(ip: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: ip, port, timeout: 2000 });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('timeout', () => socket.destroy());
    socket.once('error', () => resolve(false));
    socket.once('close', () => resolve(false));
  });
}

async function send(listener: string, mode: 'starttls' | 'ssl' | 'plain', from: string, to: string, subject: string, login = true): Promise<string> {
  const { ip, port } = await serviceIp(listener);
  await waitFor(`the ${listener} Service ${ip}:${port} to accept connections`, () => opens(ip, port), 60_000, 500);
  const result = await smtplibSend({ host: ip, port, mode, caFile: ca.caFile, checkHostname: false, user: login ? 'alice' : undefined, password: login ? 'demo-password-alice' : undefined, from, to: [to], message: `Subject: ${subject}\r\n\r\nthrough ${listener}\r\n` });
  assert.match(result.stdout, /^OK 250 /, `${listener} (${ip}:${port}): ${result.stdout}${result.stderr}`);
  return result.stdout;
}

const delivered = (subject: string) => sink.messages.filter((message) => message.body.toString().includes(`Subject: ${subject}`));

before(async () => {
  ca = createTestCa();
  const mx = ca.issue([`mx.${DESTINATION}`]);
  sink = await startSinkMx({ address: env.hostIp, port: 25, tls: mx, rcptReplies });
  dns = await startDnsServer({ [DESTINATION]: { mx: [{ preference: 10, exchange: `mx.${DESTINATION}` }] }, 'bounces.example.com': { mx: [{ preference: 10, exchange: `mx.${DESTINATION}` }] }, [`mx.${DESTINATION}`]: { a: [env.hostIp] } }, env.hostIp);
  await createNamespace(NAMESPACE);
  await apply(exampleObjects(), { namespace: NAMESPACE });
});

after(async () => {
  await deleteNamespace(NAMESPACE).catch((error: Error) => console.error(error.message));
  await sink?.close();
  await dns?.close();
  ca?.close();
});

test('examples/: the pool\'s StatefulSet pods become Ready and `kubectl wait` sees the pool Ready', async () => {
  await waitFor('2 Ready relay pods', async () => {
    const pods = await relayPods();
    return pods.length === 2 && pods.every(isReady) ? pods : undefined;
  }, 300_000);
  await kubectl(['-n', NAMESPACE, 'wait', '--for=condition=Ready', 'virtualmtapool/outbound', '--timeout=120s'], { timeoutMs: 130_000 });
  const table = await kubectl(['-n', NAMESPACE, 'get', 'vmta']);
  assert.match(table, /^NAME\s+REPLICAS\s+READY REPLICAS\s+SPOOL\s+READY/m, table);
  assert.match(table, /^virtualmtapool\.vmta\.dev\/outbound\s+2\s+2\s+persistent\s+True/m, table);
  assert.match(table, /smtplistener\.vmta\.dev\/submission/, table);
  const claims = await getJson<{ items: Json[] }>(['-n', NAMESPACE, 'get', 'pvc']);
  assert.deepEqual(claims.items.map((claim) => [claim.status.phase, claim.spec.storageClassName]), [['Bound', env.storageClass], ['Bound', env.storageClass]]);
});

test('smtplib through the listener Services: 587 STARTTLS + AUTH, 465 implicit TLS, 25 relay; each message reaches the sink', async () => {
  await send('submission', 'starttls', 'alice@example.com', `one@${DESTINATION}`, 'via-587');
  await send('submissions', 'ssl', 'alice@example.com', `two@${DESTINATION}`, 'via-465');
  await send('mx', 'plain', 'sender@elsewhere.test', 'postmaster@bounces.example.com', 'via-25', false);
  for (const subject of ['via-587', 'via-465', 'via-25']) await waitFor(`${subject} at the sink`, async () => delivered(subject).length === 1, 120_000);
  assert.ok(sink.sessions.some((session) => session.secure), 'mta1 (tlsPolicy required) delivered over STARTTLS');
});

test('a hot change reaches the running pods without a restart and ConfigApplied turns True with the new hash', async () => {
  const before = await pool();
  const podsBefore = await relayPods();
  await kubectl(['-n', NAMESPACE, 'patch', 'virtualmtapool', 'outbound', '--type=json', '-p', JSON.stringify([{ op: 'replace', path: '/spec/trackedDomains', value: ['gmail.com', 'outlook.com', 'yahoo.com', DESTINATION] }])]);
  const after = await waitFor('a new configHash with ConfigApplied True', async () => {
    const current = await pool();
    const applied = condition(current, 'ConfigApplied');
    return current.status?.configHash !== before.status.configHash && applied?.status === 'True' && applied.observedGeneration === current.metadata.generation ? current : undefined;
  }, 120_000);
  for (const pod of await relayPods()) {
    const served = await kubectl(['get', '--raw', `/api/v1/namespaces/${NAMESPACE}/pods/${pod.metadata.name}:8025/proxy/config`]);
    assert.match(served, new RegExp(after.status.configHash.replace(/^sha256:/, '')), `${pod.metadata.name} serves the new config`);
  }
  const podsAfter = await relayPods();
  assert.deepEqual(podsAfter.map((pod) => [pod.metadata.uid, pod.status.containerStatuses[0].restartCount]), podsBefore.map((pod) => [pod.metadata.uid, pod.status.containerStatuses[0].restartCount]), 'same pods, no restart');
});

test('a cold change rolls the pods one by one; a message queued before the roll is delivered after it', async () => {
  await send('submission', 'starttls', 'alice@example.com', HELD, 'held-across-roll');
  await waitFor('the sink to refuse the held message once', async () => heldAttempts > 0, 60_000);
  const podsBefore = new Map((await relayPods()).map((pod) => [pod.metadata.name, pod.metadata.uid]));
  await kubectl(['-n', NAMESPACE, 'patch', 'virtualmtapool', 'outbound', '--type=merge', '-p', JSON.stringify({ spec: { pod: { resources: { requests: { cpu: '50m', memory: '96Mi' }, limits: { memory: '512Mi' } } } } })]);
  let fewestReady = 2;
  await waitFor('both pods replaced and Ready', async () => {
    const pods = await relayPods();
    fewestReady = Math.min(fewestReady, pods.filter(isReady).length);
    return pods.length === 2 && pods.every((pod) => isReady(pod) && podsBefore.get(pod.metadata.name) !== pod.metadata.uid) ? pods : undefined;
  }, 400_000, 500);
  assert.equal(fewestReady, 1, 'one pod at a time was replaced');
  assert.equal(delivered('held-across-roll').length, 0, 'still held while the destination refuses it');
  holding = false;
  await waitFor('the held message delivered after the roll', async () => delivered('held-across-roll').length >= 1, 120_000);
  await new Promise((resolve) => setTimeout(resolve, 3000));
  assert.equal(delivered('held-across-roll').length, 1, 'delivered exactly once');
  await kubectl(['-n', NAMESPACE, 'wait', '--for=condition=Ready', 'virtualmtapool/outbound', '--timeout=120s'], { timeoutMs: 130_000 });
});

test('a Prometheus scraping as the chart\'s PodMonitor says gets every relay pod\'s /metrics, labelled with its pool', async () => {
  const rendered = await helm(['template', 'vmta', CHART_DIR, '--namespace', env.operatorNamespace, '--set', 'podMonitor.enabled=true', '--show-only', 'templates/podmonitor.yaml']);
  const monitor = parseAllDocuments(rendered)[0]!.toJS();
  // a pod with a port named like the relay's but not a relay: the PodMonitor's selector must leave it out
  await apply([{ apiVersion: 'v1', kind: 'Pod', metadata: { name: 'not-a-relay', labels: { 'app.kubernetes.io/name': 'something-else' } }, spec: { containers: [{ name: 'idle', image: env.image, imagePullPolicy: 'IfNotPresent', command: ['sleep', '3600'], ports: [{ name: 'admin', containerPort: 8025 }] }], terminationGracePeriodSeconds: 0 } }], { namespace: NAMESPACE });
  await kubectl(['-n', NAMESPACE, 'wait', '--for=condition=Ready', 'pod/not-a-relay', '--timeout=120s'], { timeoutMs: 130_000 });
  const prometheus = await startPrometheus(monitor, [NAMESPACE, env.operatorNamespace]);
  try {
    const series = await waitFor('vmta_config_info of both pods with pool="outbound"', async () => {
      const result = await prometheus.query('vmta_config_info{pool="outbound"}');
      return result.length === 2 ? result : undefined;
    }, 90_000);
    const pods = (await relayPods()).map((pod) => pod.metadata.name).sort();
    assert.deepEqual(series.map((entry) => entry.metric.pod).sort(), pods);
    const current = await pool();
    for (const entry of series) {
      assert.equal(entry.metric.hash, current.status.configHash.replace(/^sha256:/, ''), `${entry.metric.pod} reports the pool's configHash`);
      assert.equal(entry.metric.namespace, NAMESPACE);
    }
    const up = await prometheus.query('up{job="podmonitor"}');
    assert.deepEqual(up.map((entry) => [entry.metric.pod, entry.value[1]]).sort(), pods.map((pod) => [pod, '1']), 'only the relay pods\' admin ports are scraped (not the operator, not the decoy pod)');
  } finally {
    await prometheus.stop();
    await kubectl(['-n', NAMESPACE, 'delete', 'pod', 'not-a-relay', '--ignore-not-found', '--wait=false']);
  }
});
