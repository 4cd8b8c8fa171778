// What a drain does when it cannot finish: with no peer it delivers by the deadline and keeps
// what is left in the spool (a restart on the same spool still delivers it, nothing is deleted);
// a peer that refuses leaves the messages with the draining relay, which still delivers them;
// cancelling opens the listener again. The drain API needs the token and names bad fields.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { startRelayProcess } from '../fixtures/relay-process.ts';
import { admin, BLOCKED_DOMAIN, deliveries, eventually, sendMessage, startRelayPool, type TestRelay } from './relay-pair.ts';

const BODY = 'Subject: bounded drain\r\n\r\nbody\r\n';

async function finished(relay: TestRelay) {
  return eventually('the drain ends', async () => {
    const report = (await admin(relay, 'GET', '/api/v1/drain')).body;
    return report.state === 'drained' || report.state === 'incomplete' ? report : undefined;
  });
}

test('a drain without peers delivers until its deadline; what is left stays in the spool and is delivered after a restart', async (t) => {
  const pool = await startRelayPool(1);
  t.after(() => pool.close());
  const relay = pool.relays[0]!;
  const recipients = Array.from({ length: 6 }, (_, index) => `left${index}@${BLOCKED_DOMAIN}`);
  for (const recipient of recipients) await sendMessage(relay.smtpPort, 'sender@client.test', [recipient], BODY);

  assert.equal((await admin(relay, 'POST', '/api/v1/drain', { deadlineSeconds: 2 })).body.mode, 'deliver');
  const report = await finished(relay);
  assert.equal(report.state, 'incomplete');
  assert.equal(report.queuedAtStart, recipients.length);
  assert.equal(report.remaining, recipients.length);
  assert.equal(report.delivered, 0);

  await relay.process.kill();
  relay.process = await startRelayProcess({ configDir: relay.directory, adminPort: relay.adminPort });
  pool.unblock();
  await admin(relay, 'POST', '/api/v1/queues/retry', {});
  await eventually('the kept mail is delivered', () => (recipients.every((r) => deliveries(pool.blocked).get(r) === 1) ? true : undefined));
});

test('a peer that refuses leaves the mail with the draining relay, which still delivers it; cancelling reopens the listener', async (t) => {
  const pool = await startRelayPool(2);
  t.after(() => pool.close());
  const [a, b] = pool.relays as [TestRelay, TestRelay];
  const recipients = Array.from({ length: 4 }, (_, index) => `kept${index}@${BLOCKED_DOMAIN}`);
  for (const recipient of recipients) await sendMessage(a.smtpPort, 'sender@client.test', [recipient], BODY);
  // B drains too, so it takes no hand-over.
  assert.equal((await admin(b, 'POST', '/api/v1/drain', { deadlineSeconds: 600 })).status, 202);

  assert.equal((await admin(a, 'POST', '/api/v1/drain', { handOverTo: [b.peer], deadlineSeconds: 3 })).status, 202);
  const again = await admin(a, 'POST', '/api/v1/drain', { handOverTo: [], deadlineSeconds: 1 });
  assert.equal(again.body.mode, 'handover', 'a second start changes nothing');
  const report = await finished(a);
  assert.equal(report.state, 'incomplete');
  assert.equal(report.remaining, recipients.length);
  assert.match(report.lastError ?? '', /503.*draining/);

  const cancelled = await admin(a, 'DELETE', '/api/v1/drain');
  assert.equal(cancelled.body.state, 'idle');
  assert.equal((await fetch(`${a.process.adminUrl}/readyz`)).status, 200);
  await sendMessage(a.smtpPort, 'sender@client.test', [`after-cancel@${BLOCKED_DOMAIN}`], BODY);
  pool.unblock();
  await admin(a, 'POST', '/api/v1/queues/retry', {});
  await eventually('A delivers what it kept and what came after', () => ([...recipients, `after-cancel@${BLOCKED_DOMAIN}`].every((r) => deliveries(pool.blocked).get(r) === 1) ? true : undefined));
});

test('the drain API needs the token and names the field it refuses', async (t) => {
  const pool = await startRelayPool(1);
  t.after(() => pool.close());
  const relay = pool.relays[0]!;
  assert.equal((await admin(relay, 'POST', '/api/v1/drain', { deadlineSeconds: 5 }, '')).status, 401);
  assert.equal((await admin(relay, 'GET', '/api/v1/drain', undefined, 'wrong')).status, 401);
  const cases: [unknown, RegExp][] = [
    [{}, /deadlineSeconds/],
    [{ deadlineSeconds: 0 }, /deadlineSeconds/],
    [{ deadlineSeconds: 5, handOverTo: ['no-port'] }, /handOverTo: "no-port" is not host:port/],
    [{ deadlineSeconds: 5, handOverTo: ['10.0.0.1:99999'] }, /handOverTo: "10.0.0.1:99999"/],
    [{ deadlineSeconds: 5, extra: 1 }, /extra|Unrecognized/],
  ];
  for (const [body, message] of cases) {
    const answer = await admin(relay, 'POST', '/api/v1/drain', body);
    assert.equal(answer.status, 400, JSON.stringify(body));
    assert.match(answer.body.error ?? '', message);
  }
  assert.equal((await admin(relay, 'GET', '/api/v1/drain')).body.state, 'idle', 'no refused request started a drain');
  assert.equal((await fetch(`${relay.process.adminUrl}/readyz`)).status, 200);
});

test('a relay without an admin token refuses every drain call', async (t) => {
  const pool = await startRelayPool(1, { token: false });
  t.after(() => pool.close());
  assert.equal((await admin(pool.relays[0]!, 'POST', '/api/v1/drain', { deadlineSeconds: 5 })).status, 401);
});
