// Rendering smarthost routes: the login and CA Secrets become paths under their mounts (the
// values never reach the ConfigMap), the Secrets are mounted into the pod, a missing Secret or
// key is a problem naming the field, the CRD schema and the relay config refuse a block with both
// smtpHost and smarthost and bad smarthost fields with the field named, the relay fills the
// default port list, local mode points the paths at its own copies of the Secrets, and
// examples/smarthost/ renders.
import assert from 'node:assert/strict';
import path from 'node:path';
import { test } from 'node:test';
import { DEFAULT_SMARTHOST_PORTS, RuntimeConfig } from '../../mta/config/schema.ts';
import { resolveDomainSettings } from '../../mta/delivery/domain-settings.ts';
import { DomainSettings } from '../../operator/api/domain-settings.ts';
import { localizeConfig } from '../../operator/local/local-config.ts';
import { loadResourceDir, secretSummaries } from '../../operator/local/resource-files.ts';
import { renderPool } from '../../operator/render/pool.ts';
import { REPOSITORY_ROOT } from '../../scripts/generated-files.ts';
import { copy, exampleInput, relayMountPaths, renderedRelayConfig } from './example-resources.ts';

async function smarthostInput() {
  const input = await exampleInput();
  const pool = copy(input.pool);
  pool.spec.domainDefaults = [
    DomainSettings.parse({ domain: '*', smarthost: { hosts: ['smtp.esp.example'], auth: { secretName: 'esp-login', mechanism: 'LOGIN' }, caSecretName: 'esp-ca', reprobeAfter: '10m' } }),
  ];
  pool.spec.virtualMtas[0]!.domains = [DomainSettings.parse({ domain: 'direct.example', smarthost: { hosts: ['relay.internal'], ports: [{ port: 465, tls: 'implicit' }], tlsPolicy: 'required', auth: { secretName: 'internal.login' } } })];
  const secrets = [...input.secrets, { name: 'esp-login', keys: ['username', 'password'] }, { name: 'esp-ca', keys: ['ca.crt'] }, { name: 'internal.login', keys: ['username', 'password'] }];
  return { ...input, pool, secrets };
}

test('smarthost logins and CAs render as paths under their Secret mounts, and the Secrets are mounted', async () => {
  const result = renderPool(await smarthostInput());
  assert.deepEqual(result.problems, []);
  const config = renderedRelayConfig(result);
  const route = config.pool.domainDefaults.find((block) => block.match === '*')!.smarthost!;
  assert.deepEqual(route.auth, { secretPath: '/etc/vmta/secrets/esp-login', mechanism: 'LOGIN' });
  assert.equal(route.caFile, '/etc/vmta/secrets/esp-ca/ca.crt');
  assert.deepEqual(route.ports, DEFAULT_SMARTHOST_PORTS);
  assert.equal(route.tlsPolicy, 'verify');
  assert.equal(route.reprobeAfter, 600_000);
  const own = config.pool.virtualMtas[0]!.domains[0]!.smarthost!;
  assert.deepEqual([own.ports, own.tlsPolicy, own.auth], [[{ port: 465, tls: 'implicit' }], 'required', { secretPath: '/etc/vmta/secrets/internal.login', mechanism: 'auto' }]);
  const mounts = relayMountPaths(result);
  for (const name of ['esp-login', 'esp-ca', 'internal.login']) assert.ok(mounts.includes(`/etc/vmta/secrets/${name}`), mounts.join(', '));
});

test('a missing smarthost Secret or key stops the render with the field named', async () => {
  const input = await smarthostInput();
  for (const [secrets, reason, field] of [
    [input.secrets.filter((secret) => secret.name !== 'esp-login'), 'SecretNotFound', 'spec.domainDefaults[0].smarthost.auth.secretName: no Secret "esp-login"'],
    [input.secrets.map((secret) => (secret.name === 'internal.login' ? { ...secret, keys: ['username'] } : secret)), 'SecretKeyMissing', 'spec.virtualMtas[0].domains[0].smarthost.auth.secretName: Secret "internal.login" has no key "password"'],
    [input.secrets.filter((secret) => secret.name !== 'esp-ca'), 'SecretNotFound', 'spec.domainDefaults[0].smarthost.caSecretName: no Secret "esp-ca"'],
  ] as const) {
    const result = renderPool({ ...input, secrets: [...secrets] });
    assert.deepEqual(result.objects, []);
    assert.ok(result.problems.some((problem) => problem.reason === reason && problem.message.includes(field)), JSON.stringify(result.problems));
  }
});

test('bad smarthost fields and a block with both smtpHost and smarthost are refused with the field named, by the CRD schema and by the relay config', () => {
  const smarthost = { hosts: ['smtp.esp.example'] };
  for (const [block, path] of [
    [{ domain: '*', smtpHost: 'a.example:25', smarthost }, ['smarthost']],
    [{ domain: '*', smarthost: { hosts: [] } }, ['smarthost', 'hosts']],
    [{ domain: '*', smarthost: { ...smarthost, hosts: ['not a host'] } }, ['smarthost', 'hosts', 0]],
    [{ domain: '*', smarthost: { ...smarthost, ports: [{ port: 70_000, tls: 'starttls' }] } }, ['smarthost', 'ports', 0, 'port']],
    [{ domain: '*', smarthost: { ...smarthost, ports: [{ port: 587, tls: 'none' }] } }, ['smarthost', 'ports', 0, 'tls']],
    [{ domain: '*', smarthost: { ...smarthost, tlsPolicy: 'opportunistic' } }, ['smarthost', 'tlsPolicy']],
    [{ domain: '*', smarthost: { ...smarthost, auth: { secretName: 'x', mechanism: 'CRAM-MD5' } } }, ['smarthost', 'auth', 'mechanism']],
    [{ domain: '*', smarthost: { ...smarthost, auth: { secretName: 'Bad_Name' } } }, ['smarthost', 'auth', 'secretName']],
    [{ domain: '*', smarthost: { ...smarthost, connectTimeout: 'soon' } }, ['smarthost', 'connectTimeout']],
  ] as const) {
    const result = DomainSettings.safeParse(block);
    assert.ok(!result.success, `${JSON.stringify(block)} should be refused`);
    assert.deepEqual(result.error.issues[0]!.path, path, JSON.stringify(result.error.issues));
  }
  const runtime = RuntimeConfig.safeParse({
    apiVersion: 'vmta.dev/relay-config/v1',
    hostname: 'relay.test',
    pool: { name: 'p', domainDefaults: [{ match: '*', smtpHost: 'a.example:25', smarthost: { hosts: ['b.example'] } }], virtualMtas: [{ name: 'v', hostname: 'out.test' }] },
    listeners: [],
    relayPolicies: [],
    spool: { path: 'spool' },
  });
  assert.ok(!runtime.success);
  assert.deepEqual(runtime.error.issues[0]!.path, ['pool', 'domainDefaults', 0, 'smarthost']);
});

test('the most specific block decides between smtpHost and smarthost', async () => {
  const config = RuntimeConfig.parse({
    apiVersion: 'vmta.dev/relay-config/v1',
    hostname: 'relay.test',
    pool: { name: 'p', domainDefaults: [{ match: '*', smarthost: { hosts: ['esp.example'] } }, { match: 'direct.example', smtpHost: 'mx.direct.example:25' }], virtualMtas: [{ name: 'v', hostname: 'out.test', domains: [{ match: 'back.example', smarthost: { hosts: ['other.example'] } }] }] },
    listeners: [],
    relayPolicies: [],
    spool: { path: 'spool' },
  });
  const vmta = config.pool.virtualMtas[0]!;
  const resolve = (domain: string) => resolveDomainSettings(domain, vmta, config.pool.domainDefaults);
  assert.deepEqual([resolve('any.example').smarthost?.hosts, resolve('any.example').smtpHost], [['esp.example'], undefined]);
  assert.deepEqual([resolve('direct.example').smarthost, resolve('direct.example').smtpHost], [undefined, { host: 'mx.direct.example', port: 25 }]);
  assert.deepEqual(resolve('back.example').smarthost?.hosts, ['other.example']);
});

test('local mode points smarthost logins and CAs at its copies of the Secrets', async () => {
  const result = renderPool(await smarthostInput());
  const local = localizeConfig(result.runtime.config, { workDir: '/work/local', poolName: 'outbound', portShift: 0, poolIndex: 0, localAddresses: new Set() });
  const route = local.config.pool.domainDefaults?.[0]?.smarthost;
  assert.equal(route?.auth?.secretPath, '/work/local/secrets/esp-login');
  assert.equal(route?.caFile, '/work/local/secrets/esp-ca/ca.crt');
  assert.equal(local.config.pool.virtualMtas[0]!.domains?.[0]?.smarthost?.auth?.secretPath, '/work/local/secrets/internal.login');
});

test('examples/smarthost/ loads and renders without problems, the default route going to the ESP on 587, 2525, 465', async () => {
  const loaded = await loadResourceDir(path.join(REPOSITORY_ROOT, 'examples/smarthost'));
  assert.deepEqual(loaded.errors, []);
  const { pools, secrets } = loaded.resources;
  const result = renderPool({ pool: pools[0]!, listeners: [], policies: [], secrets: secretSummaries(secrets), image: 'registry.example/vmta:1.0.0', namespace: 'mail' });
  assert.deepEqual(result.problems, []);
  const route = result.runtime.config.pool.domainDefaults?.find((block) => block.match === '*')?.smarthost;
  assert.deepEqual(route?.ports, DEFAULT_SMARTHOST_PORTS);
  assert.equal(route?.auth?.secretPath, '/etc/vmta/secrets/esp-login');
  assert.ok(!result.runtime.text.includes('REPLACE-WITH'), 'no Secret value in relay.yaml');
});
