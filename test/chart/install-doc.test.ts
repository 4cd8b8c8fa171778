// docs/install.md is kept true by running or checking every command it shows: helm install and
// helm template run for real (install with --dry-run=client, as no cluster runs here) on the
// values files the page shows; kubectl commands must name objects the chart renders and files
// the repository has; the options table must list every value with its default.
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test, type TestContext } from 'node:test';
import { parse as parseYaml, parseAllDocuments } from 'yaml';
import { CHART_DIR, helm, REPO_ROOT } from './helm.ts';
import type { Manifest } from './kubernetes-schemas.ts';
import { namedYamlFiles, shellCommands } from './markdown.ts';

const DOC = readFileSync(join(REPO_ROOT, 'docs', 'install.md'), 'utf8');

function optionValue(words: string[], ...names: string[]): string | undefined {
  const index = words.findIndex((word) => names.includes(word));
  return index >= 0 ? words[index + 1] : undefined;
}

describe('docs/install.md', { timeout: 300_000 }, () => {
  let workDir = '';
  /** Objects rendered by each `helm install` of the page, by release namespace. */
  const installed = new Map<string, Manifest[]>();
  const commands = shellCommands(DOC);

  before(() => {
    // The page's commands run from the top of a checkout: give them one with the page's values files.
    workDir = mkdtempSync(join(tmpdir(), 'vmta-install-doc-'));
    symlinkSync(join(REPO_ROOT, 'charts'), join(workDir, 'charts'));
    for (const [name, body] of namedYamlFiles(DOC)) writeFileSync(join(workDir, name), body);
  });

  after(() => {
    if (workDir) rmSync(workDir, { recursive: true, force: true });
  });

  function runHelm(args: string[]): string {
    const result = helm(args.map((word) => (word.endsWith('.yaml') && existsSync(join(workDir, word)) ? join(workDir, word) : word)).map((word) => (word === 'charts/vmta-operator' ? CHART_DIR : word)));
    assert.equal(result.status, 0, `helm ${args.join(' ')}\n${result.stderr}`);
    return result.stdout;
  }

  test('the page shows commands', () => {
    assert.ok(commands.length >= 10, `found ${commands.length} commands`);
  });

  test('every helm command of the page runs (install as --dry-run=client, upgrade as template)', () => {
    const helmCommands = commands.filter((words) => words[0] === 'helm');
    assert.ok(helmCommands.some((words) => words[1] === 'install'));
    for (const words of helmCommands) {
      const [, verb, ...rest] = words;
      if (verb === 'install') {
        const output = runHelm(['install', ...rest, '--dry-run=client']);
        const namespace = optionValue(words, '--namespace', '-n')!;
        const manifestText = output.split('\nMANIFEST:\n')[1]?.split('\nNOTES:\n')[0] ?? '';
        const manifests = parseAllDocuments(manifestText).map((d) => d.toJS() as Manifest | null).filter((m): m is Manifest => m !== null);
        assert.ok(manifests.length > 0, `helm ${words.join(' ')} renders objects`);
        installed.set(namespace, [...(installed.get(namespace) ?? []), ...manifests]);
      } else if (verb === 'template') {
        assert.match(runHelm(words.slice(1)), /kind: Deployment/);
      } else if (verb === 'upgrade') {
        // An upgrade needs a cluster; what it would apply is the same chart and values rendered.
        assert.match(runHelm(['template', ...rest]), /kind: Deployment/);
      } else if (verb === 'uninstall') {
        const release = rest[0];
        assert.ok(commands.some((other) => other[0] === 'helm' && other[1] === 'install' && other[2] === release), `helm uninstall ${release} names an installed release`);
      } else {
        assert.fail(`docs/install.md shows "helm ${verb}", which this test does not check yet`);
      }
    }
  });

  test('every kubectl command of the page names objects and files that exist', (t: TestContext) => {
    const crdNames = new Set<string>();
    const plurals = new Set<string>();
    for (const manifests of installed.values()) {
      for (const crd of manifests.filter((m) => m.kind === 'CustomResourceDefinition')) {
        crdNames.add(crd.metadata.name);
        plurals.add((crd as unknown as { spec: { names: { plural: string } } }).spec.names.plural);
      }
    }
    assert.ok(crdNames.size > 0, 'an install of the page renders the CRDs');
    for (const words of commands.filter((w) => w[0] === 'kubectl')) {
      const text = words.join(' ');
      const file = optionValue(words, '-f');
      if (file) {
        if (file === 'crds/' && !existsSync(join(REPO_ROOT, 'crds'))) {
          t.diagnostic(`"${text}": crds/ is not generated on this branch yet (npm run generate)`);
        } else {
          assert.ok(existsSync(join(REPO_ROOT, file)), `"${text}": ${file} exists in the repository`);
        }
        continue;
      }
      const workload = words.find((word) => word.startsWith('deployment/'));
      if (workload) {
        const namespace = optionValue(words, '-n', '--namespace')!;
        const names = (installed.get(namespace) ?? []).filter((m) => m.kind === 'Deployment').map((m) => m.metadata.name);
        assert.ok(names.includes(workload.slice('deployment/'.length)), `"${text}": the chart installs ${workload} in ${namespace} (it has ${names.join(', ')})`);
        continue;
      }
      if (words[1] === 'get' && words[2] === 'crds') {
        assert.deepEqual(words.slice(3).sort(), [...crdNames].sort(), `"${text}" names every CRD`);
        continue;
      }
      if (words[1] === 'get') {
        for (const resource of words[2]!.split(',')) assert.ok(plurals.has(resource), `"${text}": ${resource} is a vmta.dev resource`);
        continue;
      }
      assert.fail(`docs/install.md shows "${text}", which this test does not check yet`);
    }
  });

  test('the requirement and image commands of the page are the project\'s own', () => {
    for (const words of commands.filter((w) => !['helm', 'kubectl'].includes(w[0]!))) {
      const text = words.join(' ');
      if (text === 'npm ci') assert.ok(existsSync(join(REPO_ROOT, 'package-lock.json')));
      else if (text === 'node scripts/install-helm.ts') assert.ok(existsSync(join(REPO_ROOT, 'scripts', 'install-helm.ts')));
      else if (text === 'export PATH="$PWD/.tools/bin:$PATH"') assert.ok(existsSync(join(REPO_ROOT, '.tools', 'bin', 'helm')), 'install-helm puts helm in .tools/bin');
      else if (words[0] === 'docker' && words[1] === 'build') assert.equal(words.at(-1), '.', 'the image builds from the top-level Dockerfile (replayed by test/image)');
      else if (words[0] === 'docker' && words[1] === 'push') {
        const built = commands.find((w) => w[0] === 'docker' && w[1] === 'build');
        assert.equal(words[2], optionValue(built ?? [], '-t'), 'docker push pushes the tag just built');
      } else assert.fail(`docs/install.md shows "${text}", which this test does not check yet`);
    }
  });

  test('the options table lists every value of values.schema.json with its values.yaml default', () => {
    const schema = JSON.parse(readFileSync(join(CHART_DIR, 'values.schema.json'), 'utf8')) as SchemaNode & { definitions: Record<string, SchemaNode> };
    const values = parseYaml(readFileSync(join(CHART_DIR, 'values.yaml'), 'utf8')) as Record<string, unknown>;
    interface SchemaNode {
      $ref?: string;
      properties?: Record<string, SchemaNode>;
    }
    const expected = new Map<string, string>();
    const walk = (node: SchemaNode, value: unknown, prefix: string): void => {
      for (const [key, child] of Object.entries(node.properties ?? {})) {
        if (key === 'global') continue;
        const resolved = child.$ref ? schema.definitions[child.$ref.split('/').at(-1)!]! : child;
        const childValue = (value as Record<string, unknown> | undefined)?.[key];
        if (resolved.properties) walk(resolved, childValue, `${prefix}${key}.`);
        else expected.set(`${prefix}${key}`, JSON.stringify(childValue));
      }
    };
    walk(schema, values, '');
    const documented = new Map([...DOC.matchAll(/^\| `([\w.]+)` \| `(.*?)` \|/gm)].map((match) => [match[1]!, match[2]!]));
    assert.deepEqual(Object.fromEntries(documented), Object.fromEntries(expected));
  });
});
