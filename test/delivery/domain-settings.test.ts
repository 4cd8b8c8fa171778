import assert from 'node:assert/strict';
import { test } from 'node:test';
import { DomainSettings, ProviderGroup } from '../../mta/config/schema.ts';
import { BUILT_IN_DOMAIN_SETTINGS, matchSpecificity, resolveDomainSettings } from '../../mta/delivery/domain-settings.ts';

const block = (input: Record<string, unknown>) => DomainSettings.parse(input);

test('with nothing configured the built-in PowerMTA-like defaults apply', () => {
  const settings = resolveDomainSettings('example.com', { domains: [] }, []);
  assert.deepEqual(settings, BUILT_IN_DOMAIN_SETTINGS);
  assert.equal(settings.tlsPolicy, 'opportunistic');
  assert.deepEqual(settings.retryAfter, [600_000]);
  assert.equal(settings.bounceAfter, 4 * 86_400_000);
  assert.equal(settings.maxSmtpOut, 20);
  assert.equal(settings.maxMessagesPerConnection, 100);
});

test('exact domain beats *.domain which beats *', () => {
  const pool = [block({ match: '*', maxSmtpOut: 5 }), block({ match: '*.example.com', maxSmtpOut: 7 }), block({ match: 'mail.example.com', maxSmtpOut: 9 })];
  assert.equal(resolveDomainSettings('mail.example.com', { domains: [] }, pool).maxSmtpOut, 9);
  assert.equal(resolveDomainSettings('other.example.com', { domains: [] }, pool).maxSmtpOut, 7);
  assert.equal(resolveDomainSettings('example.com', { domains: [] }, pool).maxSmtpOut, 5, '*.example.com matches sub-domains only');
  assert.equal(matchSpecificity('*.b.example.com', 'a.b.example.com') > matchSpecificity('*.example.com', 'a.b.example.com'), true);
});

test('VirtualMTA domain blocks override pool defaults field by field', () => {
  const pool = [block({ match: 'example.com', tlsPolicy: 'required', maxSmtpOut: 3 })];
  const vmta = { domains: [block({ match: '*', maxSmtpOut: 11, retryAfter: ['1m', '5m'], bounceAfter: '2h' })] };
  const settings = resolveDomainSettings('EXAMPLE.com', vmta, pool);
  assert.equal(settings.tlsPolicy, 'required', 'pool value kept where the VirtualMTA sets nothing');
  assert.equal(settings.maxSmtpOut, 11, 'any VirtualMTA block beats the pool');
  assert.deepEqual(settings.retryAfter, [60_000, 300_000]);
  assert.equal(settings.bounceAfter, 7_200_000);
});

test('smtpHost, rates and backoff are parsed into usable values', () => {
  const settings = resolveDomainSettings('example.com', { domains: [] }, [
    block({ match: '*', smtpHost: '[::1]:2525', maxMessageRate: '600/m', backoff: { replyPatterns: ['^421'], retryAfter: '20m' } }),
  ]);
  assert.deepEqual(settings.smtpHost, { host: '::1', port: 2525 });
  assert.deepEqual(settings.maxMessageRate, { count: 600, perMs: 60_000 });
  assert.equal(settings.backoff?.replyPatterns[0]?.test('421 4.7.0 slow down'), true);
  assert.equal(settings.backoff?.maxSmtpOut, 1);
  assert.equal(settings.backoff?.retryAfter, 1_200_000);
  assert.equal(settings.backoff?.returnAfter, 3_600_000);
});

test('a provider group\'s domain settings sit above the pool\'s "*" blocks and below every more specific block, for each field', () => {
  const group = ProviderGroup.parse({ name: 'google', mxHosts: ['*.google.test'], domainSettings: { tlsPolicy: 'verify', mtaSts: true, retryAfter: ['2m'], bounceAfter: '1d', maxMessagesPerConnection: 7 } });
  const fields = { tlsPolicy: ['required', 'verify', 'dane'], mtaSts: [false, true, false], retryAfter: [['5m'], ['2m'], ['9m']], bounceAfter: ['3d', '1d', '2h'], maxMessagesPerConnection: [50, 7, 3] } as const;
  const parsed = (field: keyof typeof fields, level: 0 | 1 | 2) => (block({ match: '*', [field]: fields[field][level] }) as Record<string, unknown>)[field];
  for (const field of Object.keys(fields) as (keyof typeof fields)[]) {
    const catchAll = block({ match: '*', [field]: fields[field][0] });
    const suffix = block({ match: '*.example.com', [field]: fields[field][2] });
    const exact = block({ match: 'mail.example.com', [field]: fields[field][2] });
    const over = (settings: ReturnType<typeof resolveDomainSettings>) => (settings as unknown as Record<string, unknown>)[field];
    assert.deepEqual(over(resolveDomainSettings('mail.example.com', { domains: [] }, [catchAll], group)), parsed(field, 1), `${field}: the group over the pool's "*"`);
    assert.deepEqual(over(resolveDomainSettings('mail.example.com', { domains: [] }, [catchAll], undefined)), parsed(field, 0), `${field}: no group, the pool's "*"`);
    assert.deepEqual(over(resolveDomainSettings('mail.example.com', { domains: [] }, [catchAll, suffix], group)), parsed(field, 2), `${field}: a suffix block over the group`);
    assert.deepEqual(over(resolveDomainSettings('mail.example.com', { domains: [] }, [exact, catchAll], group)), parsed(field, 2), `${field}: an exact block over the group`);
    assert.deepEqual(over(resolveDomainSettings('mail.example.com', { domains: [block({ match: '*', [field]: fields[field][2] })] }, [catchAll], group)), parsed(field, 2), `${field}: the VirtualMTA's own "*" over the group`);
  }
  const untouched = resolveDomainSettings('mail.example.com', { domains: [] }, [block({ match: '*', maxSmtpOut: 4 })], group);
  assert.equal(untouched.maxSmtpOut, 4, 'fields the group does not set keep their value');
});
