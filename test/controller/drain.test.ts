// Scale-in and deletion of a persistent pool against the fake API server, with a real relay
// process behind each simulated pod: the StatefulSet keeps its pods until the leaving ones have
// handed their queue to the remaining pod, the Draining condition, status.drain and Events carry
// the counts, a drain that cannot finish ends at the pool's timeout with the mail left on the
// claims and said so, and a deleted pool keeps its objects (finalizer) until its pods delivered.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { httpRelayDrainClient } from '../../operator/controller/relay-drain-client.ts';
import { DRAIN_FINALIZER } from '../../operator/controller/pool-drain.ts';
import type { VmtaOperator } from '../../operator/controller/operator.ts';
import type { FakeKubeApi, JsonObject, StoredObject } from '../fixtures/fake-kube-api.ts';
import { admin, BLOCKED_DOMAIN, deliveries, OPEN_DOMAIN, sendMessage, startRelayPool, TOKEN, type RelayPool } from '../drain/relay-pair.ts';
import { eventually, startFakeApi } from '../kube/helpers.ts';
import { condition, NAMESPACE, startOperator } from './harness.ts';

let api: FakeKubeApi;
let operator: VmtaOperator;
/** Simulated pod name -> the admin address of the real relay standing in for it. */
const relayOfPod = new Map<string, string>();

const POOL_API = 'vmta.dev/v1alpha1';
const getPool = (name: string) => api.get(POOL_API, 'VirtualMtaPool', NAMESPACE, name);
const statefulSetReplicas = (name: string) => (api.get('apps/v1', 'StatefulSet', NAMESPACE, name)?.spec as { replicas?: number } | undefined)?.replicas;
const drainStatus = (name: string) => (getPool(name)?.status as { drain?: { outcome?: string; pods: { name: string; state: string; handedOver: number; delivered: number; remaining: number }[] } } | undefined)?.drain;

function events(poolName: string): { reason: string; type: string; message: string }[] {
  return api
    .list('v1', 'Event', NAMESPACE)
    .filter((event) => (event.involvedObject as { name?: string } | undefined)?.name === poolName)
    .map((event) => ({ reason: String(event.reason), type: String(event.type), message: String(event.message) }));
}

function poolObject(name: string, replicas: number, spec: JsonObject = {}): JsonObject {
  return {
    apiVersion: POOL_API,
    kind: 'VirtualMtaPool',
    metadata: { name, namespace: NAMESPACE },
    spec: { virtualMtas: [{ name: 'vmta-1', hostname: 'out1.relay.test' }], replicas, admin: { tokenSecretName: 'drain-admin' }, ...spec },
  };
}

function setReplicas(name: string, replicas: number): void {
  const pool = getPool(name)!;
  (pool.spec as { replicas: number }).replicas = replicas;
  api.put(pool);
}

/** Relays standing in for the pods name-0..name-(count-1). */
async function relaysFor(name: string, count: number): Promise<RelayPool> {
  const pool = await startRelayPool(count);
  pool.relays.forEach((relay, index) => relayOfPod.set(`${name}-${index}`, relay.peer));
  return pool;
}

/** Queue mail on a relay: one recipient delivered at once, one for the blocked destination per message. */
async function queueMail(pool: RelayPool, relayIndex: number, count: number, tag: string): Promise<void> {
  for (let index = 0; index < count; index += 1) {
    await sendMessage(pool.relays[relayIndex]!.smtpPort, `sender@client.test`, [`${tag}${index}@${OPEN_DOMAIN}`, `${tag}${index}@${BLOCKED_DOMAIN}`], `Subject: ${tag} ${index}\r\n\r\nbody\r\n`);
  }
  await eventually(`relay ${relayIndex} delivers the open recipients`, () => Array.from({ length: count }, (_, index) => `${tag}${index}@${OPEN_DOMAIN}`).every((r) => deliveries(pool.open).get(r) === 1));
}

before(async () => {
  const started = await startFakeApi({ bookmarkIntervalMs: 500 });
  api = started.api;
  api.put({ apiVersion: 'v1', kind: 'Secret', metadata: { name: 'drain-admin', namespace: NAMESPACE }, data: { token: Buffer.from(`${TOKEN}\n`).toString('base64') } });
  operator = startOperator(api, started.kubeconfig, { relayDrainClient: httpRelayDrainClient({ adminAddress: (pod) => relayOfPod.get(pod.metadata.name) }) });
  await operator.start();
});

after(async () => {
  await operator.stop();
  await api.close();
});

test('scale 3 -> 1: pods 1 and 2 hand their queue to pod 0 before the StatefulSet shrinks; every message delivered once', async (t) => {
  const relays = await relaysFor('scaled', 3);
  t.after(() => relays.close());
  api.put(poolObject('scaled', 3));
  await eventually('the StatefulSet with 3 pods', () => statefulSetReplicas('scaled') === 3 && api.get('v1', 'Pod', NAMESPACE, 'scaled-2'));
  assert.deepEqual(getPool('scaled')!.metadata.finalizers, [DRAIN_FINALIZER]);
  await queueMail(relays, 1, 6, 'one');
  await queueMail(relays, 2, 4, 'two');

  setReplicas('scaled', 1);
  const scaledAt = await eventually('the StatefulSet scaled to 1', () => (statefulSetReplicas('scaled') === 1 ? Date.now() : undefined), 60_000);
  for (const index of [1, 2]) {
    const report = (await admin(relays.relays[index]!, 'GET', '/api/v1/drain')).body;
    assert.equal(report.state, 'drained', `pod ${index} had drained when the StatefulSet shrank`);
    assert.ok(Date.parse(report.finishedAt!) <= scaledAt, `pod ${index} finished draining before the StatefulSet shrank`);
  }
  const drained = await eventually('Draining=False Drained', () => (condition(getPool('scaled'), 'Draining')?.reason === 'Drained' ? getPool('scaled') : undefined));
  assert.equal(condition(drained, 'Draining')?.status, 'False');
  assert.match(condition(drained, 'Draining')!.message, /10 message\(s\) moved \(10 handed over, 0 delivered\)/);
  assert.deepEqual(drainStatus('scaled')!.pods.map(({ name, state, handedOver, remaining }) => ({ name, state, handedOver, remaining })), [
    { name: 'scaled-1', state: 'drained', handedOver: 6, remaining: 0 },
    { name: 'scaled-2', state: 'drained', handedOver: 4, remaining: 0 },
  ]);
  const reasons = events('scaled').map((event) => event.reason);
  assert.ok(reasons.includes('DrainStarted') && reasons.includes('Drained'), reasons.join(', '));
  assert.match(events('scaled').find((event) => event.reason === 'DrainStarted')!.message, /draining scaled-1, scaled-2 into 1 ready pod\(s\) before scaling in from 3 to 1/);
  await eventually('pods 1 and 2 removed', () => !api.get('v1', 'Pod', NAMESPACE, 'scaled-1') && !api.get('v1', 'Pod', NAMESPACE, 'scaled-2'));

  relays.unblock();
  await admin(relays.relays[0]!, 'POST', '/api/v1/queues/retry', {});
  const blocked = [...Array.from({ length: 6 }, (_, i) => `one${i}@${BLOCKED_DOMAIN}`), ...Array.from({ length: 4 }, (_, i) => `two${i}@${BLOCKED_DOMAIN}`)];
  await eventually('pod 0 delivers all the moved mail', () => blocked.every((r) => deliveries(relays.blocked).get(r) === 1), 60_000);
  for (const [recipient, count] of [...deliveries(relays.open), ...deliveries(relays.blocked)]) assert.equal(count, 1, `${recipient} delivered ${count} times`);
});

test('a drain that cannot finish ends at the pool timeout: the StatefulSet shrinks, the mail stays on the claim and is reported', async (t) => {
  const relays = await relaysFor('stuck', 2);
  t.after(() => relays.close());
  api.put(poolObject('stuck', 2, { drain: { timeout: '3s' } }));
  await eventually('the StatefulSet with 2 pods', () => statefulSetReplicas('stuck') === 2 && api.get('v1', 'Pod', NAMESPACE, 'stuck-1'));
  await queueMail(relays, 1, 3, 'stuck');
  // The only peer refuses hand-overs (it drains itself).
  assert.equal((await admin(relays.relays[0]!, 'POST', '/api/v1/drain', { deadlineSeconds: 600 })).status, 202);

  const startedAt = Date.now();
  setReplicas('stuck', 1);
  await eventually('the StatefulSet scaled to 1', () => statefulSetReplicas('stuck') === 1, 60_000);
  assert.ok(Date.now() - startedAt >= 2500, 'the StatefulSet waited for the drain timeout');
  const timedOut = await eventually('Draining=False DrainTimedOut', () => (condition(getPool('stuck'), 'Draining')?.reason === 'DrainTimedOut' ? getPool('stuck') : undefined));
  assert.match(condition(timedOut, 'Draining')!.message, /kept on the claims spool-stuck-1 \(3 message\(s\)\)/);
  const warning = events('stuck').find((event) => event.reason === 'DrainTimedOut');
  assert.equal(warning?.type, 'Warning');
  assert.equal(drainStatus('stuck')!.outcome, 'DrainTimedOut');
  const kept = (await admin(relays.relays[1]!, 'GET', '/api/v1/queues')).body.queues as { domain: string; messages: number }[];
  assert.equal(kept.find((queue) => queue.domain === BLOCKED_DOMAIN)?.messages, 3, 'the mail is still in the pod\'s spool');
});

test('deleting a pool drains its pods behind the finalizer: its objects stay until the mail is delivered', async (t) => {
  const relays = await relaysFor('gone', 2);
  t.after(() => relays.close());
  api.put(poolObject('gone', 2));
  await eventually('the finalizer and 2 pods', () => (getPool('gone')?.metadata.finalizers as string[] | undefined)?.includes(DRAIN_FINALIZER) && api.get('v1', 'Pod', NAMESPACE, 'gone-1'));
  await queueMail(relays, 0, 2, 'gone-a');
  await queueMail(relays, 1, 2, 'gone-b');

  api.remove(POOL_API, 'VirtualMtaPool', NAMESPACE, 'gone');
  const draining = await eventually('Draining=True PoolDeleted', () => (condition(getPool('gone'), 'Draining')?.reason === 'PoolDeleted' ? getPool('gone') : undefined));
  assert.ok(draining.metadata.deletionTimestamp);
  assert.equal(statefulSetReplicas('gone'), 2, 'the StatefulSet stays while the pods drain');
  for (const relay of relays.relays) assert.equal((await admin(relay, 'GET', '/api/v1/drain')).body.mode, 'deliver');

  relays.unblock();
  for (const relay of relays.relays) await admin(relay, 'POST', '/api/v1/queues/retry', {});
  await eventually('the pool and its StatefulSet are gone', () => !getPool('gone') && !api.get('apps/v1', 'StatefulSet', NAMESPACE, 'gone'), 60_000);
  for (const recipient of ['gone-a0', 'gone-a1', 'gone-b0', 'gone-b1']) assert.equal(deliveries(relays.blocked).get(`${recipient}@${BLOCKED_DOMAIN}`), 1);
  assert.ok(events('gone').some((event) => event.reason === 'Drained' && /4 message\(s\) moved \(0 handed over, 4 delivered\)/.test(event.message)), JSON.stringify(events('gone')));
});

test('a pool without an admin token scales in at once and says its mail stays on the claims', async () => {
  api.put(poolObject('tokenless', 2, { admin: {} }));
  await eventually('the StatefulSet with 2 pods', () => statefulSetReplicas('tokenless') === 2);
  setReplicas('tokenless', 1);
  await eventually('the StatefulSet scaled to 1', () => statefulSetReplicas('tokenless') === 1);
  const draining = await eventually('Draining=False DrainUnavailable', () => condition(getPool('tokenless'), 'Draining'));
  assert.equal(draining.reason, 'DrainUnavailable');
  assert.match(draining.message, /spec\.admin\.tokenSecretName/);
  assert.equal(events('tokenless').find((event) => event.reason === 'DrainUnavailable')?.type, 'Warning');
});
