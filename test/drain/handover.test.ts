// Drain with hand-over between real relay processes of one pool: relay A holds mail for a
// blocked destination (and has already delivered some recipients of the same messages), drains
// into relay B, B delivers once the destination is unblocked. Every recipient is delivered
// exactly once, per-recipient state travels with the message, A ends empty, and the listener
// of A is closed and its /readyz 503 while it drains.
import assert from 'node:assert/strict';
import net from 'node:net';
import { test } from 'node:test';
import { admin, BLOCKED_DOMAIN, deliveries, eventually, OPEN_DOMAIN, sendMessage, startRelayPool } from './relay-pair.ts';

interface PlannedMessage {
  from: string;
  to: string[];
  body: string;
}

/** The class of messages a queue holds: recipients on the open and the blocked destination in every mix, null and normal senders, small and large bodies. */
function plannedMessages(): PlannedMessage[] {
  const mixes: ('open' | 'blocked')[][] = [['blocked'], ['open', 'blocked'], ['blocked', 'blocked'], ['open', 'open', 'blocked'], ['open']];
  const messages: PlannedMessage[] = [];
  for (let index = 0; index < 20; index += 1) {
    const mix = mixes[index % mixes.length]!;
    const to = mix.map((kind, position) => `m${index}-r${position}@${kind === 'open' ? OPEN_DOMAIN : BLOCKED_DOMAIN}`);
    const lines = index % 7 === 3 ? 4000 : 3;
    const body = `Subject: drain ${index}\r\nMessage-ID: <drain-${index}@client.test>\r\n\r\n${`body line of message ${index}\r\n`.repeat(lines)}`;
    messages.push({ from: index % 4 === 0 ? '' : `sender${index}@client.test`, to, body });
  }
  return messages;
}

function refusesConnections(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(false);
    });
    socket.once('error', () => resolve(true));
  });
}

test('a relay drains its queue into a peer: every recipient delivered exactly once, recipient state moved with the message', async (t) => {
  const pool = await startRelayPool(2);
  t.after(() => pool.close());
  const [a, b] = pool.relays as [(typeof pool.relays)[0], (typeof pool.relays)[0]];
  const planned = plannedMessages();
  const ids = new Map<string, PlannedMessage>();
  for (const message of planned) ids.set(await sendMessage(a.smtpPort, message.from, message.to, message.body), message);

  const openRecipients = planned.flatMap((m) => m.to.filter((r) => r.endsWith(OPEN_DOMAIN)));
  const blockedRecipients = planned.flatMap((m) => m.to.filter((r) => r.endsWith(BLOCKED_DOMAIN)));
  await eventually('A delivers the open recipients', () => (openRecipients.every((r) => deliveries(pool.open).get(r) === 1) ? true : undefined));
  const withBlocked = [...ids].filter(([, message]) => message.to.some((r) => r.endsWith(BLOCKED_DOMAIN)));
  // Every blocked recipient is tried (mail that arrived while the destination was deferred waits
  // for its retry, 30 minutes away: "retry now" makes it try): attempts > 0 is state that must move.
  const before = new Map<string, { address: string; status: string; attempts: number }[]>();
  await eventually('A has tried every blocked recipient', async () => {
    for (const [id] of withBlocked) before.set(id, (await admin(a, 'GET', `/api/v1/messages/${id}`)).body.recipients!);
    if ([...before.values()].flat().every((r) => r.address.endsWith(OPEN_DOMAIN) || r.attempts > 0)) return true;
    await admin(a, 'POST', '/api/v1/queues/retry', { domain: BLOCKED_DOMAIN });
    await new Promise((resolve) => setTimeout(resolve, 300));
    return undefined;
  });

  const started = await admin(a, 'POST', '/api/v1/drain', { handOverTo: [b.peer], deadlineSeconds: 120 });
  assert.equal(started.status, 202, JSON.stringify(started.body));
  assert.equal(started.body.mode, 'handover');
  const drained = await eventually('A drained', async () => {
    const report = (await admin(a, 'GET', '/api/v1/drain')).body;
    return report.state === 'drained' || report.state === 'incomplete' ? report : undefined;
  });
  assert.equal(drained.state, 'drained', JSON.stringify(drained));
  assert.equal(drained.queuedAtStart, withBlocked.length);
  assert.equal(drained.handedOver, withBlocked.length);
  assert.equal(drained.remaining, 0);
  assert.equal((await fetch(`${a.process.adminUrl}/readyz`)).status, 503, 'a draining relay is not ready');
  assert.ok(await refusesConnections(a.smtpPort), 'a draining relay has closed its listener');
  assert.deepEqual((await admin(a, 'GET', '/api/v1/queues')).body.queues, [], 'A holds nothing after the hand-over');

  for (const [id, recipients] of before) {
    const moved = (await admin(b, 'GET', `/api/v1/messages/${id}`)).body;
    assert.deepEqual(moved.recipients!.map(({ address, status, attempts }) => ({ address, status, attempts })), recipients.map(({ address, status, attempts }) => ({ address, status, attempts })), `recipient state of ${id} on B`);
  }

  pool.unblock();
  assert.equal((await admin(b, 'POST', '/api/v1/queues/retry', {})).status, 200);
  await eventually('B delivers every blocked recipient', () => (blockedRecipients.every((r) => deliveries(pool.blocked).get(r) === 1) ? true : undefined));
  await eventually('B has an empty queue', async () => (((await admin(b, 'GET', '/api/v1/queues')).body.queues ?? [1]).length === 0 ? true : undefined));
  for (const [recipient, count] of [...deliveries(pool.open), ...deliveries(pool.blocked)]) assert.equal(count, 1, `${recipient} delivered ${count} times`);
  assert.equal(deliveries(pool.open).size, openRecipients.length);
  assert.equal(deliveries(pool.blocked).size, blockedRecipients.length);
  for (const received of pool.blocked.messages) {
    const original = planned.find((m) => m.to.includes(received.to[0]!))!;
    assert.ok(received.body.toString('latin1').endsWith(original.body.slice(original.body.indexOf('\r\n\r\n'))), 'the body arrives unchanged after the hand-over');
  }
});
