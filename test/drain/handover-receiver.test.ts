// The receiving side of a hand-over against a real relay process: a re-send of the same
// hand-over (a sender killed between our 200 and its own record) is answered "duplicate" and
// never delivered twice, whether the message is still queued, already delivered, or the relay
// restarted since; a later hop of the same message is a new hand-over. Requests without the
// token, into a draining relay, or with a malformed head are refused with a reason.
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { test } from 'node:test';
import { HANDOVER_CONTENT_TYPE, HANDOVER_PATH } from '../../mta/drain/handover-format.ts';
import { parsePeer, sendHandover, HandoverRefused } from '../../mta/drain/handover-sender.ts';
import { QueueIdGenerator } from '../../mta/spool/queue-id.ts';
import type { Envelope } from '../../mta/spool/types.ts';
import { startRelayProcess } from '../fixtures/relay-process.ts';
import { admin, BLOCKED_DOMAIN, deliveries, eventually, OPEN_DOMAIN, startRelayPool, TOKEN, type TestRelay } from './relay-pair.ts';

const BODY = Buffer.from('Subject: handed over\r\n\r\nthe body\r\n');

function envelope(overrides: Partial<Envelope> = {}): Envelope {
  return {
    mailFrom: 'sender@client.test',
    recipients: [
      { address: `done@${OPEN_DOMAIN}`, domain: OPEN_DOMAIN, status: 'delivered', attempts: 1, nextAttemptAt: 0, lastResult: '250 ok' },
      { address: `waiting@${BLOCKED_DOMAIN}`, domain: BLOCKED_DOMAIN, status: 'pending', attempts: 3, nextAttemptAt: 0, lastResult: '421 blocked' },
    ],
    virtualMta: 'vmta-1',
    receivedAt: Date.now() - 60_000,
    listener: 'relay',
    clientAddress: '127.0.0.1',
    size: BODY.length,
    eightBitMime: false,
    smtpUtf8: false,
    ...overrides,
  };
}

function handOver(relay: TestRelay, id: string, sent: Envelope, token = TOKEN) {
  return sendHandover({ target: parsePeer(relay.peer), token, id, envelope: sent, body: Readable.from([BODY]) });
}

test('a re-sent hand-over is a duplicate: queued, delivered or after a restart, the message is delivered once', async (t) => {
  const pool = await startRelayPool(1);
  t.after(() => pool.close());
  const peer = pool.relays[0]!;
  const id = new QueueIdGenerator().next();
  const sent = envelope();

  assert.deepEqual(await handOver(peer, id, sent), { result: 'stored', id });
  assert.deepEqual(await handOver(peer, id, sent), { result: 'duplicate', id }, 'still queued here');
  const queued = (await admin(peer, 'GET', `/api/v1/messages/${id}`)).body;
  assert.deepEqual(queued.recipients!.map(({ address, status, attempts }) => ({ address, status, attempts })), sent.recipients.map(({ address, status, attempts }) => ({ address, status, attempts })));

  pool.unblock();
  await admin(peer, 'POST', '/api/v1/queues/retry', {});
  await eventually('the peer delivers the pending recipient', () => (deliveries(pool.blocked).get(`waiting@${BLOCKED_DOMAIN}`) === 1 ? true : undefined));
  assert.equal(deliveries(pool.open).size, 0, 'the recipient already delivered before the hand-over is not delivered again');
  await eventually('the message is gone from the peer', async () => ((await admin(peer, 'GET', `/api/v1/messages/${id}`)).status === 404 ? true : undefined));
  assert.deepEqual(await handOver(peer, id, sent), { result: 'duplicate', id }, 'delivered and removed: the ledger still knows it');

  await peer.process.kill();
  peer.process = await startRelayProcess({ configDir: peer.directory, adminPort: peer.adminPort });
  assert.deepEqual(await handOver(peer, id, sent), { result: 'duplicate', id }, 'after a restart: the ledger is on disk');
  await new Promise((resolve) => setTimeout(resolve, 500));
  assert.equal(deliveries(pool.blocked).get(`waiting@${BLOCKED_DOMAIN}`), 1);

  // The same message on a later hop (it went on from here and comes back) is a new hand-over.
  assert.deepEqual(await handOver(peer, id, { ...sent, handovers: 1 }), { result: 'stored', id });
});

test('hand-overs are refused without the token, into a draining relay, and with a malformed head or body', async (t) => {
  const pool = await startRelayPool(2);
  t.after(() => pool.close());
  const [peer, draining] = pool.relays as [TestRelay, TestRelay];
  const generator = new QueueIdGenerator();
  const refusal = async (promise: Promise<unknown>): Promise<HandoverRefused> => {
    const error = await promise.then(() => undefined, (problem: unknown) => problem);
    assert.ok(error instanceof HandoverRefused, `refused, got ${String(error)}`);
    return error;
  };

  assert.equal((await refusal(handOver(peer, generator.next(), envelope(), 'wrong-token'))).status, 401);
  assert.equal((await refusal(handOver(peer, generator.next(), envelope({ virtualMta: 'vmta-9' })))).status, 422);
  assert.match((await refusal(handOver(peer, generator.next(), envelope({ virtualMta: 'vmta-9' })))).message, /envelope\.virtualMta: "vmta-9"/);

  const raw = async (head: string, body: Buffer, contentType = HANDOVER_CONTENT_TYPE) => {
    const response = await fetch(`${peer.process.adminUrl}${HANDOVER_PATH}`, { method: 'POST', headers: { authorization: `Bearer ${TOKEN}`, 'content-type': contentType }, body: Buffer.concat([Buffer.from(head), body]) });
    return { status: response.status, error: ((await response.json()) as { error?: string }).error ?? '' };
  };
  const good = { id: generator.next(), hop: 1, envelope: envelope() };
  const cases: [string, string, Buffer, RegExp, number][] = [
    ['no head line', 'not json at all', BODY, /no head line|not JSON/, 400],
    ['head not JSON', '{broken\n', BODY, /not JSON/, 400],
    ['a bad queue id', `${JSON.stringify({ ...good, id: '../../etc/passwd' })}\n`, BODY, /id: a queue id/, 400],
    ['hop 0', `${JSON.stringify({ ...good, hop: 0 })}\n`, BODY, /^hand-over head: hop/, 400],
    ['an unknown recipient status', `${JSON.stringify({ ...good, envelope: { ...good.envelope, recipients: [{ ...good.envelope.recipients[0], status: 'sent' }] } })}\n`, BODY, /envelope\.recipients\.0\.status/, 400],
    ['an extra field', `${JSON.stringify({ ...good, smuggled: true })}\n`, BODY, /smuggled|Unrecognized/, 400],
    ['a short body', `${JSON.stringify(good)}\n`, BODY.subarray(1), /envelope\.size says/, 400],
    ['a long body (a second message behind the first)', `${JSON.stringify(good)}\n`, Buffer.concat([BODY, BODY]), /envelope\.size says/, 400],
  ];
  for (const [what, head, body, error, status] of cases) {
    const answer = await raw(head, body);
    assert.equal(answer.status, status, `${what}: ${answer.error}`);
    assert.match(answer.error, error, what);
  }
  assert.equal((await raw(`${JSON.stringify(good)}\n`, BODY, 'application/json')).status, 415);
  assert.equal((await admin(peer, 'GET', `/api/v1/messages/${good.id}`)).status, 404, 'nothing refused was stored');

  assert.equal((await admin(draining, 'POST', '/api/v1/drain', { deadlineSeconds: 600 })).status, 202);
  const intoDraining = await refusal(handOver(draining, generator.next(), envelope()));
  assert.equal(intoDraining.status, 503);
  assert.match(intoDraining.message, /draining/);
});
