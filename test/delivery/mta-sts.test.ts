import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { MtaStsResolver, mxMatchesPolicy, parseStsPolicy } from '../../mta/delivery/mta-sts.ts';
import { PolicyCacheFile } from '../../mta/delivery/mta-sts-cache.ts';
import { ManualClock } from './manual-clock.ts';
import { startMtaStsServer, type MtaStsServer } from '../fixtures/mta-sts-server.ts';
import { createTestCa, loopbackAddresses, startSinkGroup, type SinkMx, type TestCa } from '../fixtures/sink-mx.ts';
import { settle, startHarness, waitFor, type Harness } from './harness.ts';

test('policy text is parsed and bad fields are named', () => {
  assert.deepEqual(parseStsPolicy('version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\nmax_age: 86400\r\n'), {
    mode: 'enforce',
    mx: ['mail.example.com', '*.example.net'],
    maxAge: 86400,
  });
  assert.throws(() => parseStsPolicy('version: STSv1\nmode: strict\nmx: a.test\nmax_age: 1\n'), /MTA-STS policy: Invalid mode field \(invalid_sts_mode\)/);
  assert.throws(() => parseStsPolicy('version: STSv1\nmode: enforce\nmax_age: 1\n'), /Missing mx field \(invalid_sts_mx\)/);
});

test('every malformed field of a policy is refused, and the RFC 8461 limits hold (mailauth\'s grammar)', () => {
  const valid = { version: 'STSv1', mode: 'enforce', mx: 'mx.example.test', max_age: '86400' };
  const policy = (fields: Record<string, string | undefined>) => Object.entries({ ...valid, ...fields }).filter(([, value]) => value !== undefined).map(([key, value]) => `${key}: ${value}`).join('\r\n');
  for (const [field, values] of Object.entries({ version: ['STSv2', '', undefined], mode: ['strict', '', undefined], max_age: ['-1', '31557601', 'soon', undefined], mx: [undefined] })) {
    for (const value of values) assert.throws(() => parseStsPolicy(policy({ [field]: value })), /MTA-STS policy: /, `${field}: ${String(value)}`);
  }
  assert.equal(parseStsPolicy(policy({ max_age: '31557600' })).maxAge, 31_557_600, 'the largest max_age');
  assert.deepEqual(parseStsPolicy(policy({ mode: 'none', mx: undefined })).mx, [], 'mode none needs no mx');
  assert.deepEqual(parseStsPolicy(`${policy({})}\r\nmx: MX.Example.Test\r\nmx: *.backup.test`).mx, ['mx.example.test', '*.backup.test'], 'patterns lower-cased, duplicates dropped');
});

test('MX patterns match exactly or by one left-most wildcard label', () => {
  assert.equal(mxMatchesPolicy('mx1.example.net', ['*.example.net']), true);
  assert.equal(mxMatchesPolicy('a.b.example.net', ['*.example.net']), false);
  assert.equal(mxMatchesPolicy('example.net', ['*.example.net']), false);
  assert.equal(mxMatchesPolicy('Mail.Example.com.', ['mail.example.com']), true);
});

let ca: TestCa;
let sinks: SinkMx[];
let sts: MtaStsServer;
let harness: Harness;

before(async () => {
  ca = createTestCa();
  sinks = await startSinkGroup([{ tls: ca.issue(['mx.allowed.test']) }, { tls: ca.issue(['mx.rogue.test']) }]);
  const [allowed, rogue] = sinks as [SinkMx, SinkMx];
  sts = await startMtaStsServer({
    address: loopbackAddresses(1)[0]!,
    certificate: ca.issue(['mta-sts.enforced.test', 'mta-sts.hijacked.test', 'mta-sts.testing.test']),
    policies: {
      'enforced.test': 'version: STSv1\nmode: enforce\nmx: *.allowed.test\nmax_age: 86400\n',
      'hijacked.test': 'version: STSv1\nmode: enforce\nmx: *.allowed.test\nmax_age: 86400\n',
      'testing.test': 'version: STSv1\nmode: testing\nmx: *.allowed.test\nmax_age: 86400\n',
    },
  });
  const sts1 = { txt: ['v=STSv1; id=20260101T000000'] };
  harness = await startHarness({
    mxPort: allowed.port,
    trustedCa: ca.caCert,
    mtaStsFetch: { connectAddress: sts.address, port: sts.port, ca: ca.caCert },
    zone: {
      'enforced.test': { mx: [{ preference: 10, exchange: 'mx.allowed.test' }] },
      '_mta-sts.enforced.test': sts1,
      'hijacked.test': { mx: [{ preference: 10, exchange: 'mx.rogue.test' }] },
      '_mta-sts.hijacked.test': sts1,
      'testing.test': { mx: [{ preference: 10, exchange: 'mx.rogue.test' }] },
      '_mta-sts.testing.test': sts1,
      'mx.allowed.test': { a: [allowed.address] },
      'mx.rogue.test': { a: [rogue.address] },
    },
    pool: {
      name: 'pool-sts',
      virtualMtas: [{ name: 'vmta-sts', hostname: 'sts.sender.test' }],
      domainDefaults: [{ match: '*', tlsPolicy: 'opportunistic', mtaSts: true, retryAfter: ['1h'] }],
    },
  });
});

after(async () => {
  await harness?.close();
  await sts?.close();
  await Promise.all((sinks ?? []).map((sink) => sink.close()));
  ca?.close();
});

test('MTA-STS enforce delivers to a matching MX over verified TLS', async () => {
  const allowed = sinks[0]!;
  await harness.submit({ to: ['a@enforced.test'] });
  const received = await waitFor(() => allowed.messages.find((message) => message.to.includes('a@enforced.test')), 'delivery under the policy');
  assert.equal(received.secure, true);
  assert.ok(sts.requests.includes('mta-sts.enforced.test'));
});

test('MTA-STS enforce blocks an MX that does not match the policy', async () => {
  const rogue = sinks[1]!;
  const stored = await harness.submit({ to: ['b@hijacked.test'] });
  // A queue-wide deferral, journalled as still pending (deferral-record.ts).
  const state = await waitFor(() => {
    const recipient = harness.engine.showMessage(stored.id)?.recipients[0];
    return recipient?.attempts ? recipient : undefined;
  }, 'the deferral');
  assert.equal((await harness.durableRecipients(stored.id))?.[0]?.status, 'pending', 'the spool keeps it pending');
  assert.equal(state.status, 'pending');
  assert.match(state.lastResult ?? '', /MTA-STS policy of hijacked\.test \(enforce\) matches none/);
  await settle();
  assert.equal(rogue.sessions.length, 0, 'the rogue MX was never contacted');
});

test('MTA-STS testing mode only reports: mail still goes to the non-matching MX', async () => {
  const rogue = sinks[1]!;
  await harness.submit({ to: ['c@testing.test'] });
  await waitFor(() => rogue.messages.find((message) => message.to.includes('c@testing.test')), 'delivery despite the testing policy');
  assert.match(await harness.metrics.registry.getSingleMetricAsString('vmta_mta_sts_mismatches_total'), /mode="testing"\} 1/);
});

test('a policy is cached for max_age, refetched when the TXT id changes (the TXT answer cached 5 minutes), and kept when a refresh fails', async () => {
  const clock = new ManualClock();
  let txt = ['v=STSv1; id=first'];
  const resolver = new MtaStsResolver({ clock, resolveTxt: async () => txt, connectAddress: sts.address, port: sts.port, ca: ca.caCert });
  sts.setPolicy('testing.test', 'version: STSv1\nmode: testing\nmx: *.allowed.test\nmax_age: 3600\n');
  const fetches = () => sts.requests.filter((host) => host === 'mta-sts.testing.test').length;
  const before = fetches();
  assert.equal((await resolver.policyFor('testing.test'))?.maxAge, 3600);
  await resolver.policyFor('testing.test');
  assert.equal(fetches() - before, 1, 'served from the cache');
  txt = ['v=STSv1; id=second'];
  sts.setPolicy('testing.test', 'version: STSv1\nmode: enforce\nmx: *.allowed.test\nmax_age: 3600\n');
  assert.equal((await resolver.policyFor('testing.test'))?.mode, 'testing', 'the TXT answer is cached');
  clock.advance(5 * 60_000 + 1);
  assert.equal((await resolver.policyFor('testing.test'))?.mode, 'enforce', 'a new id refetches');
  assert.equal(fetches() - before, 2);
  sts.setPolicy('testing.test', undefined);
  txt = ['v=STSv1; id=third'];
  clock.advance(5 * 60_000 + 1);
  assert.equal((await resolver.policyFor('testing.test'))?.mode, 'enforce', 'a failed refresh keeps the cached policy');
  clock.advance(3601_000);
  assert.equal(await resolver.policyFor('testing.test'), undefined, 'after max_age with no policy to fetch there is none');
});

test('the policy cache survives a restart: a new resolver on the same file still enforces while DNS and HTTPS are gone', async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'vmta-sts-cache-'));
  try {
    const clock = new ManualClock();
    const file = path.join(dir, 'state', 'mta-sts-policies.json');
    sts.setPolicy('enforced.test', 'version: STSv1\nmode: enforce\nmx: *.allowed.test\nmax_age: 86400\n');
    const cacheFile = new PolicyCacheFile(file);
    const first = new MtaStsResolver({ clock, cacheFile, resolveTxt: async () => ['v=STSv1; id=persisted'], connectAddress: sts.address, port: sts.port, ca: ca.caCert });
    assert.equal((await first.policyFor('enforced.test'))?.mode, 'enforce');
    cacheFile.flush(); // as the delivery engine does when it stops; otherwise within a second
    const restarted = () => new MtaStsResolver({ clock, cacheFile: new PolicyCacheFile(file), resolveTxt: async () => { throw new Error('SERVFAIL'); }, connectAddress: '127.0.0.1', port: 1 });
    const after = restarted();
    assert.deepEqual((await after.policyFor('enforced.test'))?.mx, ['*.allowed.test'], 'a downgrade after a restart is still caught');
    assert.deepEqual(after.list().map((entry) => [entry.domain, entry.id, entry.policy.mode]), [['enforced.test', 'persisted', 'enforce']]);
    clock.advance(86_401_000);
    assert.equal(await restarted().policyFor('enforced.test'), undefined, 'until max_age from the fetch');
    await writeFile(file, '{ not json');
    assert.equal(new PolicyCacheFile(file).load().size, 0, 'a damaged cache file starts empty instead of failing');
    await writeFile(file, JSON.stringify({ version: 1, policies: { 'a.test': { id: 'x', policy: { mode: 'enforce', mx: ['m.a.test'], maxAge: 99_999_999 }, text: '', fetchedAt: 0, expiresAt: 1 }, 'b.test': { id: 'y', policy: { mode: 'testing', mx: [], maxAge: 60 }, text: '', fetchedAt: 0, expiresAt: 1 } } }));
    assert.deepEqual([...new PolicyCacheFile(file).load().keys()], ['b.test'], 'an entry with bad fields is dropped, the rest kept');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
