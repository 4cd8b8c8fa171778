// No call in the relay takes an argument list built from data: a spread (`f(...items)`,
// `push(...items)`, `Math.max(...items)`) or `f.apply(this, items)` puts every item on the
// stack, and V8 overflows it at ~120,000 items — a queue of that size then crashed the relay at
// every retry. Arrays are walked with loops or reduce instead; this test reads every module of
// mta/ with the TypeScript parser and names each call that breaks the rule.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import ts from 'typescript';
import { REPO_ROOT } from '../fixtures/relay-process.ts';

function modulesUnder(directory: string): string[] {
  return readdirSync(directory, { recursive: true, encoding: 'utf8' })
    .filter((name) => name.endsWith('.ts'))
    .map((name) => path.join(directory, name));
}

/** `file:line: call` for every call or `new` that spreads into its arguments or applies an argument array. */
function dataSizedArgumentLists(file: string): string[] {
  const source = ts.createSourceFile(file, readFileSync(file, 'utf8'), ts.ScriptTarget.Latest, true);
  const found: string[] = [];
  const report = (node: ts.Node): void => {
    const { line } = source.getLineAndCharacterOfPosition(node.getStart());
    found.push(`${path.relative(REPO_ROOT, file)}:${line + 1}: ${node.getText().replace(/\s+/g, ' ').slice(0, 100)}`);
  };
  const visit = (node: ts.Node): void => {
    if ((ts.isCallExpression(node) || ts.isNewExpression(node)) && node.arguments?.some(ts.isSpreadElement)) report(node);
    if (ts.isCallExpression(node) && ts.isPropertyAccessExpression(node.expression) && node.expression.name.text === 'apply' && node.arguments.length === 2) report(node);
    ts.forEachChild(node, visit);
  };
  visit(source);
  return found;
}

test('no call in mta/ spreads or applies an array into its arguments', () => {
  const modules = modulesUnder(path.join(REPO_ROOT, 'mta'));
  assert.ok(modules.length > 40, `expected the relay's modules under mta/, found ${modules.length}`);
  assert.deepEqual(modules.flatMap(dataSizedArgumentLists), []);
});

test('the check finds each form of a data-sized argument list', () => {
  const sample = path.join(REPO_ROOT, 'test', 'fixtures', 'spread-calls.sample.ts');
  assert.equal(dataSizedArgumentLists(sample).length, 4);
});
