// Warm-up counts across SIGKILL (mta/delivery/warmup-ledger.ts): a relay process with a warming
// VirtualMTA (daily cap CAP) and a warm overflow VirtualMTA, sending one message at a time to a
// sink (all mail routed to the warming one), is killed after k of its warming deliveries reached the sink, for k across the whole
// day (first message, middle, one short of the cap, at the cap), and started again on the same
// spool. The guarantee: the count read back is never below what the sink got from the warming
// address (units are written before their transactions can finish), the warming address never
// sends more than CAP over both lives, and every message arrives (the rest through the overflow).
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { RuntimeConfigInput } from '../../mta/config/schema.ts';
import { freePort, loopbackRelayConfig, startRelayProcess, temporaryDirectory, writeRelayConfig, type RelayProcess } from '../fixtures/relay-process.ts';
import { loopbackAddresses, startSinkMx, type SinkMx } from '../fixtures/sink-mx.ts';
import { sendMarkedMessage } from '../fixtures/smtp-clients.ts';
import { waitForRelay } from '../fixtures/wait-for-relay.ts';

const CAP = 6;
const MESSAGES = 10;
let sink: SinkMx;
let warmingAddress: string;
let overflowAddress: string;
const cleanups: (() => Promise<unknown>)[] = [];

before(async () => {
  [warmingAddress, overflowAddress] = loopbackAddresses(2) as [string, string];
  sink = await startSinkMx({ address: loopbackAddresses(1)[0]! });
  cleanups.push(() => sink.close());
});

after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

function relayConfig(port: number, adminPort: number): RuntimeConfigInput {
  const today = new Date().toISOString().slice(0, 10);
  return loopbackRelayConfig(port, adminPort, {
    pool: {
      name: 'pool-warm',
      // One message per connection and one connection at a time, so a kill lands between deliveries of the day.
      domainDefaults: [{ match: '*', smtpHost: `${sink.address}:${sink.port}`, tlsPolicy: 'none', maxSmtpOut: 1, maxMessagesPerConnection: 1, retryAfter: ['1s'] }],
      virtualMtas: [
        { name: 'warming', sourceAddress: warmingAddress, hostname: 'warming.sender.test', warmup: { start: today, schedule: [{ day: 1, daily: CAP }, { day: 30, daily: 100_000 }] } },
        { name: 'warm', sourceAddress: overflowAddress, hostname: 'warm.sender.test' },
      ],
      overflowVirtualMtas: ['warm'],
    },
    relayPolicies: [{ name: 'loopback', allowedCidrs: ['127.0.0.0/8'], routing: { defaultVirtualMta: 'warming' } }],
  });
}

const mine = (tag: string) => sink.messages.filter((message) => message.to.some((address) => address.startsWith(`${tag}-`)));
const fromWarming = (tag: string) => mine(tag).filter((message) => message.remoteAddress === warmingAddress && message.ehloName === 'warming.sender.test').length;
const markers = (tag: string) => new Set(mine(tag).flatMap((message) => message.to));

async function dailyUsed(relay: RelayProcess): Promise<number> {
  const body = (await (await fetch(`${relay.adminUrl}/warmup`)).json()) as { virtualMtas: { virtualMta: string; dailyUsed: number; dailyCap: number }[] };
  const entry = body.virtualMtas.find((status) => status.virtualMta === 'warming');
  assert.ok(entry, `GET /warmup lists the warming VirtualMTA: ${JSON.stringify(body)}`);
  assert.equal(entry.dailyCap, CAP);
  return entry.dailyUsed;
}

for (const killAfter of [1, 3, CAP - 1, CAP]) {
  test(`SIGKILL after ${killAfter} of ${CAP} warming deliveries: the count comes back at least as high, the address sends at most ${CAP} over both lives, and all ${MESSAGES} messages arrive`, async () => {
    const tag = `kill${killAfter}`;
    const directory = await temporaryDirectory(`vmta-warmup-restart-${killAfter}-`);
    cleanups.push(directory.remove);
    const port = await freePort();
    const adminPort = await freePort();
    await writeRelayConfig(directory.path, relayConfig(port, adminPort));
    let relay = await startRelayProcess({ configDir: directory.path, adminPort });
    cleanups.push(() => relay.kill('SIGKILL'));
    for (let index = 0; index < MESSAGES; index += 1) await sendMarkedMessage(port, 'sender@sender.test', `${tag}-${index}@example.test`, `${tag}-${index}`);
    await waitForRelay(`${killAfter} warming deliveries at the sink`, () => (fromWarming(tag) >= killAfter ? true : undefined), [relay]);
    await relay.kill('SIGKILL');
    const seenBeforeKill = fromWarming(tag);

    relay = await startRelayProcess({ configDir: directory.path, adminPort });
    const usedAfterRestart = await dailyUsed(relay);
    assert.ok(usedAfterRestart >= seenBeforeKill, `the ledger never counts fewer than the sink received: ${usedAfterRestart} counted, ${seenBeforeKill} at the sink`);
    await waitForRelay(`all ${MESSAGES} ${tag} messages at the sink`, () => (markers(tag).size === MESSAGES ? true : undefined), [relay]);
    const warmingTotal = fromWarming(tag);
    console.log(`warmup_restart kill_after=${killAfter} at_sink_before_kill=${seenBeforeKill} counted_after_restart=${usedAfterRestart} warming_total=${warmingTotal} cap=${CAP} overflow=${mine(tag).length - warmingTotal} copies=${mine(tag).length}`);
    assert.ok(warmingTotal <= CAP, `the warming address sent ${warmingTotal}, above its cap of ${CAP}`);
    assert.ok(await dailyUsed(relay) >= warmingTotal, 'the count covers every warming delivery');
    await relay.kill();
  });
}
