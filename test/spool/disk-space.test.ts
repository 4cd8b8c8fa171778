// The spool on a real full file system (a small tmpfs): results are recorded from the reserve
// when the disk is full, delivery is held before the reserve runs out, and space coming back
// ends the hold, restores the reserve and lets mail in again. The relay's own state (the queue
// pauses an operator sets) is saved from the reserve too, so a resume on a full disk holds.
import assert from 'node:assert/strict';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { test } from 'node:test';
import { pino } from 'pino';
import { QueuePauseFile } from '../../mta/admin/queue-pauses.ts';
import { RESERVE_FILE } from '../../mta/spool/disk-space.ts';
import { FileSpool } from '../../mta/spool/spool.ts';
import { waitFor } from '../delivery/harness.ts';
import { pendingEnvelope } from '../fixtures/spool-envelope.ts';
import { mountSmallFilesystem } from '../fixtures/small-filesystem.ts';
import { scanAll } from './spool-files.ts';

const MiB = 1024 * 1024;

test('on a full disk every result is recorded from the reserve until delivery is held; space back ends the hold and restores the reserve', async (t) => {
  const filesystem = await mountSmallFilesystem(t, 8 * MiB);
  if (!filesystem) return;
  t.after(() => filesystem.unmount());
  const directory = path.join(filesystem.path, 'spool');
  const spool = await FileSpool.open(directory, { space: { minFreeBytes: 2 * MiB, reserveBytes: 1 * MiB } });
  assert.equal((await fsp.stat(path.join(directory, RESERVE_FILE))).size, 1 * MiB, 'the reserve is written whole at open');
  assert.equal(spool.hasRoomForMail(), true);
  const stored = await Promise.all(Array.from({ length: 20 }, (_, index) => spool.store(pendingEnvelope(1), Buffer.from(`Subject: ${index}\r\n\r\nbody\r\n`))));

  const filler = path.join(filesystem.path, 'filler');
  assert.ok((await filesystem.fill(filler)) > 0);
  await waitFor(() => !spool.hasRoomForMail(), 'the floor to refuse new mail', 10_000);

  let resumed = 0;
  spool.onDeliveryResume(() => resumed++);
  // One deferral after another, as a delivery engine records them, until the spool says to stop starting attempts.
  const reply = `451 4.7.1 greylisted, try again later: ${'x'.repeat(150)}`;
  const recorded = new Map<string, number>();
  let appends = 0;
  while (!spool.deliveryHold()) {
    const message = stored[appends % stored.length]!;
    await spool.recordRecipientResults(message.id, new Map([[0, { status: 'pending' as const, nextAttemptAt: appends, lastResult: reply }]]));
    recorded.set(message.id, (recorded.get(message.id) ?? 0) + 1);
    appends++;
    assert.ok(appends < 100_000, 'delivery is held before the reserve is spent');
  }
  t.diagnostic(`${appends} results recorded on the full disk before delivery was held`);
  assert.ok(appends > 1000, `the reserve recorded ${appends} results (over 1,000 expected from 1 MiB)`);
  assert.match(spool.deliveryHold()!, /disk is full/);
  // Results of attempts already in flight when the hold began are still recorded.
  for (const message of stored.slice(0, 10)) {
    await spool.recordRecipientResults(message.id, new Map([[0, { status: 'delivered' as const, nextAttemptAt: 0, lastResult: '250 ok' }]]));
    await spool.remove(message.id);
  }

  await fsp.rm(filler);
  await waitFor(() => spool.deliveryHold() === undefined && resumed === 1, 'the hold to end once space is back', 10_000);
  await waitFor(() => spool.hasRoomForMail(), 'mail to be accepted again', 10_000);
  await waitFor(async () => (await fsp.stat(path.join(directory, RESERVE_FILE))).size >= MiB, 'the reserve to grow back to its size', 10_000);
  await spool.close();

  const reopened = await FileSpool.open(directory);
  const found = await scanAll(reopened);
  assert.deepEqual(found.map((message) => message.id).sort(), stored.slice(10).map((message) => message.id).sort(), 'the removals made on the full disk hold');
  for (const message of found) {
    assert.equal(message.envelope.recipients[0]!.attempts, recorded.get(message.id), `message ${message.id}: each result recorded once, none lost or doubled by a retried append`);
  }
  await reopened.close();
});

test('on a full disk a queue pause file is saved from the reserve; without one the save fails with ENOSPC', async (t) => {
  const filesystem = await mountSmallFilesystem(t, 4 * MiB);
  if (!filesystem) return;
  t.after(() => filesystem.unmount());
  const directory = path.join(filesystem.path, 'spool');
  const spool = await FileSpool.open(directory, { space: { minFreeBytes: 1 * MiB, reserveBytes: 1 * MiB } });
  t.after(() => spool.close());
  const logger = pino({ level: 'silent' });
  const stateDir = path.join(directory, 'state');
  // Each state a save can meet: no file yet, and a file to replace (its temporary needs new space either way).
  const lists = [[{ virtualMta: 'vmta-1' }], [{ virtualMta: 'vmta-1' }, { domain: 'example.net' }], []];
  assert.ok((await filesystem.fill(path.join(filesystem.path, 'filler'))) > 0);
  const withoutReserve = new QueuePauseFile(stateDir, logger);
  await assert.rejects(withoutReserve.save(lists[0]!), { code: 'ENOSPC' }, 'the disk is full: a save with no reserve behind it fails');
  const reserveBefore = (await fsp.stat(path.join(directory, RESERVE_FILE))).size;
  const withReserve = new QueuePauseFile(stateDir, logger, (write) => spool.withReserve(write));
  for (const pauses of lists) {
    await withReserve.save(pauses);
    assert.deepEqual(await withReserve.load(), pauses, `the saved list ${JSON.stringify(pauses)} is the one read back`);
  }
  const reserveAfter = (await fsp.stat(path.join(directory, RESERVE_FILE))).size;
  assert.ok(reserveAfter < reserveBefore, `the reserve gave back space (${reserveBefore} → ${reserveAfter} bytes)`);
});
