// The operator judges the SMTP AUTH credentials of a pool before rendering it, with the relay's
// own rules: every way the users Secret of a policy can become unusable for an AUTH-required
// listener (a value emptied, two lines, a malformed hash, every user removed, only dotfile keys,
// no users at all, CRAM-MD5 only with hashed secrets) is a problem naming the object and field,
// and the pool renders nothing (it keeps what runs). Read-only admin tokens are mounted like the
// full one, and may not be the same Secret.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parse } from 'yaml';
import { userSecretVerdict } from '../../mta/config/user-secrets.ts';
import { hashPassword } from '../../mta/inbound/credentials.ts';
import { renderPool, type PoolRenderInput } from '../../operator/render/pool.ts';
import { exampleInput } from './example-resources.ts';

/** The example input with relay-users holding these values (key -> value). */
async function withUsers(values: Record<string, string>): Promise<PoolRenderInput> {
  const input = await exampleInput();
  input.secrets = input.secrets.map((secret) =>
    secret.name === 'relay-users' ? { name: secret.name, keys: Object.keys(values), userSecrets: Object.fromEntries(Object.entries(values).map(([key, value]) => [key, userSecretVerdict(Buffer.from(value), `key "${key}"`)])) } : secret,
  );
  // The example names its senders; a Secret without them is a SecretKeyMissing problem of its own.
  input.policies.find((policy) => policy.metadata.name === 'submission')!.spec.users!.senders = [];
  return input;
}

function problemsOf(input: PoolRenderInput): string[] {
  const result = renderPool(input);
  if (result.problems.length > 0) assert.deepEqual(result.objects, [], 'a pool with problems renders no objects');
  return result.problems.map((problem) => `${problem.reason}: ${problem.message}`);
}

const good = { alice: 'demo-password-alice', bob: hashPassword('demo-password-bob', { N: 1024 }) };

test('good users render without problems', async () => {
  assert.deepEqual(problemsOf(await withUsers(good)), []);
});

test('every unparseable user value is an InvalidCredentials problem of the RelayPolicy naming the key', async () => {
  const cases: [string, string, RegExp][] = [
    ['emptied', '', /key "alice" is empty/],
    ['a line break only', '\n', /key "alice" is empty/],
    ['two lines', 'first\nsecond\n', /key "alice": holds more than one line/],
    ['a malformed hash', '{SCRYPT}16384$8$1$x', /key "alice": expected \{SCRYPT\}N\$r\$p\$salt\$key/],
    ['scrypt parameters out of range', hashPassword('pw', { N: 1024 }).replace('{SCRYPT}1024$', '{SCRYPT}3$'), /key "alice": scrypt parameters N=3/],
  ];
  for (const [name, value, says] of cases) {
    const problems = problemsOf(await withUsers({ ...good, alice: value }));
    const found = problems.find((problem) => problem.startsWith('InvalidCredentials: RelayPolicy "submission" spec.users.secretName: Secret "relay-users" '));
    assert.ok(found, `${name}: ${JSON.stringify(problems)}`);
    assert.match(found, says, name);
  }
});

test('an AUTH-required listener without a usable user is a NoCredentials problem of each such listener', async () => {
  const listenersOf = (problems: string[]) => problems.filter((problem) => problem.startsWith('NoCredentials: ')).map((problem) => /SmtpListener "([^"]+)"/.exec(problem)?.[1]).sort();
  const requiring = ['alternate', 'submission', 'submissions'];

  const noUsers = problemsOf(await withUsers({}));
  assert.deepEqual(listenersOf(noUsers), requiring, JSON.stringify(noUsers));
  assert.ok(noUsers.some((problem) => /SmtpListener "submission" spec\.auth\.required: no client can authenticate: relay policy "submission" spec\.users\.secretName Secret "relay-users" holds no user/.test(problem)));

  assert.deepEqual(listenersOf(problemsOf(await withUsers({ '..data': 'x', '.hidden': 'pw' }))), requiring, 'dotfile keys are not users');

  const withoutUsers = await withUsers(good);
  delete withoutUsers.policies.find((policy) => policy.metadata.name === 'submission')!.spec.users;
  const unconfigured = problemsOf(withoutUsers);
  assert.deepEqual(listenersOf(unconfigured), requiring);
  assert.ok(unconfigured.some((problem) => /relay policy "submission" has no users \(spec\.users\.secretName\)/.test(problem)));

  const cramOnly = await withUsers(good);
  cramOnly.listeners.find((listener) => listener.metadata.name === 'submission')!.spec.auth = { required: true, mechanisms: ['CRAM-MD5'] };
  const cram = problemsOf(cramOnly);
  assert.deepEqual(listenersOf(cram), ['submission']);
  assert.ok(cram.some((problem) => /spec\.auth\.mechanisms offers only CRAM-MD5, which needs clear-text secrets, and 1 of the 2 users/.test(problem)));
  assert.deepEqual(problemsOf(await (async () => {
    const clear = await withUsers({ alice: 'a-pw', bob: 'b-pw' });
    clear.listeners.find((listener) => listener.metadata.name === 'submission')!.spec.auth = { required: true, mechanisms: ['CRAM-MD5'] };
    return clear;
  })()), [], 'CRAM-MD5 only is fine when every secret is clear');
});

test('a read-only admin token Secret is mounted and named in relay.yaml; the same Secret as the full token is a problem', async () => {
  const input = await withUsers(good);
  input.pool.spec.admin = { tokenSecretName: 'admin-full', readTokenSecretName: 'admin-read' };
  input.secrets.push({ name: 'admin-full', keys: ['token'] }, { name: 'admin-read', keys: ['token'] });
  const result = renderPool(input);
  assert.deepEqual(result.problems, []);
  const configMap = result.objects.find((object) => object.kind === 'ConfigMap') as unknown as { data: Record<string, string> };
  const relayYaml = parse(Object.values(configMap.data)[0]!) as { admin: { tokenFile: string; readTokenFile: string } };
  assert.deepEqual(relayYaml.admin, { port: 8025, tokenFile: '/etc/vmta/secrets/admin-full/token', readTokenFile: '/etc/vmta/secrets/admin-read/token' });
  const workload = result.objects.find((object) => object.kind === 'StatefulSet') as unknown as { spec: { template: { spec: { volumes: { secret?: { secretName: string } }[] } } } };
  assert.ok(workload.spec.template.spec.volumes.some((volume) => volume.secret?.secretName === 'admin-read'), 'the read token Secret is mounted');

  input.pool.spec.admin = { tokenSecretName: 'admin-full', readTokenSecretName: 'admin-full' };
  assert.ok(problemsOf(input).some((problem) => /^SameAdminTokens: VirtualMtaPool "outbound" spec\.admin\.readTokenSecretName/.test(problem)));
  input.pool.spec.admin = { readTokenSecretName: 'admin-missing' };
  assert.ok(problemsOf(input).some((problem) => /^SecretNotFound: VirtualMtaPool "outbound" spec\.admin\.readTokenSecretName: no Secret "admin-missing"/.test(problem)));
});
