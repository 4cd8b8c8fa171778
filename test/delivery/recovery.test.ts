import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { pino } from 'pino';
import { DeliveryEngine } from '../../mta/delivery/delivery-engine.ts';
import { MxResolver } from '../../mta/delivery/mx-resolver.ts';
import { RelayMetrics } from '../../mta/observe/metrics.ts';
import { startDnsServer, type TestDnsServer } from '../fixtures/dns-server.ts';
import { startSinkGroup, type SinkMx } from '../fixtures/sink-mx.ts';
import { buildConfig, waitFor } from './harness.ts';
import { ManualClock } from './manual-clock.ts';
import { RecordingSpool } from './recording-spool.ts';

let sinks: SinkMx[];
let dns: TestDnsServer;
let dir: string;

before(async () => {
  sinks = await startSinkGroup([{ rcptReplies: { 'later@restart.test': '451 4.3.0 Try later' } }]);
  dir = mkdtempSync(path.join(os.tmpdir(), 'vmta-recovery-'));
  dns = await startDnsServer({ 'restart.test': { mx: [{ preference: 10, exchange: 'mx.restart.test' }] }, 'mx.restart.test': { a: [sinks[0]!.address] } });
});

after(async () => {
  await dns?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
  await Promise.all((sinks ?? []).map((sink) => sink.close()));
});

test('after a restart the spool on disk is scanned and deferred mail keeps its retry time', async () => {
  const sink = sinks[0]!;
  const clock = new ManualClock();
  let spool = await RecordingSpool.open(path.join(dir, 'spool'));
  const config = buildConfig({
    pool: { name: 'pool-restart', virtualMtas: [{ name: 'vmta-r', hostname: 'r.sender.test' }], domainDefaults: [{ match: '*', tlsPolicy: 'none', retryAfter: ['15m'] }] },
    mxPort: sink.port,
    resolvers: [dns.server],
  });
  const start = () =>
    DeliveryEngine.start({ config, spool, clock, metrics: new RelayMetrics({ processMetrics: false }), logger: pino({ level: 'silent' }), resolver: new MxResolver({ servers: [dns.server], clock }) });
  const first = await start();
  const stored = await spool.store(
    {
      mailFrom: 'a@sender.test',
      recipients: [
        { address: 'later@restart.test', domain: 'restart.test', status: 'pending', attempts: 0, nextAttemptAt: 0 },
        { address: 'now@restart.test', domain: 'restart.test', status: 'pending', attempts: 0, nextAttemptAt: 0 },
      ],
      virtualMta: 'vmta-r',
      receivedAt: clock.now(),
      listener: 'test',
      clientAddress: '127.0.0.1',
      eightBitMime: false,
      smtpUtf8: false,
    },
    Buffer.from('Subject: restart\r\n\r\nbody\r\n'),
  );
  first.enqueue(stored);
  await waitFor(() => spool.recorded.filter((entry) => entry.id === stored.id).length === 2, 'the first attempt');
  await first.stop();
  await spool.close();

  // A new process: the spool is reopened from disk.
  spool = await RecordingSpool.open(path.join(dir, 'spool'));
  sink.options = { ...sink.options, rcptReplies: {} };
  const second = await start();
  try {
    const state = second.showMessage(stored.id);
    assert.deepEqual(state?.recipients.map((recipient) => [recipient.address, recipient.status, recipient.attempts]), [['later@restart.test', 'pending', 1], ['now@restart.test', 'delivered', 1]]);
    assert.equal(second.listQueues()[0]?.nextRetryAt, new Date(clock.now() + 15 * 60_000).toISOString());
    const deliveredBefore = sink.messages.filter((message) => message.to.includes('later@restart.test')).length;
    assert.equal(deliveredBefore, 0, 'not retried before its time');
    clock.advance(15 * 60_000);
    await waitFor(() => spool.removed.includes(stored.id), 'delivery at the recovered retry time');
    const resent = sink.messages.filter((message) => message.body.includes('Subject: restart'));
    assert.deepEqual(resent.map((message) => message.to), [['now@restart.test'], ['later@restart.test']], 'the delivered recipient is not sent again');
  } finally {
    await second.stop();
    await spool.close();
  }
});
