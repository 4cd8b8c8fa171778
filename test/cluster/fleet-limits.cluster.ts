// Limits that hold for the pool on a real cluster (docs/fleet-limits.md): a StatefulSet pool of two
// relay pods with maxSmtpOut 3 and maxMessageRate 10/s for one destination, whose MX is one sink
// on the host counting concurrent connections and the DATA times. The operator publishes the
// ready pods in the fleet ConfigMap (<pool>-fleet), the kubelet brings it into the pods and each
// relay takes its share. Mail queued in both pods (their pod IPs) reaches the sink at no more than
// the pool's limits together; then maxSmtpOut 1 on the same two pods (a hot change, no restart)
// rotates the one connection between them; a scale-out to three pods with mail queued re-shares
// lowering first and stays within the limit. The measured figures are printed against the declared ones.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { startDnsServer, type TestDnsServer } from '../fixtures/dns-server.ts';
import { startSinkMx, type SinkMx } from '../fixtures/sink-mx.ts';
import { clusterEnv } from './support/env.ts';
import { apply, createNamespace, deleteNamespace, getJson, waitFor } from './support/kubectl.ts';
import { messageIdsOf, smtplibBatch } from './support/smtp-batch.ts';

const env = clusterEnv();
const NAMESPACE = `vmta-fleet-${process.pid}`;
const POOL = 'shared';
const DESTINATION = 'limits.test';
const LISTENER_PORT = 2525;
const PER_POD = 20;
/** The rate is measured from the first to the last delivery; pacing starts each pod's bucket when its mail arrives. */
const RATE_TOLERANCE = 1.1;
let dns: TestDnsServer;
let sink: SinkMx;
const deliveredAt: number[] = [];

type Json = Record<string, any>;

function objects(limits: { maxSmtpOut: number; maxMessageRate?: string }, replicas = 2): Json[] {
  return [
    { apiVersion: 'vmta.dev/v1alpha1', kind: 'RelayPolicy', metadata: { name: 'to-limits' }, spec: { relayDomains: [DESTINATION] } },
    { apiVersion: 'vmta.dev/v1alpha1', kind: 'SmtpListener', metadata: { name: 'in' }, spec: { role: 'relay', port: LISTENER_PORT, tls: { mode: 'none' }, relayPolicyRef: { name: 'to-limits' }, poolRef: { name: POOL } } },
    {
      apiVersion: 'vmta.dev/v1alpha1',
      kind: 'VirtualMtaPool',
      metadata: { name: POOL },
      spec: {
        replicas,
        hostname: 'fleet.example.com',
        virtualMtas: [{ name: 'mta1', hostname: 'mta1.fleet.example.com', domains: [{ domain: DESTINATION, tlsPolicy: 'none', retryAfter: '5s', maxMessagesPerConnection: 2, ...limits }] }],
        resolvers: [`${env.hostIp}:${dns.port}`],
        spool: { mode: 'persistent', size: '256Mi' },
        pod: { resources: { requests: { cpu: '20m', memory: '96Mi' }, limits: { memory: '384Mi' } } },
      },
    },
  ];
}

const isReady = (pod: Json) => pod.status?.conditions?.some((c: Json) => c.type === 'Ready' && c.status === 'True') === true;
async function relayPods(): Promise<Json[]> {
  const pods = (await getJson<{ items: Json[] }>(['-n', NAMESPACE, 'get', 'pods', '-l', `vmta.dev/pool=${POOL}`])).items;
  return pods.sort((a, b) => a.metadata.name.localeCompare(b.metadata.name));
}
async function fleetMembership(): Promise<Json | undefined> {
  const configMap = await getJson(['-n', NAMESPACE, 'get', 'configmap', `${POOL}-fleet`]).catch(() => undefined);
  return configMap?.data?.['membership.json'] ? JSON.parse(configMap.data['membership.json']) : undefined;
}

/** Queues `count` messages in the pod itself (its pod IP, not the Service), so each pod has mail to send. */
async function queueInPod(pod: Json, tag: string, count: number): Promise<string[]> {
  const ids = Array.from({ length: count }, (_, index) => `${tag}-${pod.metadata.name}-${index}@fleet.test`);
  assert.equal(await smtplibBatch({ host: pod.status.podIP, port: LISTENER_PORT, from: 'sender@fleet.example.com', to: `rcpt@${DESTINATION}`, messageIds: ids }), count);
  return ids;
}

/** Queues PER_POD messages in each pod at once and waits for all of them; the sink's figures for that burst. */
async function burst(tag: string, timeoutMs: number) {
  const pods = await relayPods();
  const firstMessage = sink.messages.length;
  const firstDelivery = deliveredAt.length;
  const sessionsBefore = sink.sessions.length;
  const queueStarted = Date.now();
  const ids = (await Promise.all(pods.map((pod) => queueInPod(pod, tag, PER_POD)))).flat();
  const queuedMs = Date.now() - queueStarted;
  await waitFor(`${ids.length} ${tag} messages at the sink`, async () => new Set(messageIdsOf(sink.messages.slice(firstMessage).map((m) => m.body))).size >= ids.length, timeoutMs, 500);
  const received = sink.messages.slice(firstMessage);
  assert.deepEqual(new Set(messageIdsOf(received.map((m) => m.body))), new Set(ids), 'every queued message delivered');
  const times = deliveredAt.slice(firstDelivery).sort((a, b) => a - b);
  const rate = ((times.length - 1) * 1000) / (times.at(-1)! - times[0]!);
  const busiestSecond = Math.max(...times.map((start) => times.filter((t) => t >= start && t < start + 1000).length));
  const bySource = new Map<string, number>();
  for (const message of received) bySource.set(message.remoteAddress, (bySource.get(message.remoteAddress) ?? 0) + 1);
  const timing = `queued_in=${(queuedMs / 1000).toFixed(1)}s first_delivery_after=${((times[0]! - queueStarted) / 1000).toFixed(1)}s span=${((times.at(-1)! - times[0]!) / 1000).toFixed(1)}s`;
  return { pods, rate, busiestSecond, bySource, sessions: sink.sessions.length - sessionsBefore, timing };
}

const sources = (bySource: Map<string, number>) => [...bySource].map(([ip, n]) => `${ip}:${n}`).join(',');

async function restartsOf(pods: Json[]): Promise<string> {
  return pods.map((pod) => `${pod.metadata.uid}:${pod.status.containerStatuses?.[0]?.restartCount ?? 0}`).join(',');
}

before(async () => {
  sink = await startSinkMx({ address: env.hostIp, port: 25, replyFor: (stage) => (stage === 'data' ? void deliveredAt.push(Date.now()) : undefined) });
  dns = await startDnsServer({ [DESTINATION]: { mx: [{ preference: 10, exchange: `mx.${DESTINATION}` }] }, [`mx.${DESTINATION}`]: { a: [env.hostIp] } }, env.hostIp);
  await createNamespace(NAMESPACE);
  await apply(objects({ maxSmtpOut: 3, maxMessageRate: '10/s' }), { namespace: NAMESPACE });
  await waitFor('2 Ready relay pods', async () => {
    const pods = await relayPods();
    return pods.length === 2 && pods.every(isReady);
  }, 300_000);
  // Both pods are members once any raise of the last re-share has passed (the kubelet has brought the file into both by then).
  const settled = await waitFor('the fleet ConfigMap to list pods 0 and 1 with no raise pending', async () => {
    const membership = await fleetMembership();
    return membership?.members?.join() === '0,1' && (!membership.raiseAfter || Date.parse(membership.raiseAfter) < Date.now()) ? membership : undefined;
  }, 300_000, 2000);
  console.log(`fleet membership settled: ${JSON.stringify(settled)}`);
});

after(async () => {
  await deleteNamespace(NAMESPACE).catch((error: Error) => console.error(error.message));
  await sink?.close();
  await dns?.close();
});

test('two relay pods of one pool never exceed the pool\'s maxSmtpOut 3 and maxMessageRate 10/s together, and both deliver', async () => {
  const { pods, rate, busiestSecond, bySource, sessions, timing } = await burst('shared', 180_000);
  console.log(`fleet_limits max_concurrent=${sink.maxOpenSessions} declared=3 rate=${rate.toFixed(2)} declared=10 busiest_second=${busiestSecond} messages=${2 * PER_POD} sessions=${sessions} by_source=${sources(bySource)} ${timing}`);
  assert.ok(sink.maxOpenSessions <= 3, `at most 3 connections from both pods together, saw ${sink.maxOpenSessions}`);
  assert.ok(rate <= 10 * RATE_TOLERANCE, `at most 10/s (+${Math.round((RATE_TOLERANCE - 1) * 100)}% for the window) from both pods together, measured ${rate.toFixed(2)}/s`);
  const podIps = pods.map((pod) => pod.status.podIP);
  // The sink sees the pods' own addresses unless the cluster masquerades pod traffic to the host.
  if ([...bySource.keys()].every((ip) => podIps.includes(ip))) assert.equal(bySource.size, 2, `both pods deliver their share: ${[...bySource].join(' ')}`);
  else console.log(`fleet_limits: sources ${[...bySource.keys()].join(',')} are not the pod IPs ${podIps.join(',')} (masqueraded): per-pod split not checked`);
});

test('maxSmtpOut 1 on two pods: the one connection rotates between them (a hot change, no pod restarts), never two at once', async () => {
  const before = await restartsOf(await relayPods());
  await apply(objects({ maxSmtpOut: 1 }), { namespace: NAMESPACE });
  await waitFor('the pool to run the new config on both pods', async () => {
    const pool = await getJson(['-n', NAMESPACE, 'get', 'virtualmtapool', POOL]);
    return pool.status?.conditions?.some((c: Json) => c.type === 'ConfigApplied' && c.status === 'True' && pool.status.observedGeneration === pool.metadata.generation);
  }, 180_000, 1000);
  sink.resetMaxOpenSessions();
  const { rate, bySource, sessions, timing } = await burst('rotating', 360_000);
  console.log(`fleet_limits max_concurrent=${sink.maxOpenSessions} declared=1 rate=${rate.toFixed(2)} declared=none messages=${2 * PER_POD} sessions=${sessions} by_source=${sources(bySource)} ${timing}`);
  assert.equal(sink.maxOpenSessions, 1, 'one connection at a time over both pods');
  assert.equal(await restartsOf(await relayPods()), before, 'the same pods, not restarted');
});

test('scale-out 2 -> 3 with mail queued: the re-share lowers first (pod 2 waits for the raise), the pool stays within maxSmtpOut 3 throughout, then all three are members', async () => {
  await apply(objects({ maxSmtpOut: 3, maxMessageRate: '10/s' }), { namespace: NAMESPACE });
  await waitFor('the config with maxSmtpOut 3 again on both pods', async () => {
    const pool = await getJson(['-n', NAMESPACE, 'get', 'virtualmtapool', POOL]);
    return pool.status?.conditions?.some((c: Json) => c.type === 'ConfigApplied' && c.status === 'True' && pool.status.observedGeneration === pool.metadata.generation);
  }, 180_000, 1000);
  sink.resetMaxOpenSessions();
  const scaledAt = Date.now();
  await apply(objects({ maxSmtpOut: 3, maxMessageRate: '10/s' }, 3), { namespace: NAMESPACE });
  const pending = await waitFor('pod 2 in the fleet with the raise pending', async () => {
    const membership = await fleetMembership();
    return membership?.members?.join() === '0,1,2' ? membership : undefined;
  }, 180_000, 1000);
  assert.deepEqual(pending.previousMembers, [0, 1], 'the change goes out with the previous members');
  // A StatefulSet's new ordinal is named before its pod runs (docs/fleet-limits.md), so pod 2 may not have an address yet.
  const pods = await waitFor('3 Ready relay pods', async () => {
    const current = await relayPods();
    return current.length === 3 && current.every(isReady) ? current : undefined;
  }, 180_000, 1000);
  assert.ok(Date.parse(pending.raiseAfter) > Date.now(), `the raise is still ahead when the mail is queued (pod 2 ready ${((Date.now() - scaledAt) / 1000).toFixed(0)}s after the scale-out)`);
  const firstMessage = sink.messages.length;
  const ids = (await Promise.all(pods.map((pod) => queueInPod(pod, 'scaled', PER_POD)))).flat();
  await waitFor(`${ids.length} messages queued during the re-share at the sink`, async () => new Set(messageIdsOf(sink.messages.slice(firstMessage).map((m) => m.body))).size >= ids.length, 360_000, 500);
  console.log(`fleet_limits scale_out=2->3 max_concurrent=${sink.maxOpenSessions} declared=3 messages=${ids.length} raise_after=${((Date.parse(pending.raiseAfter) - scaledAt) / 1000).toFixed(0)}s_after_scale all_delivered_at=${((Date.now() - scaledAt) / 1000).toFixed(0)}s by_source=${sources(new Map(sink.messages.slice(firstMessage).reduce((m, msg) => m.set(msg.remoteAddress, (m.get(msg.remoteAddress) ?? 0) + 1), new Map<string, number>())))}`);
  assert.ok(sink.maxOpenSessions <= 3, `at most 3 connections from three pods during and after the re-share, saw ${sink.maxOpenSessions}`);
});
