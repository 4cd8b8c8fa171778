// VirtualMTA egress proxies from the VirtualMtaPool into relay.yaml: the servers in order, a
// credentials Secret mounted and named by directory (never copied into the ConfigMap), and a
// missing Secret or key reported as a problem that names the field; examples/egress-proxy/ renders.
import assert from 'node:assert/strict';
import path from 'node:path';
import { test } from 'node:test';
import { parse } from 'yaml';
import { RuntimeConfig } from '../../mta/config/schema.ts';
import { renderPool } from '../../operator/render/pool.ts';
import { loadResourceDir, secretSummaries } from '../../operator/local/resource-files.ts';
import { REPOSITORY_ROOT } from '../../scripts/generated-files.ts';
import { copy, exampleInput } from './example-resources.ts';

type Json = any; // eslint-disable-line @typescript-eslint/no-explicit-any

async function withProxies(secrets: readonly { name: string; keys: readonly string[] }[]) {
  const input = await exampleInput();
  const pool = copy(input.pool);
  pool.spec.virtualMtas[0]!.proxies = [{ server: '192.0.2.10:1080', credentialsSecretName: 'proxy-a' }, { server: 'proxy-b.example.net:1080' }];
  return renderPool({ ...input, pool, secrets: [...input.secrets, ...secrets.map((secret) => ({ name: secret.name, keys: [...secret.keys] }))] });
}

function relayConfig(result: ReturnType<typeof renderPool>) {
  const configMap = result.objects.find((object) => object.kind === 'ConfigMap') as Json;
  return RuntimeConfig.parse(parse(configMap.data['relay.yaml']));
}

test('proxies render in order with the credentials Secret as a mounted directory, the password staying out of the ConfigMap', async () => {
  const result = await withProxies([{ name: 'proxy-a', keys: ['username', 'password'] }]);
  assert.deepEqual(result.problems, []);
  const [first, second] = relayConfig(result).pool.virtualMtas;
  assert.deepEqual(first?.proxies, [{ server: '192.0.2.10:1080', credentialsDir: '/etc/vmta/secrets/proxy-a' }, { server: 'proxy-b.example.net:1080' }]);
  assert.deepEqual(second?.proxies, [], 'a VirtualMTA without proxies sends directly');
  const pod = (result.objects.find((object) => object.kind === 'StatefulSet') as Json).spec.template.spec;
  assert.ok(pod.volumes.some((volume: Json) => volume.secret?.secretName === 'proxy-a'), 'the credentials Secret is mounted');
});

test('a missing credentials Secret or key is a problem naming the field', async () => {
  for (const [secrets, reason, words] of [
    [[], 'SecretNotFound', 'no Secret "proxy-a"'],
    [[{ name: 'proxy-a', keys: ['username'] }], 'SecretKeyMissing', 'has no key "password"'],
  ] as const) {
    const result = await withProxies([...secrets]);
    const problem = result.problems.find((entry) => entry.reason === reason);
    assert.ok(problem, `${reason} expected, got ${JSON.stringify(result.problems)}`);
    assert.match(problem.message, /spec\.virtualMtas\[0\]\.proxies\[0\]\.credentialsSecretName/);
    assert.ok(problem.message.includes(words), problem.message);
  }
});

test('examples/egress-proxy/ loads and renders: each VirtualMTA\'s proxies in order, the login mounted, not copied', async () => {
  const loaded = await loadResourceDir(path.join(REPOSITORY_ROOT, 'examples/egress-proxy'));
  assert.deepEqual(loaded.errors, []);
  const result = renderPool({ pool: loaded.resources.pools[0]!, listeners: [], policies: [], secrets: secretSummaries(loaded.resources.secrets), image: 'registry.example/vmta:1.0.0', namespace: 'mail' });
  assert.deepEqual(result.problems, []);
  const config = relayConfig(result);
  assert.deepEqual(config.pool.virtualMtas.map((vmta) => [vmta.name, vmta.sourceAddress, vmta.proxies.map((proxy) => proxy.server)]), [
    ['mta1', '192.0.2.10', ['192.0.2.10:1080', '192.0.2.10:1081']],
    ['mta2', '192.0.2.11', ['192.0.2.11:1080']],
  ]);
  assert.ok(config.pool.virtualMtas.every((vmta) => vmta.proxies.every((proxy) => proxy.credentialsDir === '/etc/vmta/secrets/proxy-login')));
  assert.ok(!result.runtime.text.includes('REPLACE-WITH'), 'no Secret value in relay.yaml');
});
