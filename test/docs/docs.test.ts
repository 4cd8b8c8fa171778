// Every command in the docs pages is run or checked. docs/install.md and docs/monitoring.md
// have their own tests (test/chart/install-doc.test.ts, test/chart/monitoring-doc.test.ts); this
// covers the other pages. Commands that can run here are run and must succeed: `vmta` (queue
// actions against a running relay process with a queued message, an import of a PowerMTA config), `helm template`, `promtool`,
// `openssl` (key generation, in a scratch directory).
// `kubectl` commands need a cluster, so they are checked instead: verb, resource types, object
// names (from examples/ and its golden render), labels, condition types, field selectors and
// every `kubectl explain` path against the generated CRDs. The test output says which was which.
// The PowerMTA table of docs/concepts.md must name only fields the CRDs have.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { copyFile, writeFile } from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { parse as parseYaml, parseAllDocuments } from 'yaml';
import { CHART_DIR, helm, REPO_ROOT } from '../chart/helm.ts';
import { codeBlocks, tableAfter } from '../chart/markdown.ts';
import { promtool } from '../chart/prometheus.ts';
import { freePort, loopbackRelayConfig, startRelayProcess, temporaryDirectory, writeRelayConfig, type RelayProcess } from '../fixtures/relay-process.ts';
import { RawSmtpClient } from '../fixtures/smtp-clients.ts';

const DOCS_DIR = path.join(REPO_ROOT, 'docs');
const PAGES_WITH_OWN_TEST = new Set(['install.md', 'monitoring.md']);
const pages = readdirSync(DOCS_DIR).filter((name) => name.endsWith('.md') && !PAGES_WITH_OWN_TEST.has(name)).sort();

/** Shell words of one command line: whitespace-separated, single and double quotes grouping. */
function shellWords(line: string): string[] {
  const words: string[] = [];
  for (const match of line.matchAll(/'([^']*)'|"([^"]*)"|(\S+)/g)) words.push(match[1] ?? match[2] ?? match[3]!);
  return words;
}

function commandsOf(markdown: string): string[][] {
  return codeBlocks(markdown)
    .filter((block) => block.language === 'sh')
    .flatMap((block) => block.body.replace(/\\\n\s*/g, ' ').split('\n'))
    .map((line) => line.trim())
    .filter((line) => line !== '' && !line.startsWith('#'))
    .map(shellWords);
}

/** `npm run bench... -- --flag value ...`: the script is package.json's and each flag is one its file parses. */
function checkBenchCommand(args: string[]): string {
  const scripts = (JSON.parse(readFileSync(path.join(REPO_ROOT, 'package.json'), 'utf8')) as { scripts: Record<string, string> }).scripts;
  const script = scripts[args[1]!];
  assert.ok(script, `npm run ${args[1]}: no such script in package.json`);
  const source = readFileSync(path.join(REPO_ROOT, script.replace(/^node /, '')), 'utf8');
  const flags = args.slice(2).filter((word) => word.startsWith('--') && word !== '--').map((word) => word.slice(2));
  // An option key as parseArgs takes it: bare, or quoted when it has a hyphen.
  for (const flag of flags) assert.match(source, new RegExp(`(?:\\b|['"])${flag}['"]?: \\{ type:`), `npm run ${args[1]}: ${script} takes no --${flag}`);
  return `${script} takes ${flags.map((flag) => `--${flag}`).join(' ') || 'no flags'}`;
}

// ---- what kubectl commands may name --------------------------------------------------------

interface JsonSchema {
  type?: string;
  properties?: Record<string, JsonSchema>;
  items?: JsonSchema;
  enum?: string[];
}
interface Crd {
  spec: { names: { kind: string; plural: string; singular: string; shortNames?: string[] }; versions: Array<{ schema: { openAPIV3Schema: JsonSchema } }> };
}
const crds = readdirSync(path.join(REPO_ROOT, 'crds')).map((file) => parseYaml(readFileSync(path.join(REPO_ROOT, 'crds', file), 'utf8')) as Crd);
/** Every name kubectl accepts for a CRD (plural, singular, short names, kind) -> the CRD. */
const crdByName = new Map<string, Crd>();
for (const crd of crds) {
  const names = crd.spec.names;
  for (const name of [names.plural, names.singular, names.kind.toLowerCase(), ...(names.shortNames ?? [])]) crdByName.set(name, crd);
}
const crdByKind = new Map(crds.map((crd) => [crd.spec.names.kind, crd]));
const CORE_TYPES = new Set(['pod', 'pods', 'service', 'services', 'svc', 'event', 'events', 'secret', 'secrets', 'configmap', 'configmaps']);

/** Objects of examples/ and of their golden render: the names a kubectl command may use. */
const exampleObjects = readdirSync(path.join(REPO_ROOT, 'examples'))
  .filter((file) => file.endsWith('.yaml'))
  .flatMap((file) => parseAllDocuments(readFileSync(path.join(REPO_ROOT, 'examples', file), 'utf8')).map((doc) => doc.toJS() as { kind: string; metadata: { name: string } } | null))
  .filter((object) => object !== null);
const goldenObjects = readdirSync(path.join(REPO_ROOT, 'test', 'fixtures', 'golden')).flatMap((file) =>
  parseAllDocuments(readFileSync(path.join(REPO_ROOT, 'test', 'fixtures', 'golden', file), 'utf8')).map(
    (doc) => doc.toJS() as { kind: string; metadata: { name: string; labels?: Record<string, string> }; spec?: { replicas?: number; template?: { metadata?: { labels?: Record<string, string> }; spec?: { containers?: Array<{ ports?: Array<{ containerPort: number }> }> } } } },
  ),
);
/** VirtualMTA names of the example pools: the only ones a page's `--vmta` may name. */
const exampleVirtualMtas = exampleObjects
  .filter((object) => object.kind === 'VirtualMtaPool')
  .flatMap((object) => ((object as { spec?: { virtualMtas?: Array<{ name: string }> } }).spec?.virtualMtas ?? []).map((vmta) => vmta.name));
const relayWorkloads = goldenObjects.filter((object) => object.kind === 'StatefulSet' || object.kind === 'Deployment');
const podNames = new Set(relayWorkloads.flatMap((workload) => Array.from({ length: workload.spec?.replicas ?? 1 }, (_, index) => `${workload.metadata.name}-${index}`)));
const podPorts = new Set(relayWorkloads.flatMap((workload) => (workload.spec?.template?.spec?.containers ?? []).flatMap((container) => (container.ports ?? []).map((port) => port.containerPort))));
const labels = new Set(goldenObjects.flatMap((object) => Object.entries({ ...object.metadata.labels, ...object.spec?.template?.metadata?.labels }).map(([key, value]) => `${key}=${value}`)));
/** Condition types the operator writes (`type: 'Ready'` in operator/controller/). */
const conditionTypes = new Set(
  readdirSync(path.join(REPO_ROOT, 'operator', 'controller')).flatMap((file) => [...readFileSync(path.join(REPO_ROOT, 'operator', 'controller', file), 'utf8').matchAll(/type: '([A-Z]\w+)'/g)].map((match) => match[1]!)),
);

function schemaOf(kind: string): JsonSchema {
  const crd = crdByKind.get(kind);
  assert.ok(crd, `${kind} is a CRD kind`);
  return crd.spec.versions[0]!.schema.openAPIV3Schema;
}

/** Walks a dotted field path (`spec.virtualMtas[].sourceAddress`, arrays implicit or `[]`) through a schema. */
function resolveField(schema: JsonSchema, fieldPath: string): JsonSchema | undefined {
  let node: JsonSchema | undefined = schema;
  for (const part of fieldPath.split('.').filter(Boolean)) {
    const name = part.replace(/\[\]$/, '');
    while (node?.type === 'array') node = node.items;
    node = node?.properties?.[name];
    if (!node) return undefined;
  }
  return node;
}

/** Checks a kubectl command without a cluster; returns what was checked. */
function checkKubectl(words: string[]): string {
  const [, verb, ...rest] = words;
  const flag = (name: string) => {
    const inline = rest.find((word) => word.startsWith(`${name}=`));
    if (inline) return inline.slice(name.length + 1);
    const index = rest.indexOf(name);
    return index >= 0 ? rest[index + 1] : undefined;
  };
  const positional = rest.filter((word, index) => !word.startsWith('-') && !(index > 0 && /^-[a-z]$|^--(field-selector|timeout|tail|for|selector)$/.test(rest[index - 1]!)));
  const checkType = (type: string) => assert.ok(crdByName.has(type) || CORE_TYPES.has(type), `${words.join(' ')}: "${type}" is a resource type`);
  const checkObject = (type: string, name: string) => {
    checkType(type);
    const crd = crdByName.get(type);
    if (crd) assert.ok(exampleObjects.some((object) => object.kind === crd.spec.names.kind && object.metadata.name === name), `${words.join(' ')}: ${crd.spec.names.kind} "${name}" is in examples/`);
    else if (type.startsWith('pod')) assert.ok(podNames.has(name), `${words.join(' ')}: pod "${name}" is a relay pod of the golden render (${[...podNames].join(', ')})`);
  };
  switch (verb) {
    case 'explain': {
      const [type, ...fieldPath] = positional[0]!.split('.');
      const crd = crdByName.get(type!);
      assert.ok(crd, `${words.join(' ')}: "${type}" is a vmta.dev resource`);
      assert.ok(resolveField(crd.spec.versions[0]!.schema.openAPIV3Schema, fieldPath.join('.')), `${words.join(' ')}: ${fieldPath.join('.')} is a field of ${crd.spec.names.kind}`);
      return `field ${crd.spec.names.kind}.${fieldPath.join('.')} exists`;
    }
    case 'get':
    case 'describe': {
      const [types, name] = positional;
      for (const type of types!.split(',')) checkType(type);
      if (name) checkObject(types!, name);
      const selector = flag('-l') ?? flag('--selector');
      if (selector) assert.ok(labels.has(selector), `${words.join(' ')}: label ${selector} is on rendered objects`);
      const fieldSelector = flag('--field-selector');
      if (fieldSelector) {
        const fields = Object.fromEntries(fieldSelector.split(',').map((pair) => pair.split('=') as [string, string]));
        const kind = fields['involvedObject.kind'];
        assert.ok(kind && crdByKind.has(kind), `${words.join(' ')}: involvedObject.kind ${kind} is a vmta.dev kind`);
        if (fields['involvedObject.name']) assert.ok(exampleObjects.some((object) => object.kind === kind && object.metadata.name === fields['involvedObject.name']), `${words.join(' ')}: ${kind} ${fields['involvedObject.name']} is in examples/`);
      }
      return `resource types${name ? ', object name' : ''}${selector ? ', label' : ''}${fieldSelector ? ', field selector' : ''} exist`;
    }
    case 'wait': {
      const [type, name] = positional[0]!.split('/') as [string, string];
      checkObject(type, name);
      const condition = /^condition=(\w+)$/.exec(flag('--for') ?? '')?.[1];
      assert.ok(condition && conditionTypes.has(condition), `${words.join(' ')}: condition ${condition} is one the operator writes (${[...conditionTypes].join(', ')})`);
      return `object and condition ${condition} exist`;
    }
    case 'port-forward': {
      const [type, name] = positional[0]!.split('/') as [string, string];
      checkObject(type, name);
      const remote = Number(positional[1]!.split(':').at(-1));
      assert.ok(podPorts.has(remote), `${words.join(' ')}: the relay pods have container port ${remote}`);
      return `pod and port ${remote} exist`;
    }
    case 'logs': {
      const selector = flag('-l');
      assert.ok(selector && labels.has(selector), `${words.join(' ')}: label ${selector} is on relay pods`);
      return 'label exists';
    }
    default:
      assert.fail(`${words.join(' ')}: no check for kubectl ${verb}`);
  }
}

// ---- the page commands ---------------------------------------------------------------------

describe('commands in docs/', { timeout: 300_000 }, () => {
  let relay: RelayProcess | undefined;
  let relayDir: { path: string; remove: () => Promise<void> } | undefined;
  const TOKEN = 'docs-test-admin-token';

  before(async () => {
    // A relay with the admin token in ./admin-token and its read-only token in ./read-token (the files the pages pass to --token-file)
    // and one message parked for example.org, so `vmta queue` has a queue to act on.
    relayDir = await temporaryDirectory('vmta-docs-');
    const [port, adminPort] = [await freePort(), await freePort()];
    await writeFile(path.join(relayDir.path, 'admin-token'), `${TOKEN}\n`);
    await writeFile(path.join(relayDir.path, 'read-token'), 'docs-test-read-token\n');
    // docs/powermta-import.md imports ./pmta.conf: the source article's configuration.
    await copyFile(path.join(REPO_ROOT, '..', 'shared', 'powermta-seed.conf'), path.join(relayDir.path, 'pmta.conf'));
    // Its VirtualMTAs are named as in examples/pool.yaml, so `--vmta` values of the pages must be those.
    const base = loopbackRelayConfig(port, adminPort, { admin: { address: '127.0.0.1', port: adminPort, tokenFile: 'admin-token', readTokenFile: 'read-token' } });
    await writeRelayConfig(relayDir.path, { ...base, pool: { ...base.pool, virtualMtas: exampleVirtualMtas.map((name) => ({ name, hostname: `${name}.relay.test` })) } });
    relay = await startRelayProcess({ configDir: relayDir.path, adminPort });
    const client = await RawSmtpClient.connect(port);
    try {
      await client.read();
      for (const command of ['EHLO docs.test', 'MAIL FROM:<app@example.com>', 'RCPT TO:<user@example.org>']) assert.equal((await client.command(command)).code, 250, command);
      assert.equal((await client.command('DATA')).code, 354);
      assert.equal((await client.command('Subject: docs\r\n\r\nhello\r\n.')).code, 250);
    } finally {
      client.close();
    }
  });

  after(async () => {
    await relay?.kill('SIGKILL');
    await relayDir?.remove();
  });

  test('the pages show commands', () => {
    assert.ok(pages.length >= 4, pages.join(', '));
    for (const page of pages) assert.ok(commandsOf(readFileSync(path.join(DOCS_DIR, page), 'utf8')).length > 0, `${page} shows commands`);
  });

  for (const page of pages) {
    test(`every command of docs/${page} runs, or is checked when it needs a cluster`, async (t) => {
      for (const words of commandsOf(readFileSync(path.join(DOCS_DIR, page), 'utf8'))) {
        const line = words.join(' ');
        const [program, ...args] = words;
        if (program === 'vmta') {
          const vmtaFlag = args.indexOf('--vmta');
          if (vmtaFlag >= 0) assert.ok(exampleVirtualMtas.includes(args[vmtaFlag + 1]!), `${line}: --vmta names a VirtualMTA of examples/ (${exampleVirtualMtas.join(', ')})`);
          // `vmta queue` finds the relay as the page says (VMTA_ADMIN_URL; default 127.0.0.1:8025),
          // here pointed at the test relay; --token-file names ./admin-token in its directory.
          const result = spawnSync(process.execPath, [path.join(REPO_ROOT, 'cli', 'vmta.ts'), ...args], { cwd: relayDir!.path, encoding: 'utf8', env: { ...process.env, VMTA_ADMIN_URL: relay!.adminUrl }, timeout: 60_000 });
          assert.equal(result.status, 0, `${line}\n${result.stdout}${result.stderr}`);
          if (args[0] === 'queue' && args[1] === 'list' && !args.includes('--json')) assert.match(result.stdout, /example\.org/, `${line} lists the parked queue`);
          t.diagnostic(`ran: ${line}`);
        } else if (program === 'helm') {
          assert.equal(args[0], 'template', `${line}: only helm template runs without a cluster`);
          const result = helm(args.map((word) => (word === 'charts/vmta-operator' ? CHART_DIR : word)));
          assert.equal(result.status, 0, `${line}\n${result.stderr}`);
          t.diagnostic(`ran: ${line}`);
        } else if (program === 'openssl') {
          // Key generation (docs/dkim.md), in the scratch directory; the key must be what the page says it makes.
          const result = spawnSync('openssl', args, { cwd: relayDir!.path, encoding: 'utf8', timeout: 60_000 });
          assert.equal(result.status, 0, `${line}\n${result.stderr}`);
          const out = args[args.indexOf('-out') + 1];
          if (args[0] === 'genpkey' && out) assert.match(readFileSync(path.join(relayDir!.path, out), 'utf8'), /^-----BEGIN PRIVATE KEY-----/, `${line} writes a PEM key`);
          t.diagnostic(`ran: ${line}`);
        } else if (program === 'promtool') {
          const result = promtool(args);
          assert.equal(result.status, 0, `${line}\n${result.stdout}${result.stderr}`);
          t.diagnostic(`ran: ${line}`);
        } else if (program === 'kubectl') {
          t.diagnostic(`checked, not run (needs a cluster): ${line} — ${checkKubectl(words)}`);
        } else if (program === 'npm' && args[0] === 'run' && args[1]?.startsWith('bench')) {
          t.diagnostic(`checked, not run (a benchmark): ${line} — ${checkBenchCommand(args)}`);
        } else {
          assert.fail(`${page}: no runner or check for "${line}"`);
        }
      }
    });
  }

  test('after the pause and resume of docs/operations.md no queue of the relay is left paused', async () => {
    // A new connection: the spawnSync calls above block the event loop past the admin server's
    // keep-alive timeout, so fetch could reuse a pooled socket the server has already closed.
    const answer = await new Promise<unknown>((resolve, reject) => {
      http.get(`${relay!.adminUrl}/api/v1/queues`, { agent: false }, (response) => {
        let body = '';
        response.setEncoding('utf8').on('data', (chunk: string) => (body += chunk)).on('end', () => resolve(JSON.parse(body)));
      }).on('error', reject);
    });
    assert.doesNotMatch(JSON.stringify(answer), /"paused":true/);
  });
});

describe('docs/concepts.md PowerMTA table', () => {
  const rows = tableAfter(readFileSync(path.join(DOCS_DIR, 'concepts.md'), 'utf8'), '## PowerMTA directives and their fields');

  test('the table maps the PowerMTA directives the brief names', () => {
    const directives = rows.map((row) => row[0]).join(' ');
    for (const directive of ['smtp-listener', '<source', '<smtp-user>', '<domain', '<virtual-mta', '<virtual-mta-pool>', 'smtp-source-host', 'retry-after', 'bounce-after', 'max-smtp-out', 'max-msg-per-connection', 'max-msg-rate', 'use-starttls', 'require-starttls', 'always-allow-relaying', 'relay-domain', 'backoff-', 'route']) {
      assert.ok(directives.includes(directive), `${directive} has a row`);
    }
  });

  test('every field the table names exists in the CRDs (and every value named is allowed)', () => {
    let checked = 0;
    for (const row of rows) {
      const cell = row[1]!;
      // tableAfter drops backticks; fields are the dotted words of the cell.
      let kind = 'VirtualMtaPool';
      for (const [, token, value] of cell.matchAll(/([A-Za-z]+(?:\[\])?(?:\.[A-Za-z]+(?:\[\])?)+|domains\[\]\.[A-Za-z.]+)(?::\s*(\w+))?/g)) {
        let fieldPath = token!;
        const first = fieldPath.split('.')[0]!;
        if (crdByKind.has(first)) {
          kind = first;
          fieldPath = fieldPath.slice(first.length + 1);
        }
        if (fieldPath.startsWith('domains[].')) fieldPath = `spec.domainDefaults[].${fieldPath.slice('domains[].'.length)}`;
        if (!fieldPath.startsWith('spec.')) fieldPath = `spec.${fieldPath}`;
        const field = resolveField(schemaOf(kind), fieldPath);
        assert.ok(field, `${row[0]}: ${kind}.${fieldPath} is a field`);
        if (value && field.enum) assert.ok(field.enum.includes(value), `${row[0]}: ${value} is a value of ${kind}.${fieldPath}`);
        checked += 1;
      }
    }
    assert.ok(checked >= 30, `checked ${checked} fields`);
  });
});
