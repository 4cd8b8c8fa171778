// Rendering DKIM: pool and VirtualMTA keys become key files under the Secret's mount, the
// Secret is mounted into the pod, a missing Secret or key is a problem naming the field, the
// CRD schema refuses bad selectors and algorithms, and local mode points key files at its own
// copies of the Secrets.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { RuntimeConfig } from '../../mta/config/schema.ts';
import { VirtualMtaPoolSpec } from '../../operator/api/virtual-mta-pool.ts';
import { localizeConfig } from '../../operator/local/local-config.ts';
import { renderPool } from '../../operator/render/pool.ts';
import { copy, exampleInput, relayMountPaths, renderedRelayConfig } from './example-resources.ts';

async function dkimInput() {
  const input = await exampleInput();
  const pool = copy(input.pool);
  pool.spec.dkim = VirtualMtaPoolSpec.shape.dkim.parse({
    keys: [
      { domain: 'example.com', selector: 's2026', secretName: 'dkim-example-com' },
      { domain: 'example.com', selector: 'ed2026', algorithm: 'ed25519-sha256', secretName: 'dkim-example-com', secretKey: 'ed25519.pem', canonicalization: 'simple/simple' },
    ],
    expireAfter: '7d',
  });
  pool.spec.virtualMtas[0]!.dkimKeys = [{ domain: 'brand.example', selector: 'vmta', algorithm: 'rsa-sha256', secretName: 'dkim-brand', secretKey: 'private.pem' }];
  const secrets = [...input.secrets, { name: 'dkim-example-com', keys: ['private.pem', 'ed25519.pem'] }, { name: 'dkim-brand', keys: ['private.pem'] }];
  return { ...input, pool, secrets };
}

test('DKIM keys render as key files under their Secret mounts, and the Secrets are mounted', async () => {
  const result = renderPool(await dkimInput());
  assert.deepEqual(result.problems, []);
  const config = renderedRelayConfig(result);
  assert.deepEqual(
    config.pool.dkim.keys.map((key) => [key.domain, key.selector, key.algorithm, key.keyFile, key.canonicalization]),
    [
      ['example.com', 's2026', 'rsa-sha256', '/etc/vmta/secrets/dkim-example-com/private.pem', undefined],
      ['example.com', 'ed2026', 'ed25519-sha256', '/etc/vmta/secrets/dkim-example-com/ed25519.pem', 'simple/simple'],
    ],
  );
  assert.equal(config.pool.dkim.expireAfter, 7 * 86_400_000);
  assert.equal(config.pool.dkim.canonicalization, 'relaxed/relaxed');
  assert.deepEqual(config.pool.virtualMtas[0]!.dkimKeys.map((key) => key.keyFile), ['/etc/vmta/secrets/dkim-brand/private.pem']);
  const mounts = relayMountPaths(result);
  assert.ok(mounts.includes('/etc/vmta/secrets/dkim-example-com') && mounts.includes('/etc/vmta/secrets/dkim-brand'), mounts.join(', '));
});

test('a missing DKIM Secret or Secret key stops the render with the field named', async () => {
  const input = await dkimInput();
  for (const [secrets, reason, field] of [
    [input.secrets.filter((secret) => secret.name !== 'dkim-brand'), 'SecretNotFound', 'spec.virtualMtas[0].dkimKeys[0].secretName: no Secret "dkim-brand"'],
    [input.secrets.map((secret) => (secret.name === 'dkim-example-com' ? { ...secret, keys: ['private.pem'] } : secret)), 'SecretKeyMissing', 'spec.dkim.keys[1].secretName: Secret "dkim-example-com" has no key "ed25519.pem"'],
  ] as const) {
    const result = renderPool({ ...input, secrets: [...secrets] });
    assert.deepEqual(result.objects, []);
    assert.ok(result.problems.some((problem) => problem.reason === reason && problem.message.includes(field)), JSON.stringify(result.problems));
  }
});

test('the pool schema refuses bad DKIM fields with the field named', () => {
  const base = { domain: 'example.com', selector: 's1', secretName: 'k' };
  for (const [key, path] of [
    [{ ...base, selector: 'bad selector' }, 'selector'],
    [{ ...base, selector: '-lead' }, 'selector'],
    [{ ...base, algorithm: 'rsa-sha1' }, 'algorithm'],
    [{ ...base, domain: 'not a domain' }, 'domain'],
    [{ ...base, canonicalization: 'relaxed' }, 'canonicalization'],
  ] as const) {
    const result = VirtualMtaPoolSpec.shape.dkim.safeParse({ keys: [key] });
    assert.ok(!result.success, `${JSON.stringify(key)} should be refused`);
    assert.deepEqual(result.error.issues[0]!.path, ['keys', 0, path]);
  }
});

test('the relay config refuses a signed header list without From', async () => {
  const result = renderPool(await dkimInput());
  const config = structuredClone(result.runtime.config);
  config.pool.dkim = { ...config.pool.dkim, headers: ['Subject', 'To'] };
  const parsed = RuntimeConfig.safeParse(config);
  assert.ok(!parsed.success);
  assert.deepEqual(parsed.error.issues[0]!.path, ['pool', 'dkim', 'headers']);
  assert.match(parsed.error.issues[0]!.message, /must include From/);
});

test('local mode points DKIM key files at its copies of the Secrets', async () => {
  const result = renderPool(await dkimInput());
  const local = localizeConfig(result.runtime.config, { workDir: '/work/local', poolName: 'outbound', portShift: 0, poolIndex: 0, localAddresses: new Set() });
  assert.deepEqual(local.config.pool.dkim?.keys?.map((key) => key.keyFile), ['/work/local/secrets/dkim-example-com/private.pem', '/work/local/secrets/dkim-example-com/ed25519.pem']);
  assert.deepEqual(local.config.pool.virtualMtas[0]!.dkimKeys?.map((key) => key.keyFile), ['/work/local/secrets/dkim-brand/private.pem']);
});
