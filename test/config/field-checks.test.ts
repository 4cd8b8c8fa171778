// A config that loads never throws later: every value the relay compiles after loading (reply
// patterns, relay-address regexes, DNS servers, smarthost ports, address ranges) is checked by the
// schema. Stated over generated classes: random regex-like strings and endpoint strings are
// either refused by the schema with the field and value named, or compiled by the code that
// uses them without an exception.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ConfigError, validateRuntimeConfig } from '../../mta/config/parse.ts';
import type { RuntimeConfigInput } from '../../mta/config/schema.ts';
import { systemClock } from '../../mta/delivery/clock.ts';
import { resolveDomainSettings } from '../../mta/delivery/domain-settings.ts';
import { MxResolver } from '../../mta/delivery/mx-resolver.ts';
import { compileRelayPolicy } from '../../mta/inbound/relay-policy.ts';
import { seededRandom } from '../../mta/config/seeded-random.ts';

function config(mutate: (input: RuntimeConfigInput) => void): RuntimeConfigInput {
  const input: RuntimeConfigInput = {
    apiVersion: 'vmta.dev/relay-config/v1',
    hostname: 'relay.test',
    pool: { name: 'pool', virtualMtas: [{ name: 'vmta-1', hostname: 'out.relay.test' }] },
    listeners: [],
    relayPolicies: [{ name: 'p' }],
    spool: { path: '/spool' },
  };
  mutate(input);
  return input;
}

/** The problems of a config, or [] when it loads. */
function problems(input: RuntimeConfigInput): string[] {
  try {
    validateRuntimeConfig(input);
    return [];
  } catch (error) {
    if (error instanceof ConfigError) return [...error.problems];
    throw error;
  }
}

/** Everything the relay builds from the loaded config after start: must not throw. */
function compileEverything(input: RuntimeConfigInput): void {
  const loaded = validateRuntimeConfig(input);
  for (const policy of loaded.relayPolicies) compileRelayPolicy(policy);
  new MxResolver({ servers: loaded.delivery.resolvers, clock: systemClock });
  for (const vmta of loaded.pool.virtualMtas) resolveDomainSettings('anything.example', vmta, loaded.pool.domainDefaults);
}


function randomStrings(alphabet: string, count: number, seed: number, maxLength = 12): string[] {
  const random = seededRandom(seed);
  return Array.from({ length: count }, () => Array.from({ length: 1 + Math.floor(random() * maxLength) }, () => alphabet[Math.floor(random() * alphabet.length)]).join(''));
}

describe('a config that loads never throws later', () => {
  test('the issue\'s values are refused at load with the field and value named', () => {
    const cases: Array<[string, (input: RuntimeConfigInput) => void, string]> = [
      ['an invalid backoff regex', (input) => (input.pool.domainDefaults = [{ match: '*', backoff: { replyPatterns: ['^421 (unclosed'] } }]), 'pool.domainDefaults[0].backoff.replyPatterns[0]'],
      ['a resolver 10.0.0.300', (input) => (input.delivery = { resolvers: ['10.0.0.300'] }), 'delivery.resolvers[0]'],
      ['a resolver port 99999', (input) => (input.delivery = { resolvers: ['10.0.0.10:99999'] }), 'delivery.resolvers[0]'],
      ['a smarthost port 99999', (input) => (input.pool.domainDefaults = [{ match: '*', smtpHost: 'smarthost.example.net:99999' }]), 'pool.domainDefaults[0].smtpHost'],
      ['a smarthost 10.0.0.300', (input) => (input.pool.domainDefaults = [{ match: '*', smtpHost: '10.0.0.300:25' }]), 'pool.domainDefaults[0].smtpHost'],
      ['an invalid relay-address regex', (input) => (input.relayPolicies = [{ name: 'p', relayAddresses: ['/fbl-(/'] }]), 'relayPolicies[0].relayAddresses[0]'],
      ['relayAddresses /.*/', (input) => (input.relayPolicies = [{ name: 'p', relayAddresses: ['/.*/'] }]), 'relayPolicies[0].relayAddresses[0]'],
      ['relayDomains *', (input) => (input.relayPolicies = [{ name: 'p', relayDomains: ['example.com', '*'] }]), 'relayPolicies[0].relayDomains[1]'],
      ['allowedCidrs ::ffff:0:0/96', (input) => (input.relayPolicies = [{ name: 'p', allowedCidrs: ['::ffff:0:0/96'] }]), 'relayPolicies[0].allowedCidrs[0]'],
      ['a mapped source address', (input) => (input.pool.virtualMtas[0]!.sourceAddress = '::ffff:192.0.2.10'), 'pool.virtualMtas[0].sourceAddress'],
    ];
    for (const [what, mutate, field] of cases) {
      const found = problems(config(mutate));
      assert.ok(found.some((problem) => problem.startsWith(`${field}: `) && problem.includes('got "')), `${what}: ${JSON.stringify(found)}`);
    }
    assert.deepEqual(problems(config((input) => (input.relayPolicies = [{ name: 'p', relayDomains: ['*'], relayAddresses: ['/.*/'], allowedCidrs: ['0.0.0.0/0'], acknowledgeOpenRelay: true }]))), []);
  });

  test('random regex-like reply patterns and relay addresses: refused at load, or compiled without an exception', () => {
    const strings = randomStrings('()[]{}*+?|\\^$.a1@-', 600, 0x0bad_7e9e);
    let refused = 0;
    for (const text of strings) {
      for (const mutate of [
        (input: RuntimeConfigInput) => (input.pool.domainDefaults = [{ match: '*', backoff: { replyPatterns: [text] } }]),
        (input: RuntimeConfigInput) => (input.relayPolicies = [{ name: 'p', relayAddresses: [`/${text}@example\\.com/`] }]),
      ]) {
        const input = config(mutate);
        if (problems(input).length > 0) refused += 1;
        else assert.doesNotThrow(() => compileEverything(input), text);
      }
    }
    assert.ok(refused > 0 && refused < strings.length * 2, `refused ${refused} of ${strings.length * 2}: the class has both kinds`);
  });

  test('random resolver and smarthost strings: refused at load, or used without an exception', () => {
    const strings = randomStrings('0123456789.:[]abf', 800, 0x0dd5_0053, 20);
    let loaded = 0;
    for (const text of [...strings, '10.0.0.10', '10.0.0.10:53', '2001:db8::53', '[2001:db8::53]:5353', '127.0.0.1:65535']) {
      for (const mutate of [(input: RuntimeConfigInput) => (input.delivery = { resolvers: [text] }), (input: RuntimeConfigInput) => (input.pool.domainDefaults = [{ match: '*', smtpHost: text }])]) {
        const input = config(mutate);
        if (problems(input).length > 0) continue;
        loaded += 1;
        assert.doesNotThrow(() => compileEverything(input), text);
      }
    }
    assert.ok(loaded >= 5, `only ${loaded} loaded`);
  });
});
