// Limits that hold for the pool (docs/fleet-limits.md), with two real relay processes standing
// for two pods of one pool (POD_NAME relay-0 and relay-1, one membership file each, as the
// operator's ConfigMap gives every pod) and one sink counting concurrent connections and the
// delivery rate. Mail is queued while the membership is empty (no pod holds a share), then the
// membership is written and both relays take their shares live, without a restart.
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { freePort, loopbackRelayConfig, startRelayProcess, temporaryDirectory, writeRelayConfig, type RelayProcess } from '../fixtures/relay-process.ts';
import { startSinkGroup, type SinkMx } from '../fixtures/sink-mx.ts';
import { sendMarkedMessage } from '../fixtures/smtp-clients.ts';
import { waitForRelay } from '../fixtures/wait-for-relay.ts';

interface Pod {
  relay: RelayProcess;
  dir: string;
  port: number;
  adminPort: number;
}

let sharedSink: SinkMx;
let rotationSink: SinkMx;
const pods: Pod[] = [];
const deliveredAt: number[] = [];
const cleanups: (() => Promise<unknown>)[] = [];

function podConfig(pod: Pod, sink: SinkMx, limits: { maxSmtpOut: number; maxMessageRate?: string }) {
  return loopbackRelayConfig(pod.port, pod.adminPort, {
    pool: {
      name: 'pool-fleet',
      domainDefaults: [{ match: '*', smtpHost: `${sink.address}:${sink.port}`, tlsPolicy: 'none', maxMessagesPerConnection: 2, ...limits }],
      virtualMtas: [{ name: 'vmta-1', hostname: 'out.fleet.test' }],
    },
    fleet: { membershipFile: 'fleet.json', rotationWindow: '2s', rotationGuard: '400ms' },
  });
}

async function publishMembership(members: number[]): Promise<void> {
  await Promise.all(pods.map((pod) => writeFile(path.join(pod.dir, 'fleet.json'), JSON.stringify({ members }))));
}

before(async () => {
  const recordDelivery = { replyFor: (stage: 'rcpt' | 'data') => (stage === 'data' ? void deliveredAt.push(Date.now()) : undefined) };
  [sharedSink, rotationSink] = (await startSinkGroup([recordDelivery, recordDelivery])) as [SinkMx, SinkMx];
  cleanups.push(() => Promise.all([sharedSink.close(), rotationSink.close()]));
  for (const ordinal of [0, 1]) {
    const directory = await temporaryDirectory(`vmta-fleet-${ordinal}-`);
    cleanups.push(directory.remove);
    const pod = { dir: directory.path, port: await freePort(), adminPort: await freePort() } as Pod;
    await writeFile(path.join(pod.dir, 'fleet.json'), JSON.stringify({ members: [] }));
    await writeRelayConfig(pod.dir, podConfig(pod, sharedSink, { maxSmtpOut: 3 }));
    pod.relay = await startRelayProcess({ configDir: pod.dir, adminPort: pod.adminPort, env: { POD_NAME: `pool-fleet-relay-${ordinal}` } });
    cleanups.push(() => pod.relay.kill());
    pods.push(pod);
  }
});

after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

/** Queue `perPod` messages on each pod while no pod holds a share, then give both their shares at once. */
async function burstThroughBothPods(sink: SinkMx, perPod: number, tag: string): Promise<{ maxOpen: number; rate: number; markers: string[] }> {
  const markers: string[] = [];
  await Promise.all(pods.map(async (pod, ordinal) => {
    for (let index = 0; index < perPod; index += 1) {
      const marker = `${tag}-pod${ordinal}-m${index}`;
      markers.push(marker);
      await sendMarkedMessage(pod.port, 'sender@fleet.test', `user${index}@dest.test`, marker);
    }
  }));
  await new Promise((resolve) => setTimeout(resolve, 500));
  assert.equal(sink.messages.filter((message) => message.body.toString().includes(tag)).length, 0, 'no pod sends without a share');
  const before = { delivered: deliveredAt.length };
  await publishMembership([0, 1]);
  await waitForRelay(`delivery of the ${markers.length} ${tag} messages`, () => markers.every((marker) => sink.messages.some((message) => message.body.toString().includes(marker))) || undefined, pods.map((pod) => pod.relay), 90_000);
  const times = deliveredAt.slice(before.delivered).sort((a, b) => a - b);
  const rate = ((times.length - 1) * 1000) / (times.at(-1)! - times[0]!);
  return { maxOpen: sink.maxOpenSessions, rate, markers };
}

test('two pods with the shares of a 2-pod pool never exceed the pool\'s maxSmtpOut 3 and 10/s together', async () => {
  for (const pod of pods) await writeRelayConfig(pod.dir, podConfig(pod, sharedSink, { maxSmtpOut: 3, maxMessageRate: '10/s' }));
  await new Promise((resolve) => setTimeout(resolve, 1500)); // both relays reload the config
  const { maxOpen, rate } = await burstThroughBothPods(sharedSink, 20, 'shared');
  console.log(`fleet limits: max concurrent ${maxOpen} (pool limit 3), ${rate.toFixed(2)} msg/s over 40 (pool limit 10/s)`);
  assert.ok(maxOpen <= 3, `at most 3 connections from both pods together, saw ${maxOpen}`);
  assert.ok(rate <= 10 * 1.05, `at most 10/s from both pods together, measured ${rate.toFixed(2)}/s`);
  assert.ok(rate >= 10 * 0.5, `both pods send (a pod alone has 2/3 of the rate), measured ${rate.toFixed(2)}/s`);
});

test('a limit of one connection on two pods rotates between them: never two at once, and both pods\' mail is delivered', async () => {
  await publishMembership([]);
  for (const pod of pods) await writeRelayConfig(pod.dir, podConfig(pod, rotationSink, { maxSmtpOut: 1 }));
  await new Promise((resolve) => setTimeout(resolve, 1500));
  const { maxOpen, markers } = await burstThroughBothPods(rotationSink, 6, 'rotating');
  console.log(`fleet rotation: max concurrent ${maxOpen} (pool limit 1) over ${rotationSink.sessions.length} sessions for ${markers.length} messages from both pods`);
  assert.equal(maxOpen, 1, 'one connection at a time over both pods');
});
