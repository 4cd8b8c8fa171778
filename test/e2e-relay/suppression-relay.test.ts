// The suppression list through two real relay processes of one pool, each the other's peer:
// a hard bounce (550 5.1.1 at a sink MX found through a real DNS server) suppresses the
// recipient on the relay that saw it and on its peer, where Python's smtplib then gets 550 at
// RCPT TO; a policy bounce (5.7.1) does not; `vmta suppression` adds, lists and removes over the
// admin API, with its exit codes; mode bounce (hot reload) accepts and bounces at once with a
// DSN; a relay that was down reads what it missed from its peer at start; metrics count it all.
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { parseDsn } from '../fixtures/dsn-client.ts';
import { startDnsServer } from '../fixtures/dns-server.ts';
import { baseRelayConfig, freePort, metricValue, REPO_ROOT, startRelayProcess, temporaryDirectory, writeRelayConfig, type RelayProcess } from '../fixtures/relay-process.ts';
import { startSinkGroup, type SinkMx } from '../fixtures/sink-mx.ts';
import { run, smtplibSend } from '../fixtures/smtp-clients.ts';
import type { RuntimeConfigInput } from '../../mta/config/schema.ts';
import { waitForRelay } from '../fixtures/wait-for-relay.ts';

const TOKEN = 'suppression-admin-token';

interface Node {
  name: string;
  dir: string;
  port: number;
  adminPort: number;
  relay: RelayProcess;
  config: (mode: 'refuse' | 'bounce') => RuntimeConfigInput;
}

let a: Node;
let b: Node;
let recipientMx: SinkMx;
let senderMx: SinkMx;
const cleanups: (() => Promise<unknown> | void)[] = [];

before(async () => {
  [recipientMx, senderMx] = (await startSinkGroup([
    { rcptReplies: { 'gone@example.net': '550 5.1.1 <gone@example.net>: Recipient address rejected: User unknown', 'blocked@example.net': '550 5.7.1 Message rejected for policy reasons' } },
    {},
  ])) as [SinkMx, SinkMx];
  cleanups.push(() => Promise.all([recipientMx.close(), senderMx.close()]));
  const dns = await startDnsServer({
    'example.net': { mx: [{ preference: 10, exchange: 'mx.example.net' }] },
    'mx.example.net': { a: [recipientMx.address] },
    'example.com': { mx: [{ preference: 10, exchange: 'mx.example.com' }] },
    'mx.example.com': { a: [senderMx.address] },
  });
  cleanups.push(() => dns.close());
  const ports = { a: [await freePort(), await freePort()], b: [await freePort(), await freePort()] };
  const make = async (name: 'a' | 'b', peerAdmin: number): Promise<Node> => {
    const directory = await temporaryDirectory(`vmta-suppression-${name}-`);
    cleanups.push(directory.remove);
    await writeFile(path.join(directory.path, 'admin-token'), `${TOKEN}\n`);
    const [port, adminPort] = ports[name] as [number, number];
    const config = (mode: 'refuse' | 'bounce'): RuntimeConfigInput => baseRelayConfig({
      hostname: `relay-${name}.test`,
      pool: { name: 'pool-a', domainDefaults: [{ match: '*', tlsPolicy: 'none', retryAfter: ['1s'] }], virtualMtas: [{ name: 'vmta-1', hostname: `out-${name}.test` }] },
      listeners: [{ name: 'relay', address: '127.0.0.1', port, relayPolicy: 'loopback', auth: { mechanisms: [] } }],
      relayPolicies: [{ name: 'loopback', allowedCidrs: ['127.0.0.0/8'] }],
      admin: { address: '127.0.0.1', port: adminPort, tokenFile: 'admin-token' },
      delivery: { resolvers: [dns.server], mxPort: recipientMx.port },
      suppression: { mode, hardBounceCategories: ['bad-mailbox'], peers: [`127.0.0.1:${peerAdmin}`] },
    });
    await writeRelayConfig(directory.path, config('refuse'));
    const relay = await startRelayProcess({ configDir: directory.path, adminPort });
    const node: Node = { name, dir: directory.path, port, adminPort, relay, config };
    cleanups.push(() => node.relay.kill('SIGKILL'));
    return node;
  };
  a = await make('a', ports.b[1]!);
  b = await make('b', ports.a[1]!);
});

after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

function waitFor<T>(what: string, probe: () => T | undefined | Promise<T | undefined>, timeoutMs = 30_000): Promise<T> {
  return waitForRelay(what, probe, [a.relay, b.relay], timeoutMs);
}

function send(node: Node, to: string[], marker: string) {
  return smtplibSend({ host: '127.0.0.1', port: node.port, mode: 'plain', from: 'app@example.com', to, message: `From: app@example.com\r\nSubject: ${marker}\r\n\r\n${marker}\r\n` });
}

interface Listing {
  mode: string | null;
  total: number;
  entries: { address: string; reason: string; source: string; status?: string; detail?: string; origin: string; addedAt: string }[];
}

async function listing(node: Node, query = ''): Promise<Listing> {
  return (await (await fetch(`${node.relay.adminUrl}/api/v1/suppressions${query}`, { headers: { authorization: `Bearer ${TOKEN}` } })).json()) as Listing;
}

function vmta(node: Node, ...args: string[]) {
  return run(process.execPath, [path.join(REPO_ROOT, 'cli/vmta.ts'), 'suppression', ...args, '--admin', node.relay.adminUrl]);
}

const tokenFile = () => path.join(a.dir, 'admin-token');

test('a 5.1.1 hard bounce suppresses the recipient on the relay that saw it and on its peer, where the app gets 550 at RCPT TO', async () => {
  const sent = await send(a, ['gone@example.net'], 'hard-bounce');
  assert.match(sent.stdout, /^OK 250 /, sent.stdout + sent.stderr);
  const entry = await waitFor('gone@ on relay a', async () => (await listing(a, '?address=gone@example.net')).entries[0]);
  assert.equal(entry.reason, 'bad-mailbox');
  assert.equal(entry.source, 'delivery');
  assert.equal(entry.status, '5.1.1');
  assert.equal(entry.origin, 'relay-a.test');
  assert.match(entry.detail!, /User unknown/);
  const shared = await waitFor('gone@ on relay b', async () => (await listing(b, '?address=GONE@example.net')).entries[0]);
  assert.deepEqual(shared, entry, 'the peer holds the same entry');
  for (const spelling of ['gone@example.net', 'Gone@EXAMPLE.net']) {
    const refused = await send(b, [spelling], 'refused');
    assert.match(refused.stdout, /^ERROR SMTPRecipientsRefused 550 5\.1\.1 <.*>: recipient is on this pool's suppression list \(hard bounce bad-mailbox 5\.1\.1 on .*\); not sent/, refused.stdout);
  }
  assert.equal(await metricValue(a.relay.adminUrl, 'vmta_suppression_additions_total{reason="bad-mailbox",source="delivery"}'), 1);
  assert.equal(await metricValue(b.relay.adminUrl, 'vmta_suppression_additions_total{reason="bad-mailbox",source="peer"}'), 1);
  assert.equal(await metricValue(b.relay.adminUrl, 'vmta_suppression_hits_total{action="refused"}'), 2);
  assert.equal(await metricValue(b.relay.adminUrl, 'vmta_inbound_rejections_total{listener="relay",reason="suppressed"}'), 2);
  assert.equal(await metricValue(b.relay.adminUrl, 'vmta_suppression_entries'), 1);
});

test('a bounce of a category not listed (5.7.1 policy) does not suppress', async () => {
  await send(a, ['blocked@example.net'], 'policy');
  await waitFor('the DSN for blocked@', () => senderMx.messages.find((message) => message.body.includes('blocked@example.net')));
  assert.equal((await listing(a, '?address=blocked@example.net')).total, 0);
});

test('vmta suppression add on one relay, list and remove on the other; exit codes for missing token, bad address, unknown address', async () => {
  const added = await vmta(b, 'add', 'ops@example.net', '<Complainer@Example.ORG>', '--note', 'complaint 4711', '--token-file', tokenFile());
  assert.equal(added.code, 0, added.stderr);
  assert.match(added.stdout, /suppressed 2 address\(es\): ops@example\.net, Complainer@example\.org/);
  await waitFor('ops@ on relay a', async () => ((await listing(a, '?domain=example.net')).entries.some((entry) => entry.address === 'ops@example.net') ? true : undefined));
  const refused = await send(a, ['ops@example.net', 'bob@example.net'], 'operator');
  assert.match(refused.stdout, /"ops@example\.net": \[550, "5\.7\.1 <ops@example\.net>: recipient is on this pool's suppression list \(added by an operator on /, refused.stdout);
  const listed = await vmta(a, 'list', '--token-file', tokenFile());
  assert.equal(listed.code, 0, listed.stderr);
  assert.match(listed.stdout, /^ADDRESS\s+REASON\s+STATUS\s+ADDED\s+SOURCE\s+ORIGIN\s+DETAIL/m);
  assert.match(listed.stdout, /^ops@example\.net\s+operator\s+-\s+\S+\s+admin\s+relay-b\.test\s+complaint 4711$/m);
  assert.match(listed.stdout, /^gone@example\.net\s+bad-mailbox\s+5\.1\.1\s+/m);
  assert.match(listed.stdout, /3 suppressed address\(es\); mode: refused at RCPT TO/);
  const json = JSON.parse((await vmta(a, 'list', '--domain', 'example.org', '-o', 'json', '--token-file', tokenFile())).stdout) as Listing;
  const unauthorized = await vmta(a, 'list');
  assert.equal(unauthorized.code, 4, 'addresses are not shown without a token');
  assert.deepEqual(json.entries.map((entry) => entry.address), ['Complainer@example.org']);

  const removed = await vmta(a, 'remove', 'ops@example.net', '--token-file', tokenFile());
  assert.equal(removed.code, 0, removed.stderr);
  await waitFor('ops@ gone from relay b', async () => ((await listing(b, '?address=ops@example.net')).total === 0 ? true : undefined));
  const accepted = await send(b, ['ops@example.net'], 'removed');
  assert.match(accepted.stdout, /^OK 250 /, accepted.stdout);

  const again = await vmta(a, 'remove', 'ops@example.net', '--token-file', tokenFile());
  assert.equal(again.code, 5, `${again.stdout}${again.stderr}`);
  assert.match(again.stderr, /none of ops@example\.net is on the suppression list/);
  const noToken = await vmta(a, 'add', 'x@example.net');
  assert.equal(noToken.code, 4, noToken.stderr);
  assert.match(noToken.stderr, /needs the admin bearer token: pass --token-file FILE/);
  const bad = await vmta(a, 'add', 'not-an-address', '--token-file', tokenFile());
  assert.equal(bad.code, 2, bad.stderr);
  assert.match(bad.stderr, /addresses\[0\]: "not-an-address" is not an email address \(missing "@"\)/);
  const usage = await vmta(a, 'add');
  assert.equal(usage.code, 2);
  assert.match(usage.stderr, /add needs one or more addresses/);
  const sync = await fetch(`${a.relay.adminUrl}/api/v1/suppressions/sync`, { method: 'POST', body: JSON.stringify({ records: [] }) });
  assert.equal(sync.status, 401, 'peers\' sync needs the token too');
});

test('mode bounce (hot reload): a suppressed recipient is accepted and bounced at once with a DSN, the others delivered', async () => {
  await writeRelayConfig(a.dir, a.config('bounce'));
  await waitFor('relay a in mode bounce', async () => ((await listing(a)).mode === 'bounce' ? true : undefined));
  const marker = `bounce-mode-${Date.now()}`;
  const sent = await send(a, ['gone@example.net', 'carol@example.net'], marker);
  assert.match(sent.stdout, /^OK 250 /, sent.stdout);
  await waitFor('carol@ delivered', () => recipientMx.messages.find((message) => message.body.includes(marker) && message.to.includes('carol@example.net')));
  const raw = await waitFor('the DSN for gone@', () => senderMx.messages.find((message) => message.from === '' && message.body.includes(marker)));
  const dsn = await parseDsn(raw.body);
  assert.deepEqual(dsn.recipients.map((fields) => [fields['final-recipient'], fields['action'], fields['status']]), [['rfc822; gone@example.net', 'failed', '5.1.1']]);
  assert.match(dsn.recipients[0]!['diagnostic-code']!, /suppression list/);
  assert.ok(!recipientMx.messages.some((message) => message.body.includes(marker) && message.to.includes('gone@example.net')), 'nothing sent to the suppressed address');
  assert.equal(await metricValue(a.relay.adminUrl, 'vmta_suppression_hits_total{action="bounced"}'), 1);
});

test('a relay that was down reads what its peer added meanwhile when it starts', async () => {
  await b.relay.kill('SIGTERM');
  const added = await vmta(a, 'add', 'while-down@example.net', '--token-file', tokenFile());
  assert.equal(added.code, 0, added.stderr);
  await waitFor('a failed push to the stopped peer', async () => ((await metricValue(a.relay.adminUrl, 'vmta_suppression_peer_failures_total')) ?? 0) > 0 ? true : undefined);
  b.relay = await startRelayProcess({ configDir: b.dir, adminPort: b.adminPort });
  const entry = (await listing(b, '?address=while-down@example.net')).entries[0];
  assert.equal(entry?.source, 'admin');
  assert.equal(entry?.origin, 'relay-a.test');
  assert.equal((await listing(b)).total, (await listing(a)).total, 'both relays hold the same list');
});
