// `vmta import powermta` on the configuration of the product's source article (shared/
// powermta-seed.conf) and on a broad one covering every directive the importer claims: the
// resources it writes, that they pass the cluster's own schemas and render without problems,
// that every directive read is accounted for in the report, that no notation of a broad range
// ever becomes an open relay, and the CLI's output and exit codes.
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { parseAllDocuments } from 'yaml';
import { parsePowerMtaConfig, readPowerMtaConfig, type PmtaNode } from '../../operator/import/powermta-config.ts';
import { importPowerMta, type ImportResult } from '../../operator/import/powermta-import.ts';
import { renderNamespace } from '../../operator/render/pool.ts';
import { loadResourceDir } from '../../operator/local/resource-files.ts';
import { REPO_ROOT } from '../fixtures/relay-process.ts';
import { run } from '../fixtures/smtp-clients.ts';

const SEED = path.join(REPO_ROOT, '..', 'shared', 'powermta-seed.conf');
const BROAD = path.join(REPO_ROOT, 'test', 'fixtures', 'powermta', 'broad.conf');

type Resource = { kind: string; metadata: { name: string }; spec: Record<string, any>; stringData?: Record<string, string> };
const byKind = (result: ImportResult, kind: string, name?: string): Resource => {
  const found = (result.resources as Resource[]).find((resource) => resource.kind === kind && (name === undefined || resource.metadata.name === name));
  assert.ok(found, `no ${kind} ${name ?? ''} in the import`);
  return found;
};

let dir: string;
before(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'vmta-pmta-import-'));
});
after(() => rm(dir, { recursive: true, force: true }));

test('the seed: mta1 requires STARTTLS and retries after 10m, mta2 sends without TLS and retries after 45m, over a pool-wide required TLS', () => {
  const result = importPowerMta(readPowerMtaConfig(SEED), { poolName: 'outbound' });
  const pool = byKind(result, 'VirtualMtaPool');
  const vmtas = Object.fromEntries((pool.spec.virtualMtas as Record<string, any>[]).map((vmta) => [vmta.name, vmta]));
  assert.deepEqual(vmtas.mta1, { name: 'mta1', sourceAddress: '1.2.3.4', hostname: 'mta1.yourserver.com', domains: [{ domain: '*', tlsPolicy: 'required', retryAfter: '10m' }] });
  assert.deepEqual(vmtas.mta2, { name: 'mta2', sourceAddress: '2.3.4.5', hostname: 'mta2.yourserver.com', domains: [{ domain: '*', tlsPolicy: 'none', retryAfter: '45m' }] });
  assert.deepEqual(vmtas.default, { name: 'default', sourceAddress: '192.168.0.10', hostname: 'mail10.yourserver.com' });
  assert.deepEqual(pool.spec.domainDefaults, [{ domain: '*', tlsPolicy: 'required' }]);
  const relay = byKind(result, 'RelayPolicy', 'outbound-relay');
  assert.deepEqual(relay.spec.relayDomains, ['some.domain']);
  assert.deepEqual(relay.spec.relayAddresses, ['bounce@bounce.yourdomain.com', '/.*(?:@foo(bar)?\\.com$).*/']);
  assert.deepEqual(relay.spec.alwaysAllowRelaying, ['10.0.5.20']);
  const submission = byKind(result, 'RelayPolicy', 'outbound-submission');
  assert.equal(submission.spec.requireTlsForAuth, true);
  assert.deepEqual(submission.spec.users, { secretName: 'outbound-users', defaultAllowedSenderDomains: ['*'] });
  assert.deepEqual(byKind(result, 'Secret', 'outbound-users').stringData, { foo: 'barbaz' });
  const listeners = (result.resources as Resource[]).filter((resource) => resource.kind === 'SmtpListener').map((listener) => [listener.metadata.name, listener.spec.role, listener.spec.relayPolicyRef.name]);
  assert.deepEqual(listeners, [['outbound-smtp-25', 'relay', 'outbound-relay'], ['outbound-smtp-587', 'submission', 'outbound-submission']]);
  assert.ok(result.report.warnings.some((warning) => /VirtualMTA mta1 gets no mail/.test(warning)), 'the report says nothing routes to mta1, as in the original');
});

function allNodes(nodes: PmtaNode[]): PmtaNode[] {
  return nodes.flatMap((node) => [node, ...allNodes(node.children ?? [])]);
}

for (const [label, file] of [['seed', SEED], ['broad', BROAD]] as const) {
  test(`${label}: every directive and block read has a report entry, and the resources render as the cluster would with no problem`, async () => {
    const nodes = readPowerMtaConfig(file);
    const result = importPowerMta(nodes, { poolName: 'outbound' });
    const reported = new Set(result.report.notes.map((note) => `${note.file}:${note.line}`));
    const silent = allNodes(nodes).filter((node) => !reported.has(`${node.file}:${node.line}`));
    assert.deepEqual(silent.map((node) => `${node.file}:${node.line} ${node.name}`), [], 'directives dropped without a word');
    const resourceDir = await mkdtemp(path.join(dir, `${label}-`));
    await writeFile(path.join(resourceDir, 'imported.yaml'), result.resources.map((resource) => JSON.stringify(resource)).join('\n---\n'));
    const loaded = await loadResourceDir(resourceDir);
    assert.deepEqual(loaded.errors, []);
    const rendered = renderNamespace({ pools: loaded.resources.pools, listeners: loaded.resources.listeners, policies: loaded.resources.policies, secrets: loaded.resources.secrets.map((secret) => ({ name: secret.name, keys: [...secret.data.keys()] })), image: 'local' });
    const problems = [...rendered.problems, ...[...rendered.pools.values()].flatMap((pool) => pool.problems)];
    assert.deepEqual(problems, []);
  });
}

test('broad: each claimed directive lands in its field', () => {
  const result = importPowerMta(readPowerMtaConfig(BROAD), { poolName: 'outbound' });
  const pool = byKind(result, 'VirtualMtaPool');
  const defaults = Object.fromEntries((pool.spec.domainDefaults as Record<string, any>[]).map((settings) => [settings.domain, settings]));
  assert.deepEqual(defaults['*'], { domain: '*', bounceAfter: '4d', maxSmtpOut: 20, maxMessagesPerConnection: 100 });
  assert.deepEqual(defaults['gmail.test'], { domain: 'gmail.test', maxSmtpOut: 5, maxMessageRate: '600/h', backoff: { replyPatterns: ['^421 .*try again later', '4\\.7\\.28'], maxMessageRate: '60/h', retryAfter: '30m', returnAfter: '1h' } });
  assert.deepEqual(defaults['smarthost.test'], { domain: 'smarthost.test', smtpHost: 'relay.smarthost.test:2525', maxMessageRate: '100/h' });
  const cold = (pool.spec.virtualMtas as Record<string, any>[]).find((vmta) => vmta.name === 'cold');
  assert.deepEqual(cold?.domains, [{ domain: '*', tlsPolicy: 'none', retryAfter: '45m', bounceAfter: '60h' }, { domain: 'strict.test', tlsPolicy: 'required' }]);
  assert.equal(pool.spec.hostname, 'relay.broad.test');
  const listeners = Object.fromEntries((result.resources as Resource[]).filter((resource) => resource.kind === 'SmtpListener').map((listener) => [listener.metadata.name, listener.spec]));
  assert.equal(listeners['outbound-smtp-465']?.role, 'submissions');
  assert.equal(listeners['outbound-smtp-2525']?.role, 'alternate');
  assert.deepEqual(listeners['outbound-smtp-587']?.auth, { mechanisms: ['CRAM-MD5', 'LOGIN', 'PLAIN'] });
  const submission = byKind(result, 'RelayPolicy', 'outbound-submission');
  assert.deepEqual(submission.spec.routing, { honorVirtualMtaHeader: true, defaultVirtualMta: 'cold', rules: [{ user: 'app', virtualMta: 'warm' }] });
  const refused = result.report.notes.filter((note) => note.coverage === 'refused').map((note) => note.directive);
  assert.ok(!refused.includes('mx-rollup yes'), 'mx-rollup is imported');
  assert.equal(pool.spec.mxRollup, true);
  assert.ok(refused.includes('always-allow-relaying yes'), 'the /1 source is refused');
  assert.deepEqual(byKind(result, 'RelayPolicy', 'outbound-relay').spec.alwaysAllowRelaying, ['10.20.0.0/16']);
});

test('no notation of a range wider than /8 or /16 with always-allow-relaying is ever imported, and nothing acknowledges an open relay', () => {
  const broad = ['0/0', '0.0.0.0/0', '0/1', '128/1', '10/7', '0.0.0.0/4', '::/0', '2001::/15', '::/1'];
  const narrow = ['10/8', '0/8', '10.1/16', '192.168.1.0/24', '10.0.5.20', '2001:db8::/32', '2001:db8::1'];
  for (const range of [...broad, ...narrow]) {
    const result = importPowerMta(parsePowerMtaConfig(`smtp-listener 0/0:25\n<source ${range}>\nalways-allow-relaying yes\n</source>\n<virtual-mta a>\nsmtp-source-host 127.0.0.2 a.test\n</virtual-mta>\n`, 'c.conf'), { poolName: 'p' });
    const policy = byKind(result, 'RelayPolicy', 'p-relay');
    assert.equal(policy.spec.acknowledgeOpenRelay, undefined, range);
    const allowed = (policy.spec.alwaysAllowRelaying as string[] | undefined) ?? [];
    if (broad.includes(range)) {
      assert.deepEqual(allowed, [], `${range} must not be imported`);
      assert.ok(result.report.notes.some((note) => note.coverage === 'refused' && /open relay/.test(note.message)), range);
    } else {
      assert.equal(allowed.length, 1, `${range} is narrow and imported`);
    }
  }
});

test('credentials in clear are refused: AUTH before TLS and plain AUTH without TLS keep requireTlsForAuth true', () => {
  const result = importPowerMta(parsePowerMtaConfig('smtp-listener 0/0:587\n<smtp-user u>\npassword p\n</smtp-user>\n<source 0/0>\nrequire-starttls-before-auth no\nallow-unencrypted-plain-auth yes\n</source>\n<virtual-mta a>\nsmtp-source-host 127.0.0.2 a.test\n</virtual-mta>\n', 'c.conf'), { poolName: 'p' });
  assert.equal(byKind(result, 'RelayPolicy', 'p-submission').spec.requireTlsForAuth, true);
  assert.equal(result.report.notes.filter((note) => note.coverage === 'refused' && /in clear/.test(note.message)).length, 2);
});

test('vmta import powermta writes YAML the resource loader reads, a report on stderr, and distinct exit codes for usage and unreadable files', async () => {
  const vmta = (...args: string[]) => run(process.execPath, [path.join(REPO_ROOT, 'cli/vmta.ts'), 'import', ...args]);
  const output = path.join(dir, 'seed.yaml');
  const ok = await vmta('powermta', SEED, '--pool', 'article', '-o', output);
  assert.equal(ok.code, 0, ok.stderr);
  assert.match(ok.stderr, /^import: \d+ directives and blocks: \d+ mapped, \d+ approximated, \d+ refused/);
  const documents = parseAllDocuments(await readFile(output, 'utf8')).map((document) => document.toJS() as Resource);
  assert.deepEqual(documents.map((document) => `${document.kind}/${document.metadata.name}`), ['SmtpListener/article-smtp-25', 'SmtpListener/article-smtp-587', 'RelayPolicy/article-relay', 'RelayPolicy/article-submission', 'VirtualMtaPool/article', 'Secret/article-tls', 'Secret/article-users']);
  const toStdout = await vmta('powermta', SEED);
  assert.match(toStdout.stdout, /kind: VirtualMtaPool/);
  for (const args of [[], ['sendmail', SEED], ['powermta'], ['powermta', SEED, '--pool', 'Bad_Name'], ['powermta', SEED, '--nope']]) {
    const refused = await vmta(...args);
    assert.equal(refused.code, 2, args.join(' '));
    assert.match(refused.stderr, /^vmta import: /, args.join(' '));
  }
  const broken = path.join(dir, 'broken.conf');
  await writeFile(broken, '<virtual-mta a>\n');
  const unreadable = await vmta('powermta', broken);
  assert.equal(unreadable.code, 2);
  assert.match(unreadable.stderr, /broken\.conf:1: <virtual-mta> is never closed/);
});

test('mx-rollup: yes in <domain *> maps to spec.mxRollup, in a narrower block or a virtual-mta it is approximated (pool-wide), no leaves it off; the relay config carries it', async () => {
  const cases: Array<[string, boolean | undefined, string]> = [
    ['<domain *>\nmx-rollup yes\n</domain>\n', true, 'mapped'],
    ['<domain gmail.test>\nmx-rollup yes\n</domain>\n', true, 'approximated'],
    ['<domain *>\nmx-rollup no\n</domain>\n', undefined, 'mapped'],
    ['', undefined, ''],
  ];
  for (const [block, expected, coverage] of cases) {
    for (const inside of [false, true]) {
      if (inside && block === '') continue;
      const text = inside ? `<virtual-mta a>\nsmtp-source-host 127.0.0.2 a.test\n${block}</virtual-mta>\n` : `${block}<virtual-mta a>\nsmtp-source-host 127.0.0.2 a.test\n</virtual-mta>\n`;
      const result = importPowerMta(parsePowerMtaConfig(`smtp-listener 0/0:25\nrelay-domain r.test\n${text}`, 'c.conf'), { poolName: 'p' });
      const pool = byKind(result, 'VirtualMtaPool');
      assert.equal(pool.spec.mxRollup, expected, text);
      const note = result.report.notes.find((entry) => entry.directive.startsWith('mx-rollup'));
      if (coverage) assert.equal(note?.coverage, inside && expected ? 'approximated' : coverage, text);
      const resourceDir = await mkdtemp(path.join(dir, 'rollup-'));
      await writeFile(path.join(resourceDir, 'imported.yaml'), result.resources.map((resource) => JSON.stringify(resource)).join('\n---\n'));
      const loaded = await loadResourceDir(resourceDir);
      const rendered = renderNamespace({ pools: loaded.resources.pools, listeners: loaded.resources.listeners, policies: loaded.resources.policies, secrets: [], image: 'local' });
      assert.equal(rendered.pools.get('p')?.runtime.config.delivery?.mxRollup, expected, `${text}: the relay config says the same`);
    }
  }
});

test('<acct-file> becomes spec.accounting (CSV, receipts from records, rotation, retention) and renders into relay.yaml; what has no equivalent is reported', async () => {
  const cases: [block: string, expected: Record<string, unknown>, refused: string[]][] = [
    ['<acct-file /var/log/pmta/acct.csv>\n</acct-file>\n', { format: 'csv' }, []],
    ['<acct-file /var/log/pmta/acct.csv>\nrecords d,b\nmove-interval 1h\n</acct-file>\n', { format: 'csv', receipts: false, rotate: { interval: '1h' } }, []],
    ['<acct-file /var/log/pmta/acct.csv>\nrecords r, d, b, t\nmax-size 50M\ndelete-after 8d\nrecord-fields d timeLogged,rcpt\nmove-to /archive\n</acct-file>\n', { format: 'csv', receipts: true, rotate: { size: '50Mi' }, retain: { maxAge: '8d' } }, ['move-to']],
    ['<acct-file /var/log/pmta/acct.csv>\nmax-size huge\n</acct-file>\n', { format: 'csv' }, ['max-size']],
  ];
  for (const [block, expected, refused] of cases) {
    const result = importPowerMta(parsePowerMtaConfig(`smtp-listener 0/0:25\nrelay-domain r.test\n${block}<virtual-mta a>\nsmtp-source-host 127.0.0.2 a.test\n</virtual-mta>\n`, 'c.conf'), { poolName: 'p' });
    assert.deepEqual(byKind(result, 'VirtualMtaPool').spec.accounting, expected, block);
    assert.deepEqual(result.report.notes.filter((note) => note.coverage === 'refused').map((note) => note.directive.split(' ')[0]), refused, block);
    assert.ok(result.report.notes.some((note) => note.directive.startsWith('<acct-file') && note.coverage === 'approximated'), 'the path change is reported');
    const resourceDir = await mkdtemp(path.join(dir, 'acct-'));
    await writeFile(path.join(resourceDir, 'imported.yaml'), result.resources.map((resource) => JSON.stringify(resource)).join('\n---\n'));
    const loaded = await loadResourceDir(resourceDir);
    const rendered = renderNamespace({ pools: loaded.resources.pools, listeners: loaded.resources.listeners, policies: loaded.resources.policies, secrets: [], image: 'local' });
    assert.equal(rendered.pools.get('p')?.runtime.config.delivery?.accounting?.csvFile, '/var/spool/vmta/accounting/acct.csv', block);
  }
});
