// spec.accounting and spec.mxRollup of a VirtualMtaPool reach relay.yaml: for every format the
// files on the spool volume, receipts, job header, rotation (size as bytes) and retention, the
// namespace as tenant, and a spec without accounting keeps the relay's defaults (no files);
// examples/accounting/ renders.
import assert from 'node:assert/strict';
import path from 'node:path';
import { test } from 'node:test';
import { parse } from 'yaml';
import { RuntimeConfig } from '../../mta/config/schema.ts';
import { VirtualMtaPool } from '../../operator/api/virtual-mta-pool.ts';
import { loadResourceDir, secretSummaries } from '../../operator/local/resource-files.ts';
import { renderPool } from '../../operator/render/pool.ts';
import { REPOSITORY_ROOT } from '../../scripts/generated-files.ts';
import { copy, exampleInput } from './example-resources.ts';

async function renderedDelivery(spec: Record<string, unknown>, namespace = 'mail'): Promise<RuntimeConfig['delivery']> {
  const input = await exampleInput();
  const pool = VirtualMtaPool.parse({ ...copy(input.pool), spec: { ...copy(input.pool.spec), ...spec } });
  const result = renderPool({ ...input, pool, namespace });
  assert.deepEqual(result.problems, []);
  const configMap = result.objects.find((object) => object.kind === 'ConfigMap') as unknown as { data: Record<string, string> };
  return RuntimeConfig.parse(parse(configMap.data['relay.yaml']!)).delivery;
}

test('every accounting format renders its files on the spool volume, with the namespace as tenant', async () => {
  const files = { jsonl: ['/var/spool/vmta/accounting/acct.jsonl', undefined], csv: [undefined, '/var/spool/vmta/accounting/acct.csv'], both: ['/var/spool/vmta/accounting/acct.jsonl', '/var/spool/vmta/accounting/acct.csv'] } as const;
  for (const [format, [file, csvFile]] of Object.entries(files)) {
    for (const namespace of ['mail', 'tenant-b']) {
      const { accounting } = await renderedDelivery({ accounting: { format } }, namespace);
      assert.deepEqual([accounting.file, accounting.csvFile, accounting.tenant], [file, csvFile, namespace], `${format} in ${namespace}`);
      assert.deepEqual([accounting.receipts, accounting.jobHeader], [true, 'X-Job']);
    }
  }
});

test('job header, receipts, rotation and retention render as the relay reads them', async () => {
  const { accounting } = await renderedDelivery({ accounting: { format: 'both', jobHeader: 'X-Campaign', receipts: false, rotate: { size: '64Mi', interval: '1h' }, retain: { files: 48, maxAge: '7d' }, syncInterval: '50ms' } });
  assert.equal(accounting.jobHeader, 'X-Campaign');
  assert.equal(accounting.receipts, false);
  assert.deepEqual(accounting.rotate, { maxBytes: 64 * 1024 * 1024, interval: 3_600_000 });
  assert.deepEqual(accounting.retain, { maxFiles: 48, maxAge: 7 * 86_400_000 });
  assert.equal(accounting.syncInterval, 50);
});

test('without spec.accounting no file is written; mxRollup renders both ways', async () => {
  const plain = await renderedDelivery({});
  assert.deepEqual([plain.accounting.file, plain.accounting.csvFile, plain.accounting.tenant], [undefined, undefined, undefined]);
  for (const mxRollup of [true, false]) assert.equal((await renderedDelivery({ mxRollup })).mxRollup, mxRollup);
});

test('bad accounting fields are refused naming the field', () => {
  const cases: [Record<string, unknown>, RegExp][] = [
    [{ format: 'xml' }, /format/],
    [{ jobHeader: 'X Job' }, /jobHeader/],
    [{ rotate: { interval: 'hourly' } }, /rotate.*interval|interval/],
    [{ rotate: { size: 'big' } }, /size/],
    [{ retain: { files: 0 } }, /files/],
  ];
  for (const [accounting, field] of cases) {
    const parsed = VirtualMtaPool.shape.spec.shape.accounting.safeParse(accounting);
    assert.equal(parsed.success, false, JSON.stringify(accounting));
    assert.match(JSON.stringify(parsed.error!.issues.map((issue) => issue.path)), field, JSON.stringify(accounting));
  }
});

test('examples/accounting/ loads and renders both files with its rotation and retention', async () => {
  const loaded = await loadResourceDir(path.join(REPOSITORY_ROOT, 'examples/accounting'));
  assert.deepEqual(loaded.errors, []);
  const result = renderPool({ pool: loaded.resources.pools[0]!, listeners: [], policies: [], secrets: secretSummaries(loaded.resources.secrets), image: 'registry.example/vmta:1.0.0', namespace: 'billing' });
  assert.deepEqual(result.problems, []);
  const configMap = result.objects.find((object) => object.kind === 'ConfigMap') as unknown as { data: Record<string, string> };
  const { accounting } = RuntimeConfig.parse(parse(configMap.data['relay.yaml']!)).delivery;
  assert.deepEqual([accounting.file, accounting.csvFile, accounting.tenant, accounting.jobHeader, accounting.receipts], ['/var/spool/vmta/accounting/acct.jsonl', '/var/spool/vmta/accounting/acct.csv', 'billing', 'X-Job', true]);
  assert.deepEqual(accounting.rotate, { maxBytes: 100 * 1024 * 1024, interval: 86_400_000 });
  assert.deepEqual(accounting.retain, { maxFiles: 30, maxAge: 30 * 86_400_000 });
});
