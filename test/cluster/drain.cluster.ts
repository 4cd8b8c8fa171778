// Drain on scale-in and delete with real pods (docs/operations.md, "Scale-in and delete"): mail
// queued in each of three StatefulSet pods for a destination that refuses it (451 at RCPT) stays
// queued; scaling the pool 3 -> 1 keeps the StatefulSet at 3 while pods 1 and 2 hand their queue
// to pod 0 (Draining condition and Events with counts), then lowers it; once the destination
// accepts, every message arrives exactly once (Message-IDs counted at the sink). Deleting the
// pool with mail queued keeps its pods (finalizer vmta.dev/drain) until they delivered it, then
// garbage collection removes the children. A drain that reaches the pool's timeout leaves the
// rest on the retained claim, says so in a Warning Event, and a pod started on that claim later
// delivers it. Draining pods are not ready but their relays still deliver, so they keep their
// fleet shares (docs/fleet-limits.md): the fleet ConfigMap lists them throughout. Figures
// (messages moved, drain time, rollout to fleet membership) are printed.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { startDnsServer, type TestDnsServer } from '../fixtures/dns-server.ts';
import { startSinkMx, type SinkMx } from '../fixtures/sink-mx.ts';
import { clusterEnv } from './support/env.ts';
import { apply, condition, createNamespace, deleteNamespace, getJson, kubectl, kubectlResult, waitFor } from './support/kubectl.ts';
import { messageIdsOf, smtplibBatch } from './support/smtp-batch.ts';

const env = clusterEnv();
const NAMESPACE = `vmta-drain-${process.pid}`;
const POOL = 'drained';
const DESTINATION = 'blocked.test';
const LISTENER_PORT = 2525;
const PER_POD = 150;
let dns: TestDnsServer;
let sink: SinkMx;
/** While true the sink answers 451 at RCPT: nothing is delivered, everything stays queued. */
let blocked = true;
let refusals = 0;
/** From applying the pool to the fleet membership naming all three pods. */
let rolloutSeconds = 0;

type Json = Record<string, any>;

function objects(drainTimeout = '5m', replicas = 3): Json[] {
  return [
    { apiVersion: 'v1', kind: 'Secret', metadata: { name: 'admin-token' }, stringData: { token: `drain-test-token-${process.pid}` } },
    { apiVersion: 'vmta.dev/v1alpha1', kind: 'RelayPolicy', metadata: { name: 'to-blocked' }, spec: { relayDomains: [DESTINATION] } },
    { apiVersion: 'vmta.dev/v1alpha1', kind: 'SmtpListener', metadata: { name: 'in' }, spec: { role: 'relay', port: LISTENER_PORT, tls: { mode: 'none' }, relayPolicyRef: { name: 'to-blocked' }, poolRef: { name: POOL } } },
    {
      apiVersion: 'vmta.dev/v1alpha1',
      kind: 'VirtualMtaPool',
      metadata: { name: POOL },
      spec: {
        replicas,
        hostname: 'drain.example.com',
        virtualMtas: [{ name: 'mta1', hostname: 'mta1.drain.example.com', domains: [{ domain: '*', tlsPolicy: 'none', retryAfter: '5s' }] }],
        resolvers: [`${env.hostIp}:${dns.port}`],
        spool: { mode: 'persistent', size: '256Mi' },
        admin: { tokenSecretName: 'admin-token' },
        drain: { timeout: drainTimeout },
        pod: { resources: { requests: { cpu: '20m', memory: '96Mi' }, limits: { memory: '384Mi' } } },
      },
    },
  ];
}

const pool = () => getJson(['-n', NAMESPACE, 'get', 'virtualmtapool', POOL]);
const isReady = (pod: Json) => pod.status?.conditions?.some((c: Json) => c.type === 'Ready' && c.status === 'True') === true;
async function relayPods(): Promise<Json[]> {
  return (await getJson<{ items: Json[] }>(['-n', NAMESPACE, 'get', 'pods', '-l', `vmta.dev/pool=${POOL}`])).items;
}
const statefulSetReplicas = async () => (await getJson(['-n', NAMESPACE, 'get', 'statefulset', POOL])).spec.replicas as number;
async function poolEvents(): Promise<Json[]> {
  return (await getJson<{ items: Json[] }>(['-n', NAMESPACE, 'get', 'events', '--field-selector', `involvedObject.kind=VirtualMtaPool,involvedObject.name=${POOL}`])).items;
}

/** How often each Message-ID reached the sink. */
function arrivals(): Map<string, number> {
  const counts = new Map<string, number>();
  for (const id of messageIdsOf(sink.messages.map((message) => message.body))) counts.set(id, (counts.get(id) ?? 0) + 1);
  return counts;
}

/** Queues `count` messages in the pod itself (its pod IP, not the Service): each pod holds its own share. */
async function queueInPod(pod: Json, tag: string, count: number): Promise<string[]> {
  const ids = Array.from({ length: count }, (_, index) => `${tag}-${pod.metadata.name}-${index}@drain.test`);
  assert.equal(await smtplibBatch({ host: pod.status.podIP, port: LISTENER_PORT, from: 'sender@drain.example.com', to: `rcpt@${DESTINATION}`, messageIds: ids }), count);
  return ids;
}

async function deliveredOnceEach(ids: string[], what: string): Promise<void> {
  await waitFor(`${ids.length} ${what} messages at the sink`, async () => ids.every((id) => arrivals().has(id)), 180_000, 500);
  await new Promise((resolve) => setTimeout(resolve, 5000)); // a duplicate would show up within a retry interval
  const counts = arrivals();
  assert.deepEqual(ids.filter((id) => counts.get(id) !== 1).map((id) => `${id} x${counts.get(id) ?? 0}`), [], 'every message delivered exactly once');
}

/** The ordinals the pool's fleet ConfigMap gives shares to now. */
async function fleetMembers(): Promise<number[]> {
  const configMap = await getJson(['-n', NAMESPACE, 'get', 'configmap', `${POOL}-fleet`]);
  return JSON.parse(configMap.data['membership.json']).members as number[];
}

async function readyPods(count: number): Promise<Json[]> {
  return waitFor(`${count} Ready relay pods`, async () => {
    const pods = await relayPods();
    return pods.length === count && pods.every(isReady) ? pods : undefined;
  }, 300_000);
}

before(async () => {
  sink = await startSinkMx({ address: env.hostIp, port: 25, replyFor: (stage) => (stage === 'rcpt' && blocked ? (refusals++, '451 4.3.0 blocked for the drain test') : undefined) });
  dns = await startDnsServer({ [DESTINATION]: { mx: [{ preference: 10, exchange: `mx.${DESTINATION}` }] }, [`mx.${DESTINATION}`]: { a: [env.hostIp] } }, env.hostIp);
  await createNamespace(NAMESPACE);
  await apply(objects(), { namespace: NAMESPACE });
  const applied = Date.now();
  await readyPods(3);
  // A new StatefulSet pool's fleet ConfigMap names every ordinal before its pods mount it: they start with their shares.
  await waitFor('the fleet membership [0,1,2]', async () => (await fleetMembers()).join() === '0,1,2', 60_000, 500);
  rolloutSeconds = (Date.now() - applied) / 1000;
});

after(async () => {
  await deleteNamespace(NAMESPACE).catch((error: Error) => console.error(error.message));
  await sink?.close();
  await dns?.close();
});

test('scale-in 3 -> 1 with mail queued for a blocked destination: pods 1 and 2 hand their queue to pod 0, then go; unblocked, every message arrives once', async (t) => {
  const pods = (await relayPods()).sort((a, b) => a.metadata.name.localeCompare(b.metadata.name));
  const ids = (await Promise.all(pods.map((pod) => queueInPod(pod, 'scale', PER_POD)))).flat();
  await waitFor('the destination to refuse mail of every pod', async () => refusals >= 3, 60_000);
  const scaleStarted = Date.now();
  await kubectl(['-n', NAMESPACE, 'patch', 'virtualmtapool', POOL, '--type=merge', '-p', JSON.stringify({ spec: { replicas: 1 } })]);
  const draining = await waitFor('Draining=True (ScaleIn)', async () => {
    const found = condition(await pool(), 'Draining');
    return found?.status === 'True' ? found : undefined;
  }, 60_000, 250);
  assert.equal(draining.reason, 'ScaleIn');
  assert.equal(await statefulSetReplicas(), 3, 'the StatefulSet keeps the leaving pods while they drain');
  // Pods 1 and 2 drain in seconds and then terminate (leaving the membership): pod 0, which receives their mail, holds its share throughout.
  assert.ok((await fleetMembers()).includes(0), 'the pod that receives the hand-over holds its fleet share');
  const drained = await waitFor('Draining=False (Drained)', async () => {
    const current = await pool();
    return condition(current, 'Draining')?.status === 'False' ? current : undefined;
  }, 300_000, 500);
  assert.equal(condition(drained, 'Draining')?.reason, 'Drained', condition(drained, 'Draining')?.message);
  const status = drained.status.drain;
  assert.deepEqual(status.pods.map((pod: Json) => [pod.name, pod.state, pod.remaining]), [[`${POOL}-1`, 'drained', 0], [`${POOL}-2`, 'drained', 0]]);
  const moved = status.pods.reduce((total: number, pod: Json) => total + pod.handedOver, 0);
  assert.equal(moved, 2 * PER_POD, 'every message of pods 1 and 2 was handed over (none delivered: the destination refuses)');
  assert.equal(arrivals().size, 0, 'nothing delivered while blocked');
  await waitFor('the StatefulSet at 1 and one pod left', async () => (await statefulSetReplicas()) === 1 && (await relayPods()).length === 1, 120_000);
  const drainSeconds = (Date.parse(status.finishedAt) - Date.parse(status.startedAt)) / 1000;
  t.diagnostic(`scale-in 3 -> 1: ${moved} messages moved (${status.pods.map((pod: Json) => `${pod.name} ${pod.handedOver}/${pod.queuedAtStart}`).join(', ')}), drain ${drainSeconds}s (status.drain), patch to one pod left ${((Date.now() - scaleStarted) / 1000).toFixed(1)}s; apply to fleet membership [0,1,2] ${rolloutSeconds.toFixed(1)}s`);
  const events = await poolEvents();
  const reasons = events.map((event) => event.reason);
  for (const reason of ['DrainStarted', 'Draining', 'Drained']) assert.ok(reasons.includes(reason), `Event ${reason} among ${reasons.join(', ')}`);
  const drainedEvent = events.find((event) => event.reason === 'Drained')!;
  assert.match(drainedEvent.message, new RegExp(`${2 * PER_POD} message\\(s\\) moved \\(${2 * PER_POD} handed over, 0 delivered\\)`), drainedEvent.message);
  assert.ok(events.some((event) => event.reason === 'Draining' && /\d+ moved, \d+ left/.test(event.message)), 'a Draining Event carries counts');
  blocked = false;
  await deliveredOnceEach(ids, 'scale-in');
  blocked = true;
});

test('deleting the pool with mail queued: its pod delivers the queue before the pool\'s children go', async (t) => {
  const [pod] = await relayPods();
  assert.ok(pod && isReady(pod), 'pod 0 Ready');
  const ids = await queueInPod(pod, 'delete', PER_POD);
  const refusedBefore = refusals;
  await waitFor('the destination to refuse the queued mail', async () => refusals > refusedBefore, 60_000);
  const deleteStarted = Date.now();
  await kubectl(['-n', NAMESPACE, 'delete', 'virtualmtapool', POOL, '--wait=false']);
  const held = await waitFor('Draining=True (PoolDeleted)', async () => {
    const current = await pool();
    return condition(current, 'Draining')?.status === 'True' ? current : undefined;
  }, 60_000, 250);
  assert.equal(condition(held, 'Draining')?.reason, 'PoolDeleted');
  assert.ok(held.metadata.deletionTimestamp && held.metadata.finalizers.includes('vmta.dev/drain'), 'deleted, held by the drain finalizer');
  assert.ok((await fleetMembers()).includes(0), 'the pod delivering its queue for the deleted pool keeps its fleet share');
  await new Promise((resolve) => setTimeout(resolve, 5000));
  assert.equal((await relayPods()).length, 1, 'the pod stays while its queue is undelivered');
  assert.equal(await statefulSetReplicas(), 1);
  blocked = false;
  await waitFor('the pool gone', async () => (await kubectlResult(['-n', NAMESPACE, 'get', 'virtualmtapool', POOL])).code !== 0, 300_000, 500);
  const poolGone = (Date.now() - deleteStarted) / 1000;
  await deliveredOnceEach(ids, 'pool-delete');
  await waitFor('the StatefulSet and its pod collected', async () => (await kubectlResult(['-n', NAMESPACE, 'get', 'statefulset', POOL])).code !== 0 && (await relayPods()).length === 0, 180_000);
  const drainedEvent = (await poolEvents()).filter((event) => event.reason === 'Drained').at(-1);
  assert.match(drainedEvent?.message ?? '', new RegExp(`${PER_POD} message\\(s\\) moved \\(0 handed over, ${PER_POD} delivered\\)`), drainedEvent?.message);
  blocked = true;
  t.diagnostic(`pool delete: ${PER_POD} messages delivered by the pod itself, delete to pool gone ${poolGone.toFixed(1)}s (destination unblocked 5 s after the delete)`);
});

test('a drain that reaches the pool\'s timeout keeps the rest on the claim and says so; a pod started on that claim delivers it', async (t) => {
  const timeout = 10;
  await apply(objects(`${timeout}s`, 1), { namespace: NAMESPACE });
  const [pod] = await readyPods(1);
  const ids = await queueInPod(pod!, 'timeout', 20);
  const refusedBefore = refusals;
  await waitFor('the destination to refuse the queued mail', async () => refusals > refusedBefore, 60_000);
  await kubectl(['-n', NAMESPACE, 'delete', 'virtualmtapool', POOL, '--wait=false']);
  await waitFor('the pool gone after its drain timeout', async () => (await kubectlResult(['-n', NAMESPACE, 'get', 'virtualmtapool', POOL])).code !== 0, 120_000, 500);
  const timedOut = (await poolEvents()).filter((event) => event.reason === 'DrainTimedOut');
  assert.equal(timedOut.length, 1, 'one DrainTimedOut Event');
  assert.equal(timedOut[0]!.type, 'Warning');
  assert.match(timedOut[0]!.message, new RegExp(`timeout ${timeout}s\\) with mail left, kept on the claims spool-${POOL}-0 \\(20 message\\(s\\)\\)`), timedOut[0]!.message);
  assert.equal(arrivals().has(ids[0]!), false, 'nothing delivered while blocked');
  await waitFor('the StatefulSet and its pod collected', async () => (await kubectlResult(['-n', NAMESPACE, 'get', 'statefulset', POOL])).code !== 0 && (await relayPods()).length === 0, 180_000);
  const claim = await getJson(['-n', NAMESPACE, 'get', 'pvc', `spool-${POOL}-0`]);
  assert.equal(claim.status.phase, 'Bound', 'the claim with the mail is kept');
  // the pool again: its pod 0 starts on the same claim and finds the mail in its spool
  await apply(objects('5m', 1), { namespace: NAMESPACE });
  await readyPods(1);
  blocked = false;
  await deliveredOnceEach(ids, 'kept-on-the-claim');
  t.diagnostic(`drain timeout ${timeout}s: 20 messages kept on spool-${POOL}-0 and delivered by the pod of the recreated pool`);
});
