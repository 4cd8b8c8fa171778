// TLS-RPT settings from the VirtualMtaPool to relay.yaml: spec.tlsReporting renders into
// tlsReporting with the CA Secret's file, the Secret is mounted, a missing Secret key is a problem
// naming the field; the relay config refuses reporting without submitter or contactInfo, an
// interval out of bounds and an unknown VirtualMTA, each with the field named.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parse } from 'yaml';
import { RuntimeConfig } from '../../mta/config/schema.ts';
import { VirtualMtaPoolSpec } from '../../operator/api/virtual-mta-pool.ts';
import { renderPool } from '../../operator/render/pool.ts';
import { copy, exampleInput } from '../render/example-resources.ts';

async function reportingInput(keys = ['ca.crt']) {
  const input = await exampleInput();
  const pool = copy(input.pool);
  pool.spec.tlsReporting = VirtualMtaPoolSpec.shape.tlsReporting.parse({ enabled: true, submitter: 'relay.example.com', contactInfo: 'tlsrpt@example.com', https: { caSecretName: 'report-ca' } });
  return { ...input, pool, secrets: [...input.secrets, { name: 'report-ca', keys }] };
}

test('spec.tlsReporting renders into relay.yaml, with the CA Secret mounted', async () => {
  const result = renderPool(await reportingInput());
  assert.deepEqual(result.problems, []);
  const configMap = result.objects.find((object) => object.kind === 'ConfigMap') as unknown as { data: Record<string, string> };
  const config = RuntimeConfig.parse(parse(configMap.data['relay.yaml']!));
  assert.deepEqual(config.tlsReporting, {
    enabled: true,
    submitter: 'relay.example.com',
    contactInfo: 'tlsrpt@example.com',
    interval: 86_400_000,
    https: { trustedCaFile: '/etc/vmta/secrets/report-ca/ca.crt', allowPrivateAddresses: false, timeout: 30_000 },
  });
  const workload = result.objects.find((object) => object.kind === 'StatefulSet') as any;
  const mounts: string[] = workload.spec.template.spec.containers[0].volumeMounts.map((mount: { mountPath: string }) => mount.mountPath);
  assert.ok(mounts.includes('/etc/vmta/secrets/report-ca'), mounts.join(', '));
});

test('a CA Secret without ca.crt stops the render with the field named', async () => {
  const result = renderPool(await reportingInput(['tls.crt']));
  assert.ok(result.problems.some((problem) => problem.reason === 'SecretKeyMissing' && problem.message.includes('spec.tlsReporting.https.caSecretName: Secret "report-ca" has no key "ca.crt"')), JSON.stringify(result.problems));
});

test('bad tlsReporting settings are refused with the field named, and reporting is off by default', async () => {
  const rendered = renderPool(await exampleInput()).runtime.config;
  assert.equal(RuntimeConfig.parse(rendered).tlsReporting.enabled, false);
  for (const [tlsReporting, field, message] of [
    [{ enabled: true, contactInfo: 'a@b.example' }, 'submitter', /submitter domain/],
    [{ enabled: true, submitter: 'relay.example.com' }, 'contactInfo', /contactInfo/],
    [{ interval: '500ms' }, 'interval', /between 1s and 7d|duration/],
    [{ interval: '8d' }, 'interval', /between 1s and 7d/],
    [{ virtualMta: 'nope' }, 'virtualMta', /no VirtualMTA named "nope"/],
    [{ from: 'not an address' }, 'from', /an address/],
    [{ https: { allowPrivateAddresses: 'yes' } }, 'https', /boolean/],
  ] as const) {
    const parsed = RuntimeConfig.safeParse({ ...rendered, tlsReporting });
    assert.ok(!parsed.success, JSON.stringify(tlsReporting));
    const issue = parsed.error.issues[0]!;
    assert.deepEqual(issue.path.slice(0, 2), ['tlsReporting', field], JSON.stringify(issue));
    assert.match(issue.message, message);
  }
});
