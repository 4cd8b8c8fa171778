// The queue counted at once after a restart: a relay stopped cleanly leaves a snapshot of its
// queue list, and the next start serves it (every message counted, the recovery's progress
// beside it) while the spool is still being read back; readiness waits for the spool's index.
// After a kill there is no snapshot (the list answers 503 until recovered, as before), and a
// snapshot of a spool that changed since the stop is dropped, never shown.
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { test } from 'node:test';
import { QUEUE_SNAPSHOT_FILE } from '../../mta/admin/queue-snapshot.ts';
import { fillBlockedQueue } from '../fixtures/blocked-queue.ts';
import { freePort, loopbackRelayConfig, startRelayProcess, temporaryDirectory, writeRelayConfig, type RelayProcess } from '../fixtures/relay-process.ts';

const MESSAGES = 20_000;
const READ_TOKEN = 'snapshot-test-read-token';

interface ListAnswer {
  status: number;
  total: number;
  domains: string[];
  recovering: boolean;
  phase: string | undefined;
  ready: number;
}

async function listQueues(adminUrl: string): Promise<ListAnswer | undefined> {
  const get = (route: string) => fetch(`${adminUrl}${route}`, { headers: { authorization: `Bearer ${READ_TOKEN}` }, signal: AbortSignal.timeout(5000) });
  try {
    const [response, ready] = await Promise.all([get('/api/v1/queues'), get('/readyz')]);
    const body = (await response.json()) as { queues?: { domain: string; messages: number }[]; recovery?: { recovering: boolean; phase: string } };
    const queues = body.queues ?? [];
    return { status: response.status, total: queues.reduce((sum, row) => sum + row.messages, 0), domains: queues.map((row) => row.domain), recovering: body.recovery?.recovering ?? false, phase: body.recovery?.phase, ready: ready.status };
  } catch {
    return undefined; // the admin port is not open yet
  }
}

/** Starts the relay and records every queue-list answer from the moment it is spawned until it has recovered. */
async function startWatched(directory: string, adminPort: number): Promise<{ relay: RelayProcess; answers: ListAnswer[] }> {
  const answers: ListAnswer[] = [];
  let watcher: Promise<void> | undefined;
  const relay = await startRelayProcess({
    configDir: directory,
    adminPort,
    onSpawn: (started) => {
      watcher = (async () => {
        for (;;) {
          const answer = await listQueues(started.adminUrl);
          if (answer) answers.push(answer);
          if ((answer?.status === 200 && !answer.recovering) || started.child.exitCode !== null) return;
        }
      })();
    },
  });
  await watcher;
  return { relay, answers };
}

async function prepare(t: test.TestContext): Promise<{ directory: string; adminPort: number }> {
  const directory = await temporaryDirectory('vmta-snapshot-');
  t.after(() => directory.remove());
  await fillBlockedQueue({ directory: path.join(directory.path, 'spool'), count: MESSAGES, domain: 'parked.example', body: Buffer.from('Subject: parked\r\n\r\nparked\r\n') });
  const port = await freePort();
  const adminPort = await freePort();
  await writeFile(path.join(directory.path, 'read-token'), `${READ_TOKEN}\n`);
  await writeRelayConfig(directory.path, loopbackRelayConfig(port, adminPort, { admin: { address: '127.0.0.1', port: adminPort, readTokenFile: 'read-token' } }));
  return { directory: directory.path, adminPort };
}

const snapshotFile = (directory: string) => path.join(directory, 'spool', 'state', QUEUE_SNAPSHOT_FILE);

test('after a clean stop, the restarted relay counts every message while it still recovers, and is not ready while it indexes', async (t) => {
  const { directory, adminPort } = await prepare(t);
  const first = await startRelayProcess({ configDir: directory, adminPort });
  await first.kill('SIGTERM');
  const saved = JSON.parse(await readFile(snapshotFile(directory), 'utf8')) as { messages: number };
  assert.equal(saved.messages, MESSAGES, 'the clean stop saved the queue');

  const { relay, answers } = await startWatched(directory, adminPort);
  t.after(() => relay.kill('SIGKILL'));
  const whileRecovering = answers.filter((answer) => answer.recovering);
  t.diagnostic(`${answers.length} answers while starting, ${whileRecovering.length} from the snapshot`);
  assert.ok(whileRecovering.length > 0, 'the queue list answered from the snapshot while recovering');
  for (const answer of answers) {
    assert.equal(answer.status, 200, 'with a snapshot the queue list never answers 503');
    assert.equal(answer.total, MESSAGES, 'every message is counted from the first answer on');
    assert.deepEqual(answer.domains, ['parked.example']);
    if (answer.phase === 'indexing') assert.notEqual(answer.ready, 200, 'not ready while indexing');
  }
  await assert.rejects(readFile(snapshotFile(directory)), 'the snapshot is taken: a crash later cannot serve it again');
});

for (const [how, spoil] of [
  ['the relay was killed (no snapshot left)', async () => 0],
  ['the spool changed after the stop (one more message stored)', async (directory: string) => {
    await fillBlockedQueue({ directory: path.join(directory, 'spool'), count: 1, domain: 'parked.example', body: Buffer.from('Subject: later\r\n\r\nlater\r\n') });
    return 1;
  }],
] as const) {
  test(`when ${how}, the queue list answers 503 until recovered and never shows a wrong count`, async (t) => {
    const { directory, adminPort } = await prepare(t);
    const first = await startRelayProcess({ configDir: directory, adminPort });
    await first.kill(how.startsWith('the relay was killed') ? 'SIGKILL' : 'SIGTERM');
    const expected = MESSAGES + (await spoil(directory));
    const { relay, answers } = await startWatched(directory, adminPort);
    t.after(() => relay.kill('SIGKILL'));
    for (const answer of answers) {
      if (answer.status === 200) assert.equal(answer.total, expected, 'a queue list answered counts every message');
      else assert.equal(answer.status, 503);
    }
    assert.ok(answers.some((answer) => answer.status === 503), 'the queue list waited for the recovery');
  });
}
