// The judge of the power-cut test (test/fixtures/power-cut-ledger.ts), on generated histories:
// random lives of the relay, each delivery recorded or cut before it was, then one change that
// must (or must not) turn the verdict: a repeat after a recorded delivery, a repeat after one in
// flight, an acknowledged message never delivered, a delivery no client sent, a body changed, and
// what a cut may and may not leave in the spool.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { PowerCutLedger, type Life } from '../fixtures/power-cut-ledger.ts';
import type { ReceivedMessage } from '../fixtures/sink-mx.ts';

const HISTORIES = 200;

function seeded(seed: number): () => number {
  let state = seed;
  return () => {
    state = (Math.imul(state, 1103515245) + 12345) >>> 0;
    return state / 2 ** 32;
  };
}

const delivery = (recipient: string, body: Buffer): ReceivedMessage => ({ from: 'sender@load.test', to: [recipient], body, mailParams: {}, remoteAddress: '127.0.0.1', ehloName: 'relay.test', secure: false });

interface History {
  ledger: PowerCutLedger;
  deliveries: ReceivedMessage[];
  /** Recipients whose every delivery so far was recorded, and those with one in flight at a cut. */
  recordedOnly: string[];
  inFlight: string[];
}

/** A consistent history: every acked message delivered, repeats only after a delivery cut before it was recorded. */
function history(seed: number): History {
  const random = seeded(seed);
  const ledger = new PowerCutLedger();
  const deliveries: ReceivedMessage[] = [];
  const recipients = Array.from({ length: 3 + Math.floor(random() * 20) }, (_, index) => `r${index}@dest.test`);
  for (const recipient of recipients) {
    ledger.sent.set(recipient, Buffer.from(`Subject: ${recipient}\r\n\r\nbody of ${recipient}\r\n`));
    if (random() < 0.9) ledger.acked.set(recipient, `Q${recipient}`);
  }
  const inFlight = new Set<string>();
  const lives = 1 + Math.floor(random() * 5);
  for (let cycle = 1; cycle <= lives + 1; cycle++) {
    const final = cycle === lives + 1;
    const life: Life = { cycle, phase: final ? 'final' : 'accept', sinkFrom: deliveries.length, sinkTo: 0, recorded: new Map(), cutBeforeReady: false };
    for (const recipient of recipients) {
      const delivered = deliveries.some((message) => message.to[0] === recipient);
      // The last life delivers what is left; earlier ones some of it, and repeat only what was in flight.
      const due = final ? !delivered || (inFlight.has(recipient) && random() < 0.5) : !delivered && random() < 0.5;
      if (!due || (!ledger.acked.has(recipient) && !final && random() < 0.5)) continue;
      deliveries.push(delivery(recipient, Buffer.concat([Buffer.from('Received: by relay.test\r\n'), ledger.sent.get(recipient)!])));
      if (final || random() < 0.8) life.recorded.set(recipient, 1);
      else inFlight.add(recipient);
    }
    life.sinkTo = deliveries.length;
    ledger.lives.push(life);
  }
  const deliveredOnce = recipients.filter((recipient) => deliveries.filter((message) => message.to[0] === recipient).length === 1);
  return { ledger, deliveries, recordedOnly: deliveredOnce.filter((recipient) => !inFlight.has(recipient)), inFlight: [...inFlight] };
}

function assertClean(history: History, seed: number): void {
  const figures = history.ledger.verdict(history.deliveries);
  for (const failures of [figures.lost, figures.beyondInFlight, figures.invented, figures.lostAtCut, figures.resultsLostAtCut]) assert.deepEqual(failures, [], `seed ${seed}`);
  assert.equal(figures.duplicates, figures.inFlightDuplicates, `seed ${seed}: every repeat was in flight`);
}

test('a history where every repeat follows a delivery in flight at a cut passes, and its repeats count as in flight', () => {
  for (let seed = 1; seed <= HISTORIES; seed++) assertClean(history(seed), seed);
});

test('a repeat of a delivery that was recorded before the cut is a duplicate beyond in flight', () => {
  for (let seed = 1; seed <= HISTORIES; seed++) {
    const generated = history(seed);
    const recipient = generated.recordedOnly[seed % Math.max(1, generated.recordedOnly.length)];
    if (!recipient) continue;
    generated.deliveries.push(delivery(recipient, generated.deliveries.find((message) => message.to[0] === recipient)!.body));
    generated.ledger.lives.at(-1)!.sinkTo = generated.deliveries.length;
    assert.equal(generated.ledger.verdict(generated.deliveries).beyondInFlight.length, 1, `seed ${seed}: ${recipient}`);
  }
});

test('one more repeat after a delivery in flight is allowed; two are not', () => {
  for (let seed = 1; seed <= HISTORIES; seed++) {
    const generated = history(seed);
    const recipient = generated.inFlight[0];
    if (!recipient) continue;
    const times = generated.deliveries.filter((message) => message.to[0] === recipient).length;
    const body = generated.deliveries.find((message) => message.to[0] === recipient)!.body;
    if (times === 1) {
      generated.deliveries.push(delivery(recipient, body));
      assertClean(generated, seed);
    }
    generated.deliveries.push(delivery(recipient, body));
    assert.equal(generated.ledger.verdict(generated.deliveries).beyondInFlight.length, 1, `seed ${seed}: ${recipient}`);
  }
});

test('an acknowledged message the sink never got is lost; a delivery no client sent, or with another body, is invented', () => {
  for (let seed = 1; seed <= HISTORIES; seed++) {
    const lost = history(seed);
    const [acked] = lost.ledger.acked.keys();
    const kept = lost.deliveries.filter((message) => message.to[0] !== acked);
    assert.deepEqual(lost.ledger.verdict(kept).lost.map((line) => line.split(' ')[0]), [acked], `seed ${seed}`);

    const invented = history(seed);
    invented.deliveries.push(delivery('nobody@dest.test', Buffer.from('Subject: ?\r\n\r\n?\r\n')));
    assert.equal(invented.ledger.verdict(invented.deliveries).invented.length, 1, `seed ${seed}: unknown recipient`);

    const changed = history(seed);
    const index = seed % changed.deliveries.length;
    const body = Buffer.from(changed.deliveries[index]!.body);
    body[body.length - 3] = body[body.length - 3]! ^ 0x20; // one byte of the body, not of the relay's own header
    changed.deliveries[index] = { ...changed.deliveries[index]!, body };
    assert.equal(changed.ledger.verdict(changed.deliveries).invented.length, 1, `seed ${seed}: changed body`);
  }
});

test('after a cut the spool must hold every acknowledged message not yet delivered, pending, undo no recorded result, and hold nothing unknown', () => {
  for (let seed = 1; seed <= HISTORIES; seed++) {
    const generated = history(seed);
    const life = generated.ledger.lives[0]!;
    const delivered = generated.deliveries.slice(0, life.sinkTo);
    const deliveredRecipients = new Set(delivered.map((message) => message.to[0]!));
    const waiting = [...generated.ledger.acked.keys()].filter((recipient) => !deliveredRecipients.has(recipient));
    const faithful = new Map(waiting.map((recipient) => [recipient, 'pending']));
    const check = (snapshot: Map<string, string>): PowerCutLedger => {
      const ledger = new PowerCutLedger();
      for (const [recipient, message] of generated.ledger.sent) ledger.sent.set(recipient, message);
      for (const [recipient, id] of generated.ledger.acked) ledger.acked.set(recipient, id);
      ledger.lives.push(life);
      ledger.checkAfterCut(life, snapshot, delivered);
      return ledger;
    };
    const verdict = (snapshot: Map<string, string>) => check(snapshot).verdict(delivered);
    assert.deepEqual(verdict(faithful).lostAtCut, [], `seed ${seed}`);
    if (waiting[0]) assert.equal(verdict(new Map([...faithful].filter(([recipient]) => recipient !== waiting[0]))).lostAtCut.length, 1, `seed ${seed}: ${waiting[0]} dropped`);
    const [recorded] = life.recorded.keys();
    if (recorded) assert.equal(verdict(new Map([...faithful, [recorded, 'pending']])).resultsLostAtCut.length, 1, `seed ${seed}: ${recorded} pending again`);
    assert.equal(verdict(new Map([...faithful, ['nobody@dest.test', 'pending']])).invented.length, 1, `seed ${seed}: unknown message in the spool`);
  }
});
