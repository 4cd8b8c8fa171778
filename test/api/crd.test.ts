// The CRDs in crds/ are generated from the zod schemas, stay in sync with them, and are
// structural schemas whose CEL rules the API server can compile and cost-estimate.
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { test } from 'node:test';
import { parse } from 'yaml';
import { buildCrd, type JsonSchema } from '../../operator/api/crd.ts';
import { KINDS } from '../../operator/api/resources.ts';
import { generatedFiles, REPOSITORY_ROOT } from '../../scripts/generated-files.ts';

test('crds/ matches what the zod schemas generate (run `npm run generate` after changing operator/api)', async () => {
  const files = await generatedFiles();
  const crdFiles = [...files].filter(([relative]) => relative.startsWith('crds'));
  assert.equal(crdFiles.length, 3);
  for (const [relative, text] of crdFiles) {
    const committed = await readFile(path.join(REPOSITORY_ROOT, relative), 'utf8').catch(() => '(missing)');
    assert.equal(committed, text, `${relative} drifted from operator/api; run npm run generate`);
  }
});

interface Visit {
  node: JsonSchema;
  path: string;
}

function walk(node: JsonSchema, at: string, visit: (entry: Visit) => void): void {
  visit({ node, path: at });
  for (const [name, child] of Object.entries((node.properties ?? {}) as Record<string, JsonSchema>)) walk(child, `${at}.${name}`, visit);
  if (node.items) walk(node.items as JsonSchema, `${at}[]`, visit);
  if (node.additionalProperties && typeof node.additionalProperties === 'object') walk(node.additionalProperties as JsonSchema, `${at}{}`, visit);
}

function openApiSchema(crd: JsonSchema): JsonSchema {
  const versions = (crd.spec as { versions: { schema: { openAPIV3Schema: JsonSchema } }[] }).versions;
  const version = versions[0];
  assert.ok(version);
  return version.schema.openAPIV3Schema;
}

for (const definition of KINDS) {
  const crd = buildCrd(definition);
  const schema = openApiSchema(crd);

  test(`${definition.kind} CRD is a structural schema`, () => {
    walk(schema, '', ({ node, path: at }) => {
      for (const forbidden of ['$ref', '$schema', 'anyOf', 'oneOf', 'allOf', 'not', 'propertyNames', 'definitions', '$defs']) {
        assert.ok(!(forbidden in node), `${at}: "${forbidden}" is not allowed in a structural schema`);
      }
      assert.ok(typeof node.type === 'string' || node['x-kubernetes-int-or-string'] || node['x-kubernetes-preserve-unknown-fields'], `${at}: no type`);
      assert.notEqual(node.additionalProperties, false, `${at}: additionalProperties: false`);
      assert.ok(!(node.properties && node.additionalProperties), `${at}: properties and additionalProperties together`);
      if (typeof node.pattern === 'string') assert.doesNotMatch(node.pattern, /\(\?[=!<]|\\[1-9]/, `${at}: the API server checks patterns with Go's RE2: no look-around or back-references`);
      if (node.type === 'array') assert.ok(typeof node.maxItems === 'number', `${at}: a list without maxItems (CEL cost)`);
      if (node.type === 'string' && at.startsWith('.spec')) assert.ok(typeof node.maxLength === 'number' || Array.isArray(node.enum), `${at}: a string without maxLength (CEL cost)`);
      const mapKeys = node['x-kubernetes-list-map-keys'] as string[] | undefined;
      if (mapKeys) {
        const item = node.items as JsonSchema;
        for (const key of mapKeys) assert.ok(((item.required as string[] | undefined) ?? []).includes(key) || 'default' in ((item.properties as Record<string, JsonSchema>)[key] ?? {}), `${at}: list-map key "${key}" must be required`);
      }
    });
  });

  test(`${definition.kind} CEL rules and their fieldPaths name fields that exist`, () => {
    let rules = 0;
    walk(schema, '', ({ node, path: at }) => {
      for (const { rule, fieldPath, message } of (node['x-kubernetes-validations'] ?? []) as { rule: string; fieldPath?: string; message: string }[]) {
        rules += 1;
        assert.ok(message.length > 0, `${at}: rule without message`);
        assert.equal(balance(rule), 0, `${at}: unbalanced parentheses in ${rule}`);
        for (const match of rule.matchAll(/\bself((?:\.[A-Za-z_][A-Za-z0-9_]*)+)/g)) {
          const chain = (match[1] ?? '').split('.').filter(Boolean);
          assert.ok(resolvePath(node, chain, at === '' ? ['metadata'] : []), `${at}: rule "${rule}" references self.${chain.join('.')}, which the schema lacks`);
        }
        if (fieldPath) assert.ok(resolveField(node, fieldPath.split('.').filter(Boolean)), `${at}: fieldPath ${fieldPath} does not exist`);
      }
    });
    assert.ok(rules >= 2, 'expected CEL rules');
  });

  test(`${definition.kind} CRD has names, category, printer columns and subresources`, () => {
    const spec = crd.spec as { scope: string; names: { shortNames: string[]; categories: string[] }; versions: { subresources: JsonSchema; additionalPrinterColumns: { name: string }[] }[] };
    assert.equal(spec.scope, 'Namespaced');
    assert.deepEqual(spec.names.categories, ['vmta']);
    assert.ok(spec.names.shortNames.length > 0);
    const version = spec.versions[0];
    assert.ok(version);
    assert.deepEqual(version.subresources.status, {});
    const columns = version.additionalPrinterColumns.map((column) => column.name);
    for (const name of ['Ready', 'Reason', 'Age']) assert.ok(columns.includes(name), `missing printer column ${name}`);
    if (definition.kind === 'VirtualMtaPool') {
      assert.deepEqual(version.subresources.scale, { specReplicasPath: '.spec.replicas', statusReplicasPath: '.status.replicas', labelSelectorPath: '.status.selector' });
      assert.ok(columns.includes('Replicas'));
    }
  });
}

test('the committed CRD YAML parses back to what buildCrd produces', async () => {
  for (const definition of KINDS) {
    const text = await readFile(path.join(REPOSITORY_ROOT, 'crds', `vmta.dev_${definition.plural}.yaml`), 'utf8');
    assert.deepEqual(parse(text), buildCrd(definition));
  }
});

/** A fieldPath must name a property the schema declares, all the way down. */
function resolveField(node: JsonSchema, chain: string[]): boolean {
  let current: JsonSchema | undefined = node;
  for (const name of chain) current = (current?.properties as Record<string, JsonSchema> | undefined)?.[name];
  return current !== undefined;
}

function balance(rule: string): number {
  let depth = 0;
  for (const char of rule.replace(/'[^']*'/g, '')) {
    if (char === '(') depth += 1;
    if (char === ')') depth -= 1;
    if (depth < 0) return depth;
  }
  return depth;
}

/** Follows property names (and list items) from a node; `opaque` names fields the schema does not model (metadata). */
function resolvePath(node: JsonSchema, chain: string[], opaque: string[]): boolean {
  let current: JsonSchema | undefined = node;
  for (const [index, name] of chain.entries()) {
    if (index === 0 && opaque.includes(name)) return true;
    if (!current) return false;
    // CEL methods such as .size() / .all() / .endsWith() end the field chain.
    const properties = current.properties as Record<string, JsonSchema> | undefined;
    if (!properties?.[name]) return current.type === 'array' || current.type === 'string' ? true : false;
    current = properties[name];
  }
  return true;
}

test('kubectl explain describes every kind, its spec, its status and every field of the spec', () => {
  for (const definition of KINDS) {
    const schema = openApiSchema(buildCrd(definition));
    const properties = schema.properties as Record<string, JsonSchema>;
    const described = (node: JsonSchema | undefined, what: string) => assert.ok(typeof node?.description === 'string' && node.description.length >= 20, `kubectl explain ${what} shows a description`);
    described(schema, definition.singular);
    assert.doesNotMatch(String(schema.description), /Generated from/, `${definition.kind}: the description says what the kind is, not how the file was made`);
    described(properties.spec, `${definition.singular}.spec`);
    described(properties.status, `${definition.singular}.status`);
    for (const [field, node] of Object.entries((properties.spec!.properties ?? {}) as Record<string, JsonSchema>)) described(node, `${definition.singular}.spec.${field}`);
  }
});

test('admin.tokenSecretName says what docs/security.md says: without it, queue changes are refused, and it names the CLI actions', async () => {
  const pool = KINDS.find((definition) => definition.kind === 'VirtualMtaPool')!;
  const admin = ((openApiSchema(buildCrd(pool)).properties as Record<string, JsonSchema>).spec!.properties as Record<string, JsonSchema>).admin!;
  const description = String((admin.properties as Record<string, JsonSchema>).tokenSecretName!.description);
  assert.match(description, /refused \(401\)/);
  assert.doesNotMatch(description, /open to anyone|flush|purge/);
  for (const action of ['pause', 'resume', 'retry', 'bounce', 'delete']) assert.ok(description.includes(action), `names ${action}`);
  const security = await readFile(path.join(REPOSITORY_ROOT, 'docs', 'security.md'), 'utf8');
  assert.match(security, /on a relay with none configured gets 401/);
  assert.match(security, /A pool without tokens answers only the open endpoints/);
  assert.doesNotMatch(security, /flush|purge/);
});
