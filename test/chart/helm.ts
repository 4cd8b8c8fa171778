// Runs the project's helm (installed by scripts/install-helm.ts into .tools/bin) on the chart
// and parses what it renders. Installing helm is part of the test: without it the tests fail.
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseAllDocuments } from 'yaml';
import { installHelm } from '../../scripts/install-helm.ts';
import type { Manifest } from './kubernetes-schemas.ts';

export const REPO_ROOT = resolve(fileURLToPath(new URL('../..', import.meta.url)));
export const CHART_DIR = join(REPO_ROOT, 'charts', 'vmta-operator');
export const ALL_ON_VALUES = join(CHART_DIR, 'ci', 'all-on-values.yaml');
export const NAMESPACE_SCOPE_VALUES = join(CHART_DIR, 'ci', 'namespace-scope-values.yaml');

export interface HelmResult {
  status: number | null;
  stdout: string;
  stderr: string;
}

export function helm(args: string[]): HelmResult {
  const result = spawnSync(installHelm(), args, { encoding: 'utf8', cwd: REPO_ROOT, timeout: 120_000 });
  if (result.error) throw result.error;
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}

/** `helm template` of the chart in namespace "mail"; throws with helm's message when it fails. */
export function renderChart(options: { valuesFiles?: string[]; set?: string[] } = {}): Manifest[] {
  const args = ['template', 'vmta', CHART_DIR, '--namespace', 'mail'];
  for (const file of options.valuesFiles ?? []) args.push('--values', file);
  for (const assignment of options.set ?? []) args.push('--set', assignment);
  const result = helm(args);
  if (result.status !== 0) throw new Error(`helm ${args.join(' ')} failed:\n${result.stderr}`);
  return parseAllDocuments(result.stdout)
    .map((document) => {
      if (document.errors.length > 0) throw new Error(`helm template printed invalid YAML: ${document.errors[0]!.message}`);
      return document.toJS() as Manifest | null;
    })
    .filter((manifest): manifest is Manifest => manifest !== null);
}

export function findAll(manifests: Manifest[], kind: string): Manifest[] {
  return manifests.filter((manifest) => manifest.kind === kind);
}

export function findOne(manifests: Manifest[], kind: string, name?: string): Manifest {
  const found = manifests.filter((manifest) => manifest.kind === kind && (name === undefined || manifest.metadata.name === name));
  if (found.length !== 1) throw new Error(`expected one ${kind}${name ? ` ${name}` : ''}, rendered ${found.length}`);
  return found[0]!;
}

/** The CRDs the chart carries (files/crds/*.yaml, one or several documents a file). */
export function chartCrds(): Manifest[] {
  const directory = join(CHART_DIR, 'files', 'crds');
  return readdirSync(directory)
    .filter((name) => name.endsWith('.yaml'))
    .flatMap((name) => parseAllDocuments(readFileSync(join(directory, name), 'utf8')).map((document) => document.toJS() as Manifest | null))
    .filter((manifest): manifest is Manifest => manifest !== null);
}
