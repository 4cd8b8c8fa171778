// The open GET /warmup of a relay's admin API, on a relay started in this process with both admin
// tokens set: with no token it answers 200 with `{ virtualMtas }`, one entry per VirtualMTA still
// warming (day, this pod's caps, use in the day and hour, when the day ends), the same list the
// read route GET /api/v1/warmup gives the read token. A warm VirtualMTA and one whose plan has
// ended are not listed. The operator reads this route to write status.warmup.
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { pino } from 'pino';
import { Relay } from '../../mta/relay.ts';
import { warmupWindow } from '../../mta/delivery/warmup-schedule.ts';
import { WarmupPlan } from '../../mta/config/warmup-plan.ts';
import { freePort, loopbackRelayConfig, temporaryDirectory, writeRelayConfig } from '../fixtures/relay-process.ts';

const READ = 'read-only-token-for-warmup-route-test';
const DAY_MS = 86_400_000;
const today = new Date().toISOString().slice(0, 10);
const longAgo = new Date(Date.now() - 30 * DAY_MS).toISOString().slice(0, 10);
const warming = { start: today, schedule: [{ day: 1, daily: 300, hourly: 40 }, { day: 2, daily: 1000 }] };

let directory: { path: string; remove: () => Promise<void> };
let relay: Relay;
let adminUrl: string;

before(async () => {
  directory = await temporaryDirectory('vmta-warmup-route-');
  await writeFile(path.join(directory.path, 'token'), 'full-admin-token-for-warmup-route-test\n');
  await writeFile(path.join(directory.path, 'read-token'), `${READ}\n`);
  const adminPort = await freePort();
  const base = loopbackRelayConfig(await freePort(), adminPort, { admin: { address: '127.0.0.1', port: adminPort, tokenFile: 'token', readTokenFile: 'read-token' } });
  await writeRelayConfig(directory.path, {
    ...base,
    pool: {
      ...base.pool,
      virtualMtas: [
        { name: 'vmta-warm', hostname: 'warm.relay.test' },
        { name: 'vmta-new', hostname: 'new.relay.test', warmup: warming },
        { name: 'vmta-done', hostname: 'done.relay.test', warmup: { start: longAgo, schedule: [{ day: 1, daily: 10 }, { day: 5, daily: 100 }] } },
      ],
    },
  });
  relay = await Relay.start({ configDir: directory.path, shutdownTimeoutMs: 1000, logger: pino({ level: 'silent' }) });
  adminUrl = `http://127.0.0.1:${adminPort}`;
});

after(async () => {
  await relay?.shutdown('test over');
  await directory?.remove();
});

test('GET /warmup answers without a token: each warming VirtualMTA\'s day, caps and use, as GET /api/v1/warmup gives the read token', async () => {
  const open = await fetch(`${adminUrl}/warmup`);
  assert.equal(open.status, 200);
  const body = (await open.json()) as { virtualMtas: unknown[] };
  const window = warmupWindow(WarmupPlan.parse(warming), Date.now())!;
  assert.deepEqual(body, { virtualMtas: [{ virtualMta: 'vmta-new', day: 1, dailyCap: 300, hourlyCap: 40, dailyUsed: 0, hourlyUsed: 0, dayEndsAt: new Date(window.dayEndsAt).toISOString() }] });
  const read = await fetch(`${adminUrl}/api/v1/warmup`, { headers: { authorization: `Bearer ${READ}` } });
  assert.equal(read.status, 200);
  assert.deepEqual(await read.json(), body, 'the open route and the read route list the same');
  assert.equal((await fetch(`${adminUrl}/api/v1/warmup`)).status, 401, 'the read route still needs a token');
});
