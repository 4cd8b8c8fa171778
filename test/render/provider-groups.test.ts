// Provider groups from the VirtualMtaPool into relay.yaml: examples/provider-groups/ (the shipped
// starting point) loads, renders and puts the large providers' MX hosts into the expected
// groups, with throttling replies matching their backoff; spec.providerGroups of any pool renders
// as written; bad groups are refused with a problem naming the field.
import assert from 'node:assert/strict';
import path from 'node:path';
import { test } from 'node:test';
import { providerGroupFor } from '../../mta/delivery/destination-limits.ts';
import { toBackoffPolicy } from '../../mta/delivery/domain-settings.ts';
import { parseVmtaResource } from '../../operator/api/parse.ts';
import { loadResourceDir, secretSummaries } from '../../operator/local/resource-files.ts';
import { renderPool } from '../../operator/render/pool.ts';
import { REPOSITORY_ROOT } from '../../scripts/generated-files.ts';
import { copy, exampleInput, renderedRelayConfig } from './example-resources.ts';

async function renderedExample() {
  const loaded = await loadResourceDir(path.join(REPOSITORY_ROOT, 'examples/provider-groups'));
  assert.deepEqual(loaded.errors, []);
  const result = renderPool({ pool: loaded.resources.pools[0]!, listeners: [], policies: [], secrets: secretSummaries(loaded.resources.secrets), image: 'registry.example/vmta:1.0.0', namespace: 'mail' });
  assert.deepEqual(result.problems, []);
  return renderedRelayConfig(result);
}

test('examples/provider-groups/ renders, and the large providers\' MX hosts fall into their groups', async () => {
  const groups = (await renderedExample()).pool.providerGroups;
  const cases: [string[], string | undefined][] = [
    [['gmail-smtp-in.l.google.com', 'alt1.gmail-smtp-in.l.google.com'], 'google'],
    [['aspmx.l.google.com', 'alt2.aspmx.l.google.com', 'aspmx2.googlemail.com'], 'google'],
    [['smtp.google.com'], 'google'],
    [['hotmail-com.olc.protection.outlook.com'], 'microsoft-consumer'],
    [['outlook-com.olc.protection.outlook.com'], 'microsoft-consumer'],
    [['contoso-com.mail.protection.outlook.com'], 'microsoft-365'],
    [['contoso-com.o-v1.mx.microsoft'], 'microsoft-365'],
    [['mta5.am0.yahoodns.net', 'mta6.am0.yahoodns.net'], 'yahoo'],
    [['mx-aol.mail.gm0.yahoodns.net'], 'yahoo'],
    [['mx01.mail.icloud.com', 'mx02.mail.icloud.com'], 'apple'],
    [['mx00.emig.gmx.net'], 'gmx-webde'],
    [['mx-ha03.web.de'], 'gmx-webde'],
    [['mxs.mail.ru'], 'mail-ru'],
    [['mx.yandex.ru'], 'yandex'],
    [['mx.yandex.net'], 'yandex'],
    [['mx1a1.comcast.net'], 'comcast'],
    [['smtp-in.orange.fr'], 'orange'],
    [['mx1.free.fr'], 'free'],
    [['mx1.sfr.fr'], 'sfr'],
    [['mx.example.net'], undefined],
    [['google.com.evil.example'], undefined],
    [['notgoogle.com'], undefined],
  ];
  for (const [hosts, expected] of cases) assert.equal(providerGroupFor(groups, hosts)?.name, expected, hosts.join(', '));
  assert.ok(groups.every((group) => group.maxSmtpOut && group.maxMessageRate), 'every shipped group has a connection limit and a rate');
});

test('the shipped groups\' backoff patterns match their providers\' throttling replies and not a hard bounce', async () => {
  const groups = new Map((await renderedExample()).pool.providerGroups.map((group) => [group.name, group]));
  const throttles: [string, string][] = [
    ['google', '421 4.7.28 Gmail has detected an unusual rate of unsolicited mail originating from your IP address'],
    ['google', '421 4.7.0 Try again later, closing connection.'],
    ['microsoft-consumer', '451 4.7.650 The mail server [192.0.2.1] has been temporarily rate limited due to IP reputation.'],
    ['microsoft-365', '451 4.7.500 Server busy. Please try again later from [192.0.2.1].'],
    ['yahoo', '421 4.7.0 [TSS04] Messages from 192.0.2.1 temporarily deferred due to unexpected volume or user complaints'],
  ];
  for (const [name, reply] of throttles) {
    const policy = toBackoffPolicy(groups.get(name)!.backoff!);
    assert.ok(policy.replyPatterns.some((pattern) => pattern.test(reply)), `${name}: ${reply}`);
    assert.ok(!policy.replyPatterns.some((pattern) => pattern.test('550 5.1.1 The email account that you tried to reach does not exist')), `${name}: a hard bounce is not throttling`);
  }
});

test('spec.providerGroups renders into relay.yaml as written, backoff defaults filled in', async () => {
  const input = await exampleInput();
  const pool = copy(input.pool);
  pool.spec.providerGroups = [
    { name: 'google', mxHosts: ['*.google.com', 'aspmx.l.google.com'], maxSmtpOut: 4, maxMessageRate: '120/m', backoff: { replyPatterns: ['^421'], maxSmtpOut: 1, retryAfter: '30m', returnAfter: '1h' } },
    { name: 'yahoo', mxHosts: ['*.yahoodns.net'] },
  ];
  const rendered = renderedRelayConfig(renderPool({ ...input, pool }));
  const [google, yahoo] = rendered.pool.providerGroups;
  assert.deepEqual({ ...google, backoff: undefined }, { name: 'google', mxHosts: ['*.google.com', 'aspmx.l.google.com'], maxSmtpOut: 4, maxMessageRate: '120/m', backoff: undefined });
  assert.deepEqual(google?.backoff, { replyPatterns: ['^421'], maxSmtpOut: 1, retryAfter: 1_800_000, returnAfter: 3_600_000 });
  assert.deepEqual(yahoo, { name: 'yahoo', mxHosts: ['*.yahoodns.net'] });
  assert.deepEqual(renderedRelayConfig(renderPool(input)).pool.providerGroups, [], 'a pool without groups renders none');
});

test('a group\'s domainSettings render in the relay\'s form, each retry form as the relay reads it', async () => {
  const input = await exampleInput();
  const forms: [Record<string, unknown>, unknown][] = [
    [{ retryAfter: '15m' }, [900_000]],
    [{ retrySchedule: ['1m', '10m'] }, [60_000, 600_000]],
    [{ retryBackoff: { initial: '1m', factor: 2, max: '1h' } }, { initial: 60_000, factor: 2, max: 3_600_000 }],
    [{}, undefined],
  ];
  for (const [retry, expected] of forms) {
    const pool = copy(input.pool);
    pool.spec.providerGroups = [{ name: 'google', mxHosts: ['*.google.com'], domainSettings: { tlsPolicy: 'verify', mtaSts: true, bounceAfter: '2d', maxMessagesPerConnection: 50, ...retry } as never }];
    const [google] = renderedRelayConfig(renderPool({ ...input, pool })).pool.providerGroups;
    assert.deepEqual(google?.domainSettings, { tlsPolicy: 'verify', mtaSts: true, bounceAfter: 2 * 86_400_000, maxMessagesPerConnection: 50, ...(expected ? { retryAfter: expected } : {}) }, JSON.stringify(retry));
  }
});

test('bad provider groups are refused with a problem naming the field and the value', () => {
  const pool = (providerGroups: unknown) => ({ apiVersion: 'vmta.dev/v1alpha1', kind: 'VirtualMtaPool', metadata: { name: 'pool' }, spec: { virtualMtas: [{ name: 'mta1', hostname: 'mta1.example.com' }], providerGroups } });
  const cases: [string, unknown, string, RegExp][] = [
    ['duplicate names', [{ name: 'google', mxHosts: ['*.google.com'] }, { name: 'google', mxHosts: ['*.googlemail.com'] }], 'spec.providerGroups[1].name', /duplicate name "google"/],
    ['a catch-all pattern', [{ name: 'all', mxHosts: ['*.example.com', '*'] }], 'spec.providerGroups[0].mxHosts[1]', /not "\*"/],
    ['a pattern in two groups', [{ name: 'a', mxHosts: ['*.google.com'] }, { name: 'b', mxHosts: ['*.yahoodns.net', '*.Google.com'] }], 'spec.providerGroups[1].mxHosts[1]', /already in provider group "a"/],
    ['a host name with a space', [{ name: 'bad', mxHosts: ['mx .example.com'] }], 'spec.providerGroups[0].mxHosts[0]', /domain/],
    ['no MX hosts', [{ name: 'empty', mxHosts: [] }], 'spec.providerGroups[0].mxHosts', /./],
    ['an upper-case name', [{ name: 'Google', mxHosts: ['*.google.com'] }], 'spec.providerGroups[0].name', /lower-case/],
    ['a zero connection limit', [{ name: 'g', mxHosts: ['*.google.com'], maxSmtpOut: 0 }], 'spec.providerGroups[0].maxSmtpOut', /./],
    ['a rate without unit', [{ name: 'g', mxHosts: ['*.google.com'], maxMessageRate: '100' }], 'spec.providerGroups[0].maxMessageRate', /rate like/],
    ['an invalid backoff pattern', [{ name: 'g', mxHosts: ['*.google.com'], backoff: { replyPatterns: ['^421 (unclosed'] } }], 'spec.providerGroups[0].backoff.replyPatterns[0]', /./],
    ['an unknown field', [{ name: 'g', mxHosts: ['*.google.com'], tlsPolicy: 'verify' }], 'spec.providerGroups[0]', /tlsPolicy/],
    ['two retry forms in domainSettings', [{ name: 'g', mxHosts: ['*.google.com'], domainSettings: { retryAfter: '5m', retrySchedule: ['1m'] } }], 'spec.providerGroups[0].domainSettings.retrySchedule', /at most one of retryAfter, retrySchedule and retryBackoff/],
    ['a route in domainSettings', [{ name: 'g', mxHosts: ['*.google.com'], domainSettings: { smtpHost: 'relay.example.com:25' } }], 'spec.providerGroups[0].domainSettings', /smtpHost/],
    ['an unknown TLS policy in domainSettings', [{ name: 'g', mxHosts: ['*.google.com'], domainSettings: { tlsPolicy: 'always' } }], 'spec.providerGroups[0].domainSettings.tlsPolicy', /./],
  ];
  for (const [what, groups, field, words] of cases) {
    const result = parseVmtaResource(pool(groups));
    const problems = result.ok ? [] : result.problems;
    assert.ok(problems.some((problem) => problem.startsWith(`${field}:`) && words.test(problem)), `${what}: expected a problem on ${field} matching ${words}, got ${JSON.stringify(problems)}`);
  }
  assert.equal(parseVmtaResource(pool([{ name: 'a', mxHosts: ['*.google.com', '*.google.com'] }])).ok, true, 'a pattern repeated inside one group is harmless');
});
