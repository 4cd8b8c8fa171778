// SmtpListener limits reach the relay: every field of spec.limits (the transfer-rate floor
// among them) is rendered into the listener of the runtime config with the same meaning,
// omitted ones take the relay's defaults, and values the relay could not use are refused by
// the resource schema, naming the field.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { ListenerConfig } from '../../mta/config/schema.ts';
import { parseVmtaResource } from '../../operator/api/parse.ts';
import { renderPool } from '../../operator/render/pool.ts';
import { exampleInput, renderedRelayConfig } from './example-resources.ts';

type Input = Awaited<ReturnType<typeof exampleInput>>;

function renderedLimits(input: Input, listenerName: string): ListenerConfig['limits'] {
  const result = renderPool(input);
  assert.deepEqual(result.problems, []);
  const config = renderedRelayConfig(result);
  const listener = config.listeners.find((entry) => entry.name === listenerName);
  assert.ok(listener, `no listener ${listenerName} in the runtime config`);
  return listener.limits;
}

test('every SmtpListener limit, minDataRate and dataRateGrace included, is rendered into the relay config', async () => {
  const input = await exampleInput();
  const listener = input.listeners[0]!;
  listener.spec.limits = {
    maxConnections: 300,
    maxConnectionsPerClient: 7,
    maxMessageSize: 4096,
    maxRecipients: 9,
    idleTimeout: '45s',
    commandTimeout: '2m',
    minDataRate: 2000,
    dataRateGrace: '5s',
    maxErrors: 4,
    greetingDelay: '1s',
  };
  assert.deepEqual(renderedLimits(input, listener.metadata.name), {
    maxConnections: 300,
    maxConnectionsPerClient: 7,
    maxMessageSize: 4096,
    maxRecipients: 9,
    idleTimeout: 45_000,
    commandTimeout: 120_000,
    minDataRate: 2000,
    dataRateGrace: 5_000,
    maxErrors: 4,
    greetingDelay: 1_000,
  });
});

test('omitted limits take the relay defaults: 500 bytes per second after a 30 s grace', async () => {
  const input = await exampleInput();
  const listener = input.listeners[0]!;
  listener.spec.limits = {};
  const limits = renderedLimits(input, listener.metadata.name);
  assert.equal(limits.minDataRate, 500);
  assert.equal(limits.dataRateGrace, 30_000);
});

test('a minDataRate or dataRateGrace the relay cannot use is refused, naming the field', () => {
  const listener = (limits: Record<string, unknown>) => ({
    apiVersion: 'vmta.dev/v1alpha1',
    kind: 'SmtpListener',
    metadata: { name: 'l1' },
    spec: { role: 'submission', relayPolicyRef: { name: 'p' }, poolRef: { name: 'pool' }, tls: { secretName: 'tls' }, limits },
  });
  for (const [field, value] of [['minDataRate', 0], ['minDataRate', 1.5], ['minDataRate', '500'], ['dataRateGrace', 'soon'], ['dataRateGrace', 30]] as const) {
    const result = parseVmtaResource(listener({ [field]: value }));
    assert.ok(!result.ok && result.problems.some((problem) => problem.startsWith(`spec.limits.${field}:`)), `${field}=${JSON.stringify(value)}: ${JSON.stringify(result)}`);
  }
  assert.ok(parseVmtaResource(listener({ minDataRate: 1, dataRateGrace: '0s' })).ok);
});
