// spec.suppression and spec.dsn of a VirtualMtaPool: rendered into relay.yaml, the pool's pods as
// suppression peers (only a persistent pool with an admin token shares its list), a hot field
// when replicas change, and invalid values refused naming the field.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { RuntimeConfig } from '../../mta/config/schema.ts';
import { BOUNCE_CATEGORIES } from '../../mta/delivery/reply-classification.ts';
import { VirtualMtaPoolSpec } from '../../operator/api/virtual-mta-pool.ts';
import { renderPool } from '../../operator/render/pool.ts';
import { copy, exampleInput, renderedRelayConfig } from './example-resources.ts';

type Input = Awaited<ReturnType<typeof exampleInput>>;

function relayConfig(input: Input): RuntimeConfig {
  const result = renderPool(input);
  assert.deepEqual(result.problems, []);
  return renderedRelayConfig(result);
}

async function withToken(replicas: number): Promise<Input> {
  const input = await exampleInput();
  input.pool.spec.replicas = replicas;
  input.pool.spec.admin = { tokenSecretName: 'relay-admin' };
  input.secrets.push({ name: 'relay-admin', keys: ['token'] });
  return input;
}

test('a persistent pool with an admin token lists every pod\'s admin address as a suppression peer, one per replica', async () => {
  for (const replicas of [1, 2, 5]) {
    const config = relayConfig(await withToken(replicas));
    assert.deepEqual(config.suppression, {
      mode: 'refuse',
      hardBounceCategories: ['bad-mailbox'],
      peers: Array.from({ length: replicas }, (_, ordinal) => `outbound-${ordinal}.outbound-headless:8025`),
    });
  }
});

test('without an admin token or with an ephemeral spool the pods share nothing (peers would refuse, or have no stable names)', async () => {
  const noToken = await exampleInput();
  assert.deepEqual(relayConfig(noToken).suppression?.peers, []);
  const ephemeral = await withToken(3);
  ephemeral.pool.spec.spool = { ...ephemeral.pool.spec.spool, mode: 'ephemeral', size: '1Gi' };
  assert.deepEqual(relayConfig(ephemeral).suppression?.peers, []);
});

test('scaling a sharing pool changes relay.yaml (hot) and leaves the pod template alone', async () => {
  const two = renderPool(await withToken(2));
  const three = renderPool(await withToken(3));
  assert.notEqual(two.configHash, three.configHash);
  assert.equal(two.podTemplateHash, three.podTemplateHash);
});

test('mode bounce and every bounce category render as given; no spec.suppression renders no block', async () => {
  const input = await exampleInput();
  input.pool.spec.suppression = { mode: 'bounce', hardBounceCategories: [...BOUNCE_CATEGORIES] };
  assert.deepEqual(relayConfig(input).suppression, { mode: 'bounce', hardBounceCategories: [...BOUNCE_CATEGORIES], peers: [] });
  const none = copy(input);
  delete none.pool.spec.suppression;
  assert.equal(relayConfig(none).suppression, undefined);
});

test('an unknown mode or bounce category is refused naming the field and the allowed values', async () => {
  const spec = (await exampleInput()).pool.spec;
  for (const [suppression, field] of [
    [{ mode: 'drop' }, 'suppression.mode'],
    [{ hardBounceCategories: ['bad-mailbox', 'user-unknown'] }, 'suppression.hardBounceCategories.1'],
    [{ mode: 'refuse', peers: ['x:1'] }, 'suppression'],
  ] as const) {
    const parsed = VirtualMtaPoolSpec.safeParse({ ...spec, suppression });
    assert.equal(parsed.success, false, JSON.stringify(suppression));
    const issue = parsed.error!.issues[0]!;
    assert.equal(issue.path.join('.'), field, JSON.stringify(issue));
  }
});

test('spec.dsn.delayWarningAfter renders as delivery.delayWarningAfter; a malformed duration is refused naming the field', async () => {
  const input = await exampleInput();
  input.pool.spec.dsn = { delayWarningAfter: '90m' };
  assert.equal(relayConfig(input).delivery.delayWarningAfter, 90 * 60_000);
  const parsed = VirtualMtaPoolSpec.safeParse({ ...input.pool.spec, dsn: { delayWarningAfter: 'soon' } });
  assert.equal(parsed.success, false);
  assert.equal(parsed.error!.issues[0]!.path.join('.'), 'dsn.delayWarningAfter');
});
