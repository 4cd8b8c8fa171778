// Copies the repository's generated CRDs (crds/*.yaml, from `npm run generate`) into the Helm
// chart (charts/vmta-operator/files/crds/), which cannot read files outside its own directory.
// The copy is byte for byte and files no longer in crds/ are removed; test/chart/crds-sync.test.ts
// fails when the two differ. Usage: node scripts/sync-chart-crds.ts
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const REPO_ROOT = resolve(fileURLToPath(new URL('..', import.meta.url)));
export const SOURCE_CRDS = join(REPO_ROOT, 'crds');
export const CHART_CRDS = join(REPO_ROOT, 'charts', 'vmta-operator', 'files', 'crds');

export function listCrdFiles(directory: string): string[] {
  return readdirSync(directory)
    .filter((name) => name.endsWith('.yaml'))
    .sort();
}

/** File names that are missing, extra or different in the chart's copy; empty when in step. */
export function crdDrift(sourceDir = SOURCE_CRDS, chartDir = CHART_CRDS): string[] {
  const source = listCrdFiles(sourceDir);
  const copied = existsSync(chartDir) ? listCrdFiles(chartDir) : [];
  const problems: string[] = [];
  for (const name of source) {
    if (!copied.includes(name)) problems.push(`${name}: missing from the chart`);
    else if (!readFileSync(join(sourceDir, name)).equals(readFileSync(join(chartDir, name)))) problems.push(`${name}: differs from crds/${name}`);
  }
  for (const name of copied) {
    if (!source.includes(name)) problems.push(`${name}: in the chart but not in crds/`);
  }
  return problems;
}

export function syncChartCrds(sourceDir = SOURCE_CRDS, chartDir = CHART_CRDS): string[] {
  if (!existsSync(sourceDir)) throw new Error(`${sourceDir} does not exist: run npm run generate first`);
  mkdirSync(chartDir, { recursive: true });
  const source = listCrdFiles(sourceDir);
  for (const name of listCrdFiles(chartDir)) {
    if (!source.includes(name)) rmSync(join(chartDir, name));
  }
  for (const name of source) copyFileSync(join(sourceDir, name), join(chartDir, name));
  return source;
}

if (import.meta.main) {
  const copied = syncChartCrds();
  console.log(`copied ${copied.length} CRDs from crds/ to charts/vmta-operator/files/crds/: ${copied.join(', ')}`);
}
