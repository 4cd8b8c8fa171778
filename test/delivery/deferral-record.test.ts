// Destination deferrals recorded per destination (mta/delivery/deferral-record.ts): the rounds
// read back after a restart are the ones recorded (a line torn by a crash skipped), and replaying
// them on a recipient's journalled state gives the attempt count and next attempt the running
// relay had, for a class of random histories (arrival during a deferral, per-recipient 4xx
// results between rounds, expiry caps), checked against a model of what the engine does.
import assert from 'node:assert/strict';
import { appendFile, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { pino } from 'pino';
import { applyDeferralRounds, DESTINATION_DEFERRALS_FILE, DestinationDeferrals, type DeferralRound } from '../../mta/delivery/deferral-record.ts';
import type { RecipientState } from '../../mta/spool/types.ts';

const logger = pino({ level: 'silent' });

test('rounds recorded for several destinations are read back in order after a restart; a torn last line is skipped', async (t) => {
  const stateDir = await mkdtemp(path.join(os.tmpdir(), 'vmta-deferrals-'));
  t.after(() => rm(stateDir, { recursive: true, force: true }));
  const writer = new DestinationDeferrals(stateDir, logger);
  await writer.load();
  const recorded = new Map<string, DeferralRound[]>();
  for (let index = 0; index < 30; index++) {
    const domain = `d${index % 3}.test`;
    const round = { at: 1_000 * index, retryAt: 1_000 * index + 600, acceptedUpTo: 1_000 * index - 1, failures: Math.floor(index / 3) + 1, reason: `refused ${index}` };
    await writer.record('vmta-1', domain, round, 1);
    recorded.set(domain, [...(recorded.get(domain) ?? []), round]);
  }
  await writer.close();
  await appendFile(path.join(stateDir, DESTINATION_DEFERRALS_FILE), '\n{"v":"vmta-1","d":"d0.test","t":99');

  const reader = new DestinationDeferrals(stateDir, logger);
  await reader.load();
  for (const [domain, rounds] of recorded) assert.deepEqual(reader.recovered('vmta-1', domain), rounds, domain);
  assert.equal(reader.recovered('vmta-2', 'd0.test'), undefined, 'per VirtualMTA');
  reader.recoveryFinished();
  assert.equal(reader.recovered('vmta-1', 'd0.test'), undefined, 'forgotten once recovery is over');
});

/** A small deterministic generator, so a failing history can be rerun. */
function random(seed: number): () => number {
  let state = seed;
  return () => {
    state = (state * 1_103_515_245 + 12_345) % 2 ** 31;
    return state / 2 ** 31;
  };
}

test('replaying the rounds on the journalled state gives what the running relay held, for 2,000 random histories', () => {
  for (let seed = 1; seed <= 2000; seed++) {
    const next = random(seed);
    const receivedAt = 10_000 + Math.floor(next() * 5_000);
    const queuedAt = receivedAt + Math.floor(next() * 50); // accepted, then queued a little later
    const deadline = receivedAt + 20_000 + Math.floor(next() * 40_000);
    // The engine's view: the recipient in memory; the journal's: the state of its last per-recipient record.
    const live: RecipientState = { address: 'a@d.test', domain: 'd.test', status: 'pending', attempts: 0, nextAttemptAt: 0 };
    let journalled = { ...live };
    const rounds: DeferralRound[] = [];
    let now = 9_000 + Math.floor(next() * 8_000);
    for (let step = 0; step < 12 && now < deadline; step++) {
      if (next() < 0.3 && now >= queuedAt && live.nextAttemptAt <= now) {
        // A per-recipient 4xx: journalled with the absolute count, next attempt later.
        live.attempts += 1;
        live.nextAttemptAt = now + 1 + Math.floor(next() * 8_000);
        live.lastResult = '451 later';
        journalled = { ...live };
        now += 1 + Math.floor(next() * 3_000);
        continue;
      }
      const retryAt = now + 500 + Math.floor(next() * 6_000);
      const queued = now >= queuedAt;
      const takesPart = queued && live.nextAttemptAt <= now;
      // The newest arrival among the messages deferred: once this one is queued, later arrivals may
      // have taken part (whether or not it did); before, only messages accepted (and queued) before it.
      const acceptedUpTo = queued ? receivedAt + Math.floor(next() * (now - receivedAt + 1)) : receivedAt - 1 - Math.floor(next() * 1_000);
      if (takesPart) {
        live.attempts += 1;
        live.nextAttemptAt = Math.min(retryAt, deadline);
        live.lastResult = `refused at ${now}`;
      }
      rounds.push({ at: now, retryAt, acceptedUpTo, failures: rounds.length + 1, reason: `refused at ${now}` });
      now = retryAt + Math.floor(next() * 2_000);
    }
    const recovered = { ...journalled };
    applyDeferralRounds(recovered, receivedAt, deadline, rounds);
    assert.deepEqual([recovered.attempts, recovered.nextAttemptAt, recovered.lastResult], [live.attempts, live.nextAttemptAt, live.lastResult], `history ${seed}: ${JSON.stringify({ receivedAt, queuedAt, journalled, rounds })}`);
  }
});
