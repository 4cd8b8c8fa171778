// The chart's copy of the CRDs (charts/vmta-operator/files/crds/) is one of the files
// `npm run generate` writes (scripts/generated-files.ts): it must equal what the zod schemas
// generate, byte for byte, and so equal crds/.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { CHART_CRDS_DIR, generatedFiles, REPOSITORY_ROOT } from '../../scripts/generated-files.ts';
import { chartCrds } from './helm.ts';

test('the chart CRDs are exactly what npm run generate writes, the same bytes as crds/', async () => {
  const files = await generatedFiles();
  const expected = [...files].filter(([relative]) => relative.startsWith(CHART_CRDS_DIR + '/'));
  assert.equal(expected.length, 3);
  const committed = readdirSync(join(REPOSITORY_ROOT, CHART_CRDS_DIR)).sort();
  assert.deepEqual(committed, expected.map(([relative]) => relative.slice(CHART_CRDS_DIR.length + 1)).sort(), 'no stale or missing CRD in the chart; run npm run generate');
  for (const [relative, text] of expected) {
    assert.equal(readFileSync(join(REPOSITORY_ROOT, relative), 'utf8'), text, `${relative} drifted; run npm run generate`);
    assert.equal(text, files.get(join('crds', relative.slice(CHART_CRDS_DIR.length + 1))));
  }
});

test('the chart CRDs define the three vmta.dev kinds with a status subresource', () => {
  const kinds = chartCrds() as unknown as Array<{
    spec: { group: string; names: { kind: string }; versions: Array<{ name: string; subresources?: { status?: object } }> };
  }>;
  assert.deepEqual(kinds.map((crd) => crd.spec.names.kind).sort(), ['RelayPolicy', 'SmtpListener', 'VirtualMtaPool']);
  for (const crd of kinds) {
    assert.equal(crd.spec.group, 'vmta.dev');
    const v1alpha1 = crd.spec.versions.find((version) => version.name === 'v1alpha1');
    assert.ok(v1alpha1?.subresources?.status, `${crd.spec.names.kind} v1alpha1 has the status subresource`);
  }
});
