// Reading PowerMTA configuration syntax: directives and nested blocks with their file and line,
// comments wherever a word starts with #, names case-insensitive, includes relative to the
// including file with wildcards in name order, and every malformed shape refused with file:line.
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { parsePowerMtaConfig, PmtaSyntaxError, readPowerMtaConfig, type PmtaNode } from '../../operator/import/powermta-config.ts';

let dir: string;
before(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'vmta-pmta-config-'));
});
after(() => rm(dir, { recursive: true, force: true }));

const names = (nodes: PmtaNode[]): string[] => nodes.map((node) => node.name);

test('directives and nested blocks keep their arguments, raw value, file and line', () => {
  const nodes = parsePowerMtaConfig('smtp-listener 10.0.1.22:25\n<virtual-mta mta1>\n  smtp-source-host 1.2.3.4 mta1.example.com\n  <domain *>\n    retry-after 10m\n  </domain>\n</virtual-mta>\nrelay-address /@foo (bar)?\\.com$/\n', 'main.conf');
  assert.deepEqual(names(nodes), ['smtp-listener', 'virtual-mta', 'relay-address']);
  const vmta = nodes[1]!;
  assert.deepEqual([vmta.args, vmta.line, vmta.file], [['mta1'], 2, 'main.conf']);
  assert.deepEqual(vmta.children?.[0]?.args, ['1.2.3.4', 'mta1.example.com']);
  assert.equal(vmta.children?.[1]?.children?.[0]?.value, '10m');
  assert.equal(vmta.children?.[1]?.children?.[0]?.line, 5);
  assert.equal(nodes[2]!.value, '/@foo (bar)?\\.com$/', 'a value with spaces is kept whole');
});

test('a # starting a word begins a comment at any position; a # inside a word does not', () => {
  const cases: [string, string][] = [
    ['# whole line', ''],
    ['   # indented', ''],
    ['retry-after 10m # trailing', '10m'],
    ['retry-after 10m\t# after a tab', '10m'],
    ['relay-address /a#b@x\\.com/', '/a#b@x\\.com/'],
  ];
  for (const [line, value] of cases) {
    const nodes = parsePowerMtaConfig(line, 'c.conf');
    if (value === '') assert.equal(nodes.length, 0, line);
    else assert.equal(nodes[0]?.value, value, line);
  }
});

test('directive and block names are case-insensitive, as PowerMTA reads them', () => {
  for (const spelling of ['virtual-mta', 'Virtual-MTA', 'VIRTUAL-MTA']) {
    const nodes = parsePowerMtaConfig(`<${spelling} a>\nRetry-After 1m\n</${spelling.toLowerCase()}>`, 'c.conf');
    assert.equal(nodes[0]?.name, 'virtual-mta');
    assert.equal(nodes[0]?.children?.[0]?.name, 'retry-after');
  }
});

test('every malformed block shape is refused with file, line and an excerpt', () => {
  const cases: [string, RegExp][] = [
    ['<domain *>\nretry-after 1m', /c\.conf:1: <domain> is never closed/],
    ['</domain>', /c\.conf:1: <\/domain> closes no open block/],
    ['<virtual-mta a>\n<domain *>\n</virtual-mta>', /c\.conf:3: <\/virtual-mta> closes <domain> opened at line 2/],
    ['<domain *', /c\.conf:1: a block opens as <name argument>/],
    ['smtp-listener: 10.0.0.1:25', /c\.conf:1: a directive is a name followed by its value/],
    ['include', /c\.conf:1: include needs a file name/],
  ];
  for (const [text, message] of cases) {
    assert.throws(() => parsePowerMtaConfig(text, 'c.conf'), (error: unknown) => error instanceof PmtaSyntaxError && message.test(error.message) && /\n {2}\d+ \| /.test(error.message), text);
  }
});

test('includes resolve against the including file, expand wildcards in name order, and nest', async () => {
  await mkdir(path.join(dir, 'inc', 'sub'), { recursive: true });
  await writeFile(path.join(dir, 'main.conf'), 'host-name a\ninclude inc/*.conf\nhost-name z\n');
  await writeFile(path.join(dir, 'inc', '20-b.conf'), 'relay-domain b.test\n');
  await writeFile(path.join(dir, 'inc', '10-a.conf'), 'relay-domain a.test\ninclude sub/x.conf\n');
  await writeFile(path.join(dir, 'inc', 'skip.txt'), 'relay-domain never.test\n');
  await writeFile(path.join(dir, 'inc', 'sub', 'x.conf'), '<domain x.test>\nretry-after 1m\n</domain>\n');
  const nodes = readPowerMtaConfig(path.join(dir, 'main.conf'));
  assert.deepEqual(nodes.map((node) => `${node.name} ${node.value}`), ['host-name a', 'relay-domain a.test', 'domain x.test', 'relay-domain b.test', 'host-name z']);
  assert.equal(nodes[2]!.file, path.join(dir, 'inc', 'sub', 'x.conf'));
});

test('an include loop, a missing file and an unlistable folder are errors naming the include', async () => {
  await writeFile(path.join(dir, 'loop-a.conf'), 'include loop-b.conf\n');
  await writeFile(path.join(dir, 'loop-b.conf'), 'include loop-a.conf\n');
  assert.throws(() => readPowerMtaConfig(path.join(dir, 'loop-a.conf')), /include loop: .*loop-a\.conf -> .*loop-b\.conf -> .*loop-a\.conf/);
  await writeFile(path.join(dir, 'missing.conf'), 'include nowhere.conf\n');
  assert.throws(() => readPowerMtaConfig(path.join(dir, 'missing.conf')), /cannot read .*nowhere\.conf: ENOENT/);
  await writeFile(path.join(dir, 'nofolder.conf'), 'include nofolder/*.conf\n');
  assert.throws(() => readPowerMtaConfig(path.join(dir, 'nofolder.conf')), /nofolder\.conf:1: cannot list .*nofolder/);
});
