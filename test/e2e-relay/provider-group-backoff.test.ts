// Backoff applies to a provider group (PowerMTA's mx-rollup queue backing off as one): through
// the real relay process, a throttling 421 on one domain of a group (MX resolved by a loopback
// DNS server) slows every domain on the provider's MX to the backoff's one connection and rate,
// while a domain outside the group keeps its own pace. Beside it, the policy precedence as a
// class of inputs: a domain entry's backoff > the group's > a catch-all "*" block's.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { DomainSettings, ProviderGroup, type ProviderGroupConfig } from '../../mta/config/schema.ts';
import { BackoffState } from '../../mta/delivery/backoff.ts';
import type { DestinationQueue } from '../../mta/delivery/destination-queue.ts';
import { resolveDomainSettings } from '../../mta/delivery/domain-settings.ts';
import { DestinationBackoff } from '../../mta/delivery/group-backoff.ts';
import { startDnsServer } from '../fixtures/dns-server.ts';
import { adminGet, freePort, loopbackRelayConfig, startRelayProcess, temporaryDirectory, writeRelayConfig, writeTestAdminToken, type RelayProcess } from '../fixtures/relay-process.ts';
import { startSinkGroup, type SinkMx } from '../fixtures/sink-mx.ts';
import { sendMarkedMessage } from '../fixtures/smtp-clients.ts';
import { ManualClock } from '../delivery/manual-clock.ts';

const BACKOFF_RATE_PER_S = 2;
const THROTTLED = 'throttle@a.test';
/** Three domains on the provider's MX hosts, one elsewhere. */
const MEMBERS = { 'a.test': 'mx1.bigmail.test', 'b.test': 'mx2.bigmail.test', 'c.test': 'mx3.bigmail.test' } as const;
const OUTSIDER = 'd.test';

const cleanups: (() => Promise<unknown> | unknown)[] = [];
let relay: RelayProcess;
let relayPort: number;
let providerMx: SinkMx;
let otherMx: SinkMx;
const deliveredAt = new Map<string, number>();

before(async () => {
  const record = (stage: 'rcpt' | 'data', recipients: readonly string[]) => {
    if (stage === 'rcpt' && recipients.includes(THROTTLED)) return '421 4.7.28 Unusual rate of mail from your IP address, try again later';
    if (stage === 'data') for (const recipient of recipients) deliveredAt.set(recipient, Date.now());
    return undefined;
  };
  [providerMx, otherMx] = (await startSinkGroup([{ replyFor: record }, { replyFor: record }])) as [SinkMx, SinkMx];
  cleanups.push(() => Promise.all([providerMx.close(), otherMx.close()]));
  const dns = await startDnsServer({
    ...Object.fromEntries(Object.entries(MEMBERS).flatMap(([domain, mx]) => [[domain, { mx: [{ preference: 10, exchange: mx }] }], [mx, { a: [providerMx.address] }]])),
    [OUTSIDER]: { mx: [{ preference: 10, exchange: 'mx.other.test' }] },
    'mx.other.test': { a: [otherMx.address] },
  });
  cleanups.push(() => dns.close());
  const directory = await temporaryDirectory('vmta-group-backoff-');
  cleanups.push(() => directory.remove());
  relayPort = await freePort();
  const adminPort = await freePort();
  const config = loopbackRelayConfig(relayPort, adminPort, { admin: { address: '127.0.0.1', port: adminPort, tokenFile: await writeTestAdminToken(directory.path) } });
  config.pool = {
    name: 'pool-a',
    virtualMtas: [{ name: 'vmta-1', hostname: 'out1.relay.test' }],
    domainDefaults: [{ match: '*', tlsPolicy: 'none', maxSmtpOut: 10, maxMessagesPerConnection: 1, retryAfter: ['1s'] }],
    providerGroups: [{ name: 'bigmail', mxHosts: ['*.bigmail.test'], backoff: { replyPatterns: ['^421', '4\\.7\\.28'], maxSmtpOut: 1, maxMessageRate: `${BACKOFF_RATE_PER_S}/s`, retryAfter: '10m', returnAfter: '1h' } }],
  };
  // The MX port is shared: both sinks listen on it, each on its own loopback address.
  config.delivery = { resolvers: [dns.server], mxPort: providerMx.port };
  await writeRelayConfig(directory.path, config);
  relay = await startRelayProcess({ configDir: directory.path, adminPort, args: ['--shutdown-timeout', '2s'] });
  cleanups.push(() => relay.kill('SIGKILL'));
});

after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

async function eventually(what: string, probe: () => boolean, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!probe()) {
    if (Date.now() > deadline) throw new Error(`timed out: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** Messages per second between the first and the last delivery of the recipients. */
function rateOf(recipients: readonly string[]): number {
  const times = recipients.map((recipient) => deliveredAt.get(recipient)!).sort((a, b) => a - b);
  return ((times.length - 1) * 1000) / Math.max(1, times.at(-1)! - times[0]!);
}

test('a throttling reply on one domain of a provider group slows every domain of the group, not the others', async () => {
  // One message to each domain, one at a time: the relay learns every MX (and so the group).
  for (const domain of [...Object.keys(MEMBERS), OUTSIDER]) {
    await sendMarkedMessage(relayPort, 'app@sender.test', `first@${domain}`, `first ${domain}`);
    await eventually(`first@${domain} delivered`, () => deliveredAt.has(`first@${domain}`) && providerMx.openSessions + otherMx.openSessions === 0);
  }
  assert.equal(providerMx.maxOpenSessions, 1, 'one connection at a time before the burst');

  await sendMarkedMessage(relayPort, 'app@sender.test', THROTTLED, 'throttled');
  const entered = await relay.waitForLog((line) => line.msg === 'backoff entered' && line.domain === 'a.test', 20_000);
  assert.equal(entered.providerGroup, 'bigmail');
  const { queues } = await adminGet<{ queues: { domain: string; providerGroup: string | null; backoff: { active: boolean } }[] }>(relay.adminUrl, '/api/v1/queues');
  const throttled = queues.find((queue) => queue.domain === 'a.test');
  assert.deepEqual([throttled?.providerGroup, throttled?.backoff.active], ['bigmail', true], 'the queue list shows the throttled queue\'s group and backoff');
  const members = ['b.test', 'c.test'].flatMap((domain) => Array.from({ length: 6 }, (_, index) => `u${index}@${domain}`));
  const outsiders = Array.from({ length: 6 }, (_, index) => `u${index}@${OUTSIDER}`);
  await Promise.all([...members, ...outsiders].map((to) => sendMarkedMessage(relayPort, 'app@sender.test', to, `burst ${to}`)));
  await eventually('the burst delivered', () => [...members, ...outsiders].every((to) => deliveredAt.has(to)), 60_000);

  const memberRate = rateOf(members);
  const outsiderRate = rateOf(outsiders);
  console.log(`group backoff: provider MX max concurrent ${providerMx.maxOpenSessions} (backoff limit 1), group ${memberRate.toFixed(2)} msg/s over ${members.length} (backoff ${BACKOFF_RATE_PER_S}/s), outsider ${outsiderRate.toFixed(2)} msg/s over ${outsiders.length}`);
  assert.equal(providerMx.maxOpenSessions, 1, 'one connection for the whole group while in backoff');
  assert.ok(memberRate <= BACKOFF_RATE_PER_S * 1.05, `the group's domains together at ${memberRate.toFixed(2)}/s, within the backoff's ${BACKOFF_RATE_PER_S}/s`);
  assert.ok(outsiderRate > BACKOFF_RATE_PER_S * 2, `the domain outside the group keeps its pace: ${outsiderRate.toFixed(2)}/s`);
  // Twelve deliveries at the reduced pace later, the group is still in backoff: two more messages to two domains go 1/2 s apart.
  const late = ['late@b.test', 'late@c.test'];
  await Promise.all(late.map((to) => sendMarkedMessage(relayPort, 'app@sender.test', to, `late ${to}`)));
  await eventually('the late messages delivered', () => late.every((to) => deliveredAt.has(to)));
  const gap = Math.abs(deliveredAt.get(late[0]!)! - deliveredAt.get(late[1]!)!);
  assert.ok(gap >= (1000 / BACKOFF_RATE_PER_S) * 0.9, `deliveries do not end the group's backoff before returnAfter: the late messages ${gap} ms apart`);
});

test('the backoff policy of a queue: a domain entry\'s over its provider group\'s over a catch-all block\'s', () => {
  const clock = new ManualClock();
  const group = ProviderGroup.parse({ name: 'bigmail', mxHosts: ['*.bigmail.test'], backoff: { replyPatterns: ['^421'], retryAfter: '7m' } });
  const bare = ProviderGroup.parse({ name: 'bare', mxHosts: ['*.bare.test'] });
  const catchAll = { match: '*', backoff: { replyPatterns: ['^450'], retryAfter: '1m' } };
  const cases: { name: string; domains: object[]; vmtaDomains?: object[]; group: ProviderGroupConfig | undefined; retryAfterMinutes: number | undefined }[] = [
    { name: 'nothing set', domains: [], group: undefined, retryAfterMinutes: undefined },
    { name: 'catch-all only', domains: [catchAll], group: undefined, retryAfterMinutes: 1 },
    { name: 'group over catch-all', domains: [catchAll], group, retryAfterMinutes: 7 },
    { name: 'group alone', domains: [], group, retryAfterMinutes: 7 },
    { name: 'group without backoff keeps the catch-all', domains: [catchAll], group: bare, retryAfterMinutes: 1 },
    { name: 'exact domain entry over group', domains: [catchAll, { match: 'a.test', backoff: { replyPatterns: ['^421'], retryAfter: '3m' } }], group, retryAfterMinutes: 3 },
    { name: 'suffix entry over group', domains: [{ match: '*.test', backoff: { replyPatterns: ['^421'], retryAfter: '4m' } }], group, retryAfterMinutes: 4 },
    { name: 'VirtualMTA domain entry over group', domains: [catchAll], vmtaDomains: [{ match: 'a.test', backoff: { replyPatterns: ['^421'], retryAfter: '5m' } }], group, retryAfterMinutes: 5 },
    { name: 'VirtualMTA catch-all under group', domains: [], vmtaDomains: [catchAll], group, retryAfterMinutes: 7 },
  ];
  for (const { name, domains, vmtaDomains, group: groupOf, retryAfterMinutes } of cases) {
    const parse = (blocks: object[]) => blocks.map((block) => DomainSettings.parse(block));
    const settings = resolveDomainSettings('a.test', { domains: parse(vmtaDomains ?? []) }, parse(domains));
    const queue = { virtualMta: 'vmta-1', domain: 'a.test', settings, backoff: new BackoffState() } as unknown as DestinationQueue;
    const backoff = new DestinationBackoff(clock, () => groupOf);
    assert.equal(backoff.policy(queue)?.retryAfter, retryAfterMinutes === undefined ? undefined : retryAfterMinutes * 60_000, name);
  }
});

test('group backoff: one member\'s throttling reply puts its siblings in backoff until returnAfter; a delivery does not end it', () => {
  const clock = new ManualClock();
  const group = ProviderGroup.parse({ name: 'bigmail', mxHosts: ['*.bigmail.test'], backoff: { replyPatterns: ['^421'], returnAfter: '1h' } });
  const queueOf = (domain: string, virtualMta = 'vmta-1') => ({ virtualMta, domain, settings: resolveDomainSettings(domain, { domains: [] }, []), backoff: new BackoffState() }) as unknown as DestinationQueue;
  const [a, b, otherVmta] = [queueOf('a.test'), queueOf('b.test'), queueOf('b.test', 'vmta-2')];
  const backoff = new DestinationBackoff(clock, () => group);
  assert.equal(backoff.onFailureReply(a, '450 4.2.0 mailbox busy', clock.now()), false, 'a reply not matching the patterns');
  assert.equal(backoff.active(b), undefined);
  assert.equal(backoff.onFailureReply(a, '421 4.7.0 slow down', clock.now()), true);
  assert.ok(backoff.groupActive(b) && backoff.active(b), 'the sibling domain is in the group\'s backoff');
  assert.equal(backoff.active(otherVmta), undefined, 'per VirtualMTA: another source address is not throttled');
  assert.equal(backoff.onDelivery(b), false, 'a delivery leaves the group in backoff');
  clock.advance(59 * 60_000);
  assert.ok(backoff.active(a));
  clock.advance(60_000);
  assert.equal(backoff.active(a), undefined, 'back to normal at returnAfter');
  assert.equal(backoff.active(b), undefined);
});
