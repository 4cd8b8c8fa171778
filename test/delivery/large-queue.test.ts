// A queue far larger than any argument list or stack a JavaScript engine allows (V8 overflows
// spreading ~120,000 items into one call) for one destination that refuses every connection:
// the engine defers and retries it, and a restarted engine on the same spool does too, each
// message waiting for the retry time recorded before the restart (one record per destination
// deferral in the state folder, not one per message).
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { pino } from 'pino';
import { DeliveryEngine } from '../../mta/delivery/delivery-engine.ts';
import { MxResolver } from '../../mta/delivery/mx-resolver.ts';
import { RelayMetrics } from '../../mta/observe/metrics.ts';
import { FileSpool } from '../../mta/spool/spool.ts';
import { fillBlockedQueue } from '../fixtures/blocked-queue.ts';
import { startDnsServer, type TestDnsServer } from '../fixtures/dns-server.ts';
import { freePort } from '../fixtures/relay-process.ts';
import { loopbackAddresses } from '../fixtures/sink-mx.ts';
import { buildConfig, waitFor } from './harness.ts';
import { ManualClock } from './manual-clock.ts';

/** Above every stack limit seen for one spread call (120,000 to 150,000 on Node 24 x64). */
const QUEUED = 200_000;
const RETRY_MS = 10 * 60_000;

let dns: TestDnsServer;
let dir: string;
let refusingPort: number;
const clock = new ManualClock();

before(async () => {
  const [deadAddress] = loopbackAddresses(1) as [string];
  refusingPort = await freePort(); // nothing listens there: every connection is refused
  dns = await startDnsServer({ 'blocked.test': { mx: [{ preference: 10, exchange: 'mx.blocked.test' }] }, 'mx.blocked.test': { a: [deadAddress] } });
  dir = mkdtempSync(path.join(os.tmpdir(), 'vmta-large-queue-'));
  await fillBlockedQueue({ directory: path.join(dir, 'spool'), count: QUEUED, domain: 'blocked.test', body: Buffer.from('Subject: q\r\n\r\nq\r\n'), receivedAt: clock.now() });
});

after(async () => {
  await dns?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

async function startEngine(spool: FileSpool): Promise<DeliveryEngine> {
  const config = buildConfig({
    pool: { name: 'pool-big', virtualMtas: [{ name: 'vmta-1', hostname: 'big.sender.test' }], domainDefaults: [{ match: '*', tlsPolicy: 'none', retryAfter: ['10m'], bounceAfter: '5d' }] },
    mxPort: refusingPort,
    resolvers: [dns.server],
  });
  return DeliveryEngine.start({ config, spool, clock, metrics: new RelayMetrics({ processMetrics: false }), logger: pino({ level: 'silent' }), stateDir: path.join(dir, 'state'), resolver: new MxResolver({ servers: [dns.server], clock }) });
}

/**
 * Waits until every queued message is scheduled for a retry after `after`, none ready or in flight;
 * `tried`: the destination was just tried (after a restart it is not: each message waits for the retry recorded before).
 */
async function allDeferredPast(engine: DeliveryEngine, after: number, tried = true): Promise<string> {
  const queue = await waitFor(() => {
    const row = engine.listQueues().find((candidate) => candidate.domain === 'blocked.test');
    return row && row.scheduled === QUEUED && row.ready === 0 && row.inFlight === 0 && row.nextRetryAt && Date.parse(row.nextRetryAt) > after ? row : undefined;
  }, `all ${QUEUED} messages deferred past ${new Date(after).toISOString()}`, 120_000);
  if (tried) assert.match(queue.lastError ?? '', /ECONNREFUSED|refused/i);
  else assert.equal(queue.lastError, null, 'not tried again at once after the restart');
  return queue.nextRetryAt!;
}

test(`${QUEUED} messages for one refusing destination are deferred at every retry, before and after a restart`, async () => {
  for (let run = 0; run < 2; run += 1) {
    const spool = await FileSpool.open(path.join(dir, 'spool'));
    const engine = await startEngine(spool);
    try {
      let retryAt = await allDeferredPast(engine, clock.now(), run === 0);
      for (let retry = 0; retry < 2; retry += 1) {
        clock.advance(Date.parse(retryAt) - clock.now());
        retryAt = await allDeferredPast(engine, Date.parse(retryAt));
      }
    } finally {
      await engine.stop();
      await spool.close();
    }
  }
});
