// Recovery progress after a restart: a relay process started on a spool of 20,000 messages is
// watched from the moment its admin port opens. While it recovers, the queue API answers 503 with
// the progress (never a 404, never a short queue list), readiness stays false while the spool is
// indexed and turns true once the listeners are open (the messages are queued behind them), and
// vmta_spool_messages never reads 0 once messages are found; at the end every message is queued.
// The CLI prints the 503 as one line.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { test } from 'node:test';
import { whileRecovering } from '../../mta/admin/recovery-api.ts';
import { AdminServer } from '../../mta/admin/server.ts';
import { createLogger } from '../../mta/observe/log.ts';
import { RelayMetrics } from '../../mta/observe/metrics.ts';
import { RecoveryProgress } from '../../mta/spool/recovery-progress.ts';
import { fillBlockedQueue } from '../fixtures/blocked-queue.ts';
import { freePort, loopbackRelayConfig, REPO_ROOT, startRelayProcess, temporaryDirectory, writeRelayConfig } from '../fixtures/relay-process.ts';

const MESSAGES = 20_000;
const READ_TOKEN = 'recovery-test-read-token';

interface Observation {
  queues: { status: number; body: { reason?: string; error?: string; recovery?: { found: number; queued: number; phase: string }; queues?: { messages: number }[] } } | 'down';
  ready: number | 'down';
  metrics?: { recovering: number; found: number; queued: number; spoolMessages: number };
}

function sample(text: string, name: string): number {
  const line = text.split('\n').find((candidate) => candidate.startsWith(`${name} `));
  return line === undefined ? Number.NaN : Number(line.slice(name.length + 1));
}

async function observe(adminUrl: string): Promise<Observation> {
  const get = (route: string) => fetch(`${adminUrl}${route}`, { headers: { authorization: `Bearer ${READ_TOKEN}` }, signal: AbortSignal.timeout(5000) });
  const [queues, ready, metrics] = await Promise.all([
    get('/api/v1/queues').then(async (response) => ({ status: response.status, body: (await response.json()) as never }), () => 'down' as const),
    get('/readyz').then((response) => response.status, () => 'down' as const),
    get('/metrics').then((response) => response.text(), () => undefined),
  ]);
  return {
    queues,
    ready,
    ...(metrics
      ? { metrics: { recovering: sample(metrics, 'vmta_spool_recovering'), found: sample(metrics, 'vmta_spool_recovery_found_messages'), queued: sample(metrics, 'vmta_spool_recovery_queued_messages'), spoolMessages: sample(metrics, 'vmta_spool_messages') } }
      : {}),
  };
}

test('restarted on 20,000 spooled messages, the relay reports recovery progress: 503 with progress, not ready while indexing, vmta_spool_messages never 0; then every message queued', async (t) => {
  const directory = await temporaryDirectory('vmta-recovery-');
  t.after(() => directory.remove());
  await fillBlockedQueue({ directory: path.join(directory.path, 'spool'), count: MESSAGES, domain: 'parked.example', body: Buffer.from(`Subject: parked\r\n\r\n${'x'.repeat(1000)}\r\n`) });
  const port = await freePort();
  const adminPort = await freePort();
  await writeFile(path.join(directory.path, 'read-token'), `${READ_TOKEN}\n`);
  await writeRelayConfig(directory.path, loopbackRelayConfig(port, adminPort, { admin: { address: '127.0.0.1', port: adminPort, readTokenFile: 'read-token' } }));

  const observations: Observation[] = [];
  let watching = true;
  let watcher: Promise<void> | undefined;
  const relay = await startRelayProcess({
    configDir: directory.path,
    adminPort,
    onSpawn: (started) => {
      watcher = (async () => {
        while (watching) {
          const observation = await observe(started.adminUrl);
          observations.push(observation);
          if (observation.queues !== 'down' && observation.queues.status === 200) return;
        }
      })();
    },
  });
  t.after(() => relay.kill('SIGKILL'));
  await watcher;
  watching = false;
  const final = await observe(relay.adminUrl);

  const answered = observations.filter((observation) => observation.queues !== 'down');
  const recovering = answered.filter((observation) => observation.queues !== 'down' && observation.queues.status === 503);
  t.diagnostic(`${observations.length} observations while starting, ${recovering.length} answered 503 recovering`);
  assert.ok(recovering.length > 0, 'the queue API was seen answering 503 while the spool was recovered');
  assert.ok(
    recovering.some((observation) => observation.ready === 200),
    'ready (listening) while the messages were still being queued, not only once all are',
  );
  let lastQueued = 0;
  for (const observation of answered) {
    const queues = observation.queues as Exclude<Observation['queues'], 'down'>;
    if (queues.status === 200) {
      assert.equal(queues.body.queues!.reduce((total, queue) => total + queue.messages, 0), MESSAGES, 'once the queue API answers, it lists every message');
      continue;
    }
    assert.equal(queues.status, 503, `while recovering the queue API answers 503, not ${queues.status}: ${JSON.stringify(queues.body)}`);
    assert.equal(queues.body.reason, 'recovering');
    assert.match(queues.body.error!, /recovering its spool/);
    const progress = queues.body.recovery!;
    assert.ok(progress.found <= MESSAGES && progress.queued <= progress.found, JSON.stringify(progress));
    assert.ok(progress.queued >= lastQueued, 'progress only grows');
    lastQueued = progress.queued;
    if (progress.phase === 'indexing') assert.notEqual(observation.ready, 200, 'not ready while indexing');
  }
  for (const { metrics } of observations) {
    if (!metrics || !(metrics.found > 0)) continue;
    assert.ok(metrics.spoolMessages > 0, `vmta_spool_messages reads ${metrics.spoolMessages} while ${metrics.found} messages are found`);
  }
  assert.ok(observations.some(({ metrics }) => metrics?.recovering === 1), 'vmta_spool_recovering was seen at 1');
  assert.deepEqual(final.metrics, { recovering: 0, found: MESSAGES, queued: MESSAGES, spoolMessages: MESSAGES });
  const queues = final.queues as Exclude<Observation['queues'], 'down'>;
  assert.equal(queues.status, 200);
  assert.equal(queues.body.queues!.reduce((total, queue) => total + queue.messages, 0), MESSAGES);
});

test('the CLI prints a recovering relay\'s 503 as one line with the progress', async (t) => {
  const progress = new RecoveryProgress();
  progress.found(5000);
  progress.indexed();
  for (let index = 0; index < 1234; index++) progress.queuedOne();
  const admin = await AdminServer.start({
    address: '127.0.0.1',
    port: 0,
    metrics: new RelayMetrics({ processMetrics: false }),
    logger: createLogger('test'),
    readiness: () => ({ ready: false, reason: progress.describe() }),
    configStatus: () => ({}) as never,
    readToken: READ_TOKEN,
  });
  t.after(() => admin.close());
  const notWhileRecovering = async (): Promise<never> => {
    throw new Error('a queue route ran while the spool was being recovered');
  };
  admin.mount(whileRecovering(progress, [{ method: 'GET', path: '/api/v1/queues', access: 'read', handle: notWhileRecovering }]));
  const run = await new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
    const env = { ...process.env, VMTA_ADMIN_TOKEN: READ_TOKEN };
    execFile(process.execPath, [path.join(REPO_ROOT, 'cli', 'vmta.ts'), 'queue', 'list', '--admin', `http://127.0.0.1:${admin.address().port}`], { timeout: 60_000, env }, (error, stdout, stderr) => {
      resolve({ code: error ? Number((error as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
  assert.equal(run.stdout, '');
  const lines = run.stderr.trimEnd().split('\n');
  assert.equal(lines.length, 1, run.stderr);
  assert.match(lines[0]!, /^vmta queue: .*recovering its spool: 1234 of 5000 messages queued for delivery/);
  assert.equal(run.code, 1, 'a relay not able to answer yet is a failure of the call, not a usage error');
});
