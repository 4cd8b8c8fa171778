import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { DnsFailure, MxResolver } from '../../mta/delivery/mx-resolver.ts';
import { startDnsServer, type TestDnsServer } from '../fixtures/dns-server.ts';
import { ManualClock } from './manual-clock.ts';

let dns: TestDnsServer;
before(async () => {
  dns = await startDnsServer({
    'multi.test': { mx: [{ preference: 20, exchange: 'mx2.multi.test' }, { preference: 10, exchange: 'mx1.multi.test' }] },
    'mx1.multi.test': { a: ['127.0.0.11'], ttl: 60 },
    'mx2.multi.test': { a: ['127.0.0.12'], aaaa: ['::1'], ttl: 120 },
    'implicit.test': { a: ['127.0.0.13'] },
    'nullmx.test': { mx: [{ preference: 0, exchange: '.' }] },
    'broken.test': { rcode: 'SERVFAIL' },
  });
});
after(() => dns.close());

const resolver = (clock = new ManualClock()) => new MxResolver({ servers: [dns.server], clock, timeoutMs: 2_000 });

test('MX hosts come back in preference order with their addresses', async () => {
  const hosts = await resolver().resolveMx('multi.test');
  assert.deepEqual(hosts.map((host) => [host.name, host.preference]), [['mx1.multi.test', 10], ['mx2.multi.test', 20]]);
  assert.deepEqual(hosts[1]?.addresses.sort(), ['127.0.0.12', '::1']);
});

test('a domain without MX is its own implicit MX (A/AAAA)', async () => {
  assert.deepEqual(await resolver().resolveMx('implicit.test'), [{ name: 'implicit.test', preference: 0, addresses: ['127.0.0.13'] }]);
});

test('null MX and NXDOMAIN are permanent, SERVFAIL is temporary', async () => {
  const mx = resolver();
  await assert.rejects(mx.resolveMx('nullmx.test'), (error: DnsFailure) => error.kind === 'null-mx' && error.permanent);
  await assert.rejects(mx.resolveMx('nowhere.test'), (error: DnsFailure) => error.kind === 'no-such-domain' && error.permanent);
  await assert.rejects(mx.resolveMx('broken.test'), (error: DnsFailure) => error.kind === 'dns-temporary' && !error.permanent);
});

test('answers are cached for their TTL', async () => {
  const clock = new ManualClock();
  const mx = resolver(clock);
  await mx.resolveMx('multi.test');
  const queriesAfterFirst = dns.queries.length;
  dns.set('mx1.multi.test', { a: ['127.0.0.99'], ttl: 60 });
  clock.advance(59_000);
  assert.equal((await mx.resolveMx('multi.test'))[0]?.addresses[0], '127.0.0.11');
  assert.equal(dns.queries.length, queriesAfterFirst, 'no query while cached');
  clock.advance(2_000);
  assert.equal((await mx.resolveMx('multi.test'))[0]?.addresses[0], '127.0.0.99');
  dns.set('mx1.multi.test', { a: ['127.0.0.11'], ttl: 60 });
});
