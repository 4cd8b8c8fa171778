// Local mode's side that needs no relay: reading YAML folders with errors that name file,
// object and field; the operator's config with only locations rewritten; Secrets as files.
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { parse } from 'yaml';
import { RuntimeConfig } from '../../mta/config/schema.ts';
import { senderWarnings } from '../../operator/local/local-banner.ts';
import { localizeConfig } from '../../operator/local/local-config.ts';
import { writeLocalSecrets } from '../../operator/local/local-secrets.ts';
import { loadResourceDir, secretSummaries } from '../../operator/local/resource-files.ts';
import { renderNamespace } from '../../operator/render/pool.ts';
import { REPOSITORY_ROOT } from '../../scripts/generated-files.ts';

async function withTemporaryDir(run: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'vmta-local-'));
  try {
    await run(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

test('examples/ loads without errors: one pool, four listeners, two policies, two Secrets', async () => {
  const loaded = await loadResourceDir(path.join(REPOSITORY_ROOT, 'examples'));
  assert.deepEqual(loaded.errors, []);
  const { pools, listeners, policies, secrets } = loaded.resources;
  assert.deepEqual([pools.length, listeners.length, policies.length, secrets.length], [1, 4, 2, 2]);
  assert.deepEqual(listeners.map((listener) => listener.spec.role).sort(), ['alternate', 'relay', 'submission', 'submissions']);
});

test('a bad resource is reported with its file, object and field, and a bad YAML document with its file', async () => {
  await withTemporaryDir(async (dir) => {
    await writeFile(
      path.join(dir, 'listeners.yaml'),
      [
        'apiVersion: vmta.dev/v1alpha1\nkind: SmtpListener\nmetadata: { name: good }\nspec: { role: relay, tls: { mode: none }, relayPolicyRef: { name: p }, poolRef: { name: pool } }',
        'apiVersion: vmta.dev/v1alpha1\nkind: SmtpListener\nmetadata: { name: plain-submission }\nspec: { role: submission, tls: { mode: none }, relayPolicyRef: { name: p }, poolRef: { name: pool } }',
      ].join('\n---\n'),
    );
    await writeFile(path.join(dir, 'policy.yaml'), 'apiVersion: vmta.dev/v1alpha1\nkind: RelayPolicy\nmetadata: { name: open }\nspec: { alwaysAllowRelaying: ["0.0.0.0/0"] }\n');
    await writeFile(path.join(dir, 'broken.yml'), 'kind: [unclosed\n');
    await writeFile(path.join(dir, 'notes.txt'), 'not a resource');
    const loaded = await loadResourceDir(dir);
    assert.equal(loaded.resources.listeners.length, 1);
    const listenerFile = path.join(dir, 'listeners.yaml');
    assert.ok(loaded.errors.some((error) => error.startsWith(`${listenerFile}: SmtpListener "plain-submission": spec.tls.mode:`)), loaded.errors.join('\n'));
    assert.ok(loaded.errors.some((error) => error.startsWith(`${path.join(dir, 'policy.yaml')}: RelayPolicy "open": spec.alwaysAllowRelaying[0]:`) && error.includes('open relay')), loaded.errors.join('\n'));
    assert.ok(loaded.errors.some((error) => error.startsWith(`${path.join(dir, 'broken.yml')} (document 1): not valid YAML`)), loaded.errors.join('\n'));
    assert.ok(!loaded.errors.some((error) => error.includes('notes.txt')));
  });
});

// Broken forms of the example pool file: each cut or edit is a syntax error of its own kind.
const brokenPoolEdits: Array<[string, (text: string) => string, string]> = [
  ['an unclosed flow map', (text) => text.replace('  spool:\n    mode: persistent', '  spool: { mode: persistent'), 'spool: { mode: persistent'],
  ['an unclosed flow sequence', (text) => text.replace('trackedDomains: [gmail.com, outlook.com, yahoo.com]', 'trackedDomains: [gmail.com, outlook.com'), 'trackedDomains: [gmail.com, outlook.com'],
  ['a key indented too far', (text) => text.replace('  replicas: 2\n', '  replicas: 2\n     selection: weighted\n'), 'replicas: 2'],
  ['a tab for indentation', (text) => text.replace('  replicas: 2\n', '\treplicas: 2\n'), 'replicas: 2'],
  ['an unterminated quoted string', (text) => text.replace('- domain: gmail.com', '- domain: "gmail.com'), 'gmail.com'],
];

for (const [kind, edit, excerpt] of brokenPoolEdits) {
  test(`a YAML syntax error (${kind}) names file, line and column and shows the lines around it`, async () => {
    await withTemporaryDir(async (dir) => {
      const original = await readFile(path.join(REPOSITORY_ROOT, 'examples/pool.yaml'), 'utf8');
      const broken = edit(original);
      assert.notEqual(broken, original, 'the edit applies to examples/pool.yaml');
      await writeFile(path.join(dir, 'pool.yaml'), broken);
      const loaded = await loadResourceDir(dir);
      const error = loaded.errors.find((candidate) => candidate.startsWith(`${path.join(dir, 'pool.yaml')} (document 1): not valid YAML`));
      assert.ok(error, loaded.errors.join('\n'));
      assert.match(error, /at line \d+, column \d+:\n/);
      const shownLines = error.split('\n').slice(1);
      assert.ok(shownLines.length >= 1 && shownLines.every((line) => line.startsWith('      | ')), error);
      assert.ok(shownLines.some((line) => line.includes(excerpt)) && shownLines.some((line) => /^      \| *\^/.test(line)), `the excerpt shows the broken line and a caret:\n${error}`);
    });
  });
}

test('users who may log in but send from no domain are warned about, one line each', async () => {
  const loaded = await loadResourceDir(path.join(REPOSITORY_ROOT, 'examples'));
  assert.deepEqual(senderWarnings(loaded.resources), [], 'the examples give every user a sender domain');
  const policy = loaded.resources.policies.find((candidate) => candidate.spec.users)!;
  const users = policy.spec.users!;
  for (const remaining of [users.senders!.slice(1), []]) {
    const edited = { ...loaded.resources, policies: [{ ...policy, spec: { ...policy.spec, users: { ...users, senders: remaining } } }] };
    const warned = senderWarnings(edited);
    const expected = users.senders!.filter((entry) => !remaining.includes(entry)).map((entry) => entry.user);
    assert.deepEqual(warned.map((line) => /^user "([^"]+)"/.exec(line)?.[1]), expected);
    for (const line of warned) assert.match(line, /Secret relay-users.*RelayPolicy "submission".*553.*spec\.users\.senders/);
    const withDefault = { ...edited, policies: [{ ...policy, spec: { ...policy.spec, users: { ...users, senders: remaining, defaultAllowedSenderDomains: ['example.com'] } } }] };
    assert.deepEqual(senderWarnings(withDefault), [], 'defaultAllowedSenderDomains covers users without an entry');
  }
});

test('the local config is the ConfigMap config with only paths, addresses and ports rewritten', async () => {
  const loaded = await loadResourceDir(path.join(REPOSITORY_ROOT, 'examples'));
  const { pools, listeners, policies, secrets } = loaded.resources;
  const render = renderNamespace({ pools, listeners, policies, secrets: secretSummaries(secrets), image: 'local' }).pools.get('outbound');
  assert.ok(render);
  const operatorConfig = parse(render.runtime.text);
  const { config, notes } = localizeConfig(render.runtime.config, { workDir: '/work', poolName: 'outbound', portShift: 100, poolIndex: 1, localAddresses: new Set(['127.0.0.1', '192.0.2.11']) });
  assert.ok(RuntimeConfig.safeParse(config).success);
  assert.deepEqual(config.listeners.map((listener) => [listener.name, listener.address, listener.port]), [
    ['alternate', '127.0.0.1', 2625],
    ['mx', '127.0.0.1', 10125],
    ['submission', '127.0.0.1', 10687],
    ['submissions', '127.0.0.1', 10565],
  ]);
  assert.equal(config.listeners[0]?.tls?.certFile, '/work/secrets/relay-tls/tls.crt');
  assert.equal(config.relayPolicies[1]?.users?.secretPath, '/work/secrets/relay-users');
  assert.equal(config.spool.path, '/work/pools/outbound/spool');
  assert.deepEqual(config.admin, { address: '127.0.0.1', port: 8025 + 1 + 100 });
  assert.deepEqual(config.pool.virtualMtas.map((vmta) => vmta.sourceAddress), [undefined, '192.0.2.11']);
  assert.equal(notes.length, 1);
  assert.match(notes[0] ?? '', /mta1.*192\.0\.2\.10/);
  // Local mode runs one process per pool, so the pool-wide share file is dropped.
  assert.equal(operatorConfig.fleet?.membershipFile, '/etc/vmta/fleet/membership.json');
  assert.equal(config.fleet, undefined);
  // Everything else is the operator's config unchanged.
  const strip = (value: Record<string, any>) => ({ ...value, listeners: undefined, relayPolicies: undefined, spool: undefined, admin: undefined, fleet: undefined, pool: { ...value.pool, virtualMtas: undefined } });
  assert.deepEqual(strip(structuredClone(config)), strip(operatorConfig));
  assert.deepEqual(config.relayPolicies.map((policy) => ({ ...policy, users: undefined })), operatorConfig.relayPolicies.map((policy: Record<string, unknown>) => ({ ...policy, users: undefined })));
});

test('Secrets become one file per key; an empty TLS Secret gets a self-signed certificate kept across runs', async () => {
  await withTemporaryDir(async (dir) => {
    const loaded = await loadResourceDir(path.join(REPOSITORY_ROOT, 'examples'));
    const notes = await writeLocalSecrets(dir, loaded.resources.secrets);
    assert.equal(notes.length, 1);
    assert.equal(await readFile(path.join(dir, 'secrets', 'relay-users', 'alice'), 'utf8'), 'demo-password-alice');
    assert.equal((await stat(path.join(dir, 'secrets', 'relay-users', 'alice'))).mode & 0o777, 0o600);
    const certificate = await readFile(path.join(dir, 'secrets', 'relay-tls', 'tls.crt'), 'utf8');
    assert.match(certificate, /BEGIN CERTIFICATE/);
    assert.match(await readFile(path.join(dir, 'secrets', 'relay-tls', 'tls.key'), 'utf8'), /PRIVATE KEY/);
    assert.deepEqual(await writeLocalSecrets(dir, loaded.resources.secrets), [], 'the certificate is made once');
    assert.equal(await readFile(path.join(dir, 'secrets', 'relay-tls', 'tls.crt'), 'utf8'), certificate);
    // A user removed from the Secret disappears from the directory.
    const users = loaded.resources.secrets.find((secret) => secret.name === 'relay-users');
    users?.data.delete('bob');
    await writeLocalSecrets(dir, loaded.resources.secrets);
    await assert.rejects(stat(path.join(dir, 'secrets', 'relay-users', 'bob')));
  });
});
