// Rendering a pool: golden files for examples/, the relay config it produces, hot changes
// that leave the pod template alone and cold changes that roll it, cross-object problems.
import assert from 'node:assert/strict';
import { parseRuntimeConfig } from '../../mta/config/parse.ts';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { test } from 'node:test';
import { parse } from 'yaml';
import { RuntimeConfig } from '../../mta/config/schema.ts';
import type { DesiredObject } from '../../operator/render/contract.ts';
import { CONFIG_HASH_ANNOTATION, POD_TEMPLATE_HASH_ANNOTATION } from '../../operator/render/layout.ts';
import { renderNamespace, renderPool } from '../../operator/render/pool.ts';
import { generatedFiles, REPOSITORY_ROOT } from '../../scripts/generated-files.ts';
import { copy, exampleInput } from './example-resources.ts';

type Json = Record<string, any>;

function find(objects: DesiredObject[], kind: string, name?: string): Json {
  const object = objects.find((candidate) => candidate.kind === kind && (name === undefined || candidate.metadata.name === name));
  assert.ok(object, `no ${kind} ${name ?? ''} rendered`);
  return object as Json;
}

function podSpec(objects: DesiredObject[]): Json {
  const workload = objects.find((object) => object.kind === 'StatefulSet' || object.kind === 'Deployment') as Json;
  return workload.spec.template.spec;
}

test('the golden renders of examples/ are up to date (run `npm run generate`)', async () => {
  const files = [...(await generatedFiles())].filter(([relative]) => relative.includes('golden'));
  assert.ok(files.length >= 1);
  for (const [relative, text] of files) {
    const committed = await readFile(path.join(REPOSITORY_ROOT, relative), 'utf8').catch(() => '(missing)');
    assert.equal(committed, text, `${relative} drifted; run npm run generate and review the diff`);
  }
});

test('the example pool renders a ConfigMap, StatefulSet, headless Service, a Service per listener and a PDB', async () => {
  const result = renderPool(await exampleInput());
  assert.deepEqual(result.problems, []);
  assert.deepEqual(
    result.objects.map((object) => `${object.kind}/${object.metadata.name}`),
    ['ConfigMap/outbound-config', 'StatefulSet/outbound', 'Service/outbound-headless', 'Service/outbound-alternate', 'Service/outbound-mx', 'Service/outbound-submission', 'Service/outbound-submissions', 'PodDisruptionBudget/outbound'],
  );
  for (const object of result.objects) assert.equal(object.metadata.namespace, 'mail');
});

test('relay.yaml is a valid runtime config whose hash is the configHash', async () => {
  const result = renderPool(await exampleInput());
  const configMap = find(result.objects, 'ConfigMap');
  const text: string = configMap.data['relay.yaml'];
  const parsed = RuntimeConfig.safeParse(parse(text));
  assert.ok(parsed.success, JSON.stringify(!parsed.success && parsed.error.issues));
  assert.equal(configMap.metadata.annotations[CONFIG_HASH_ANNOTATION], result.configHash);
  const { createHash } = await import('node:crypto');
  assert.equal(createHash('sha256').update(text).digest('hex'), result.configHash);
  const config = parsed.data;
  assert.deepEqual(config.listeners.map((listener) => [listener.name, listener.port, listener.tls.mode, listener.tls.required, listener.auth.required]), [
    ['alternate', 2525, 'starttls', true, true],
    ['mx', 10025, 'starttls', false, false],
    ['submission', 10587, 'starttls', true, true],
    ['submissions', 10465, 'implicit', true, true],
  ]);
  const [mta1, mta2] = config.pool.virtualMtas;
  assert.deepEqual([mta1?.domains[0]?.tlsPolicy, mta1?.domains[0]?.retryAfter], ['required', [600_000]]);
  assert.deepEqual([mta2?.domains[0]?.tlsPolicy, mta2?.domains[0]?.retryAfter], ['none', [2_700_000]]);
});

test('Secrets are mounted by reference and never copied into the ConfigMap', async () => {
  const result = renderPool(await exampleInput());
  const text = JSON.stringify(find(result.objects, 'ConfigMap'));
  assert.ok(!text.includes('demo-password'), 'a password leaked into the ConfigMap');
  assert.ok(text.includes('/etc/vmta/secrets/relay-users'));
  const spec = podSpec(result.objects);
  const secretVolumes = spec.volumes.filter((volume: Json) => volume.secret).map((volume: Json) => volume.secret.secretName);
  assert.deepEqual(secretVolumes, ['relay-tls', 'relay-users']);
  const mounts = spec.containers[0].volumeMounts.map((mount: Json) => mount.mountPath);
  assert.ok(mounts.includes('/etc/vmta/secrets/relay-tls') && mounts.includes('/etc/vmta/secrets/relay-users') && mounts.includes('/etc/vmta/config'));
  assert.ok(!spec.containers[0].volumeMounts.some((mount: Json) => mount.subPath), 'subPath mounts never update, which would stop hot reload');
});

test('pods run non-root with no capabilities, probes on the admin port, a preStop sleep and grace for shutdown', async () => {
  const result = renderPool(await exampleInput());
  const spec = podSpec(result.objects);
  const container = spec.containers[0];
  assert.equal(spec.securityContext.runAsNonRoot, true);
  assert.ok(spec.securityContext.runAsUser > 0);
  assert.deepEqual(container.securityContext.capabilities, { drop: ['ALL'] });
  assert.equal(container.securityContext.readOnlyRootFilesystem, true);
  assert.equal(container.securityContext.allowPrivilegeEscalation, false);
  for (const port of container.ports) assert.ok(port.containerPort >= 1024, `container port ${port.containerPort} would need NET_BIND_SERVICE`);
  assert.deepEqual(container.readinessProbe.httpGet, { path: '/readyz', port: 'admin' });
  assert.deepEqual(container.livenessProbe.httpGet, { path: '/healthz', port: 'admin' });
  assert.ok(container.ports.some((port: Json) => port.name === 'admin' && port.containerPort === 8025));
  assert.ok(container.lifecycle.preStop.sleep.seconds > 0);
  assert.ok(spec.terminationGracePeriodSeconds >= container.lifecycle.preStop.sleep.seconds + 30);
  assert.deepEqual(container.resources, { requests: { cpu: '100m', memory: '128Mi' }, limits: { memory: '512Mi' } });
});

test('the persistent spool is a StatefulSet whose claims are retained; ephemeral is a Deployment with an emptyDir', async () => {
  const input = await exampleInput();
  const statefulSet = find(renderPool(input).objects, 'StatefulSet');
  assert.deepEqual(statefulSet.spec.persistentVolumeClaimRetentionPolicy, { whenDeleted: 'Retain', whenScaled: 'Retain' });
  assert.equal(statefulSet.spec.volumeClaimTemplates[0].spec.resources.requests.storage, '10Gi');
  assert.equal(statefulSet.spec.serviceName, 'outbound-headless');

  const ephemeral = copy(input);
  ephemeral.pool.spec.spool = { ...ephemeral.pool.spec.spool, mode: 'ephemeral', size: '2Gi' };
  const objects = renderPool(ephemeral).objects;
  assert.ok(!objects.some((object) => object.kind === 'StatefulSet'));
  const deployment = find(objects, 'Deployment');
  assert.deepEqual(deployment.spec.template.spec.volumes.find((volume: Json) => volume.name === 'spool'), { name: 'spool', emptyDir: { sizeLimit: '2Gi' } });
  // Both kinds mount the fleet membership the pool's limits are shared by (docs/fleet-limits.md).
  for (const workload of [statefulSet, deployment]) {
    assert.deepEqual(workload.spec.template.spec.volumes.find((volume: Json) => volume.name === 'fleet'), { name: 'fleet', configMap: { name: 'outbound-fleet' } }, workload.kind);
    assert.deepEqual(workload.spec.template.spec.containers[0].volumeMounts.find((mount: Json) => mount.name === 'fleet'), { name: 'fleet', mountPath: '/etc/vmta/fleet', readOnly: true }, workload.kind);
  }
  assert.deepEqual(renderPool(ephemeral).runtime.config.fleet, { membershipFile: '/etc/vmta/fleet/membership.json' });
});

test('Services map the well-known port to the relay port; LoadBalancers default to externalTrafficPolicy Local', async () => {
  const input = await exampleInput();
  const result = renderPool(input);
  const mx = find(result.objects, 'Service', 'outbound-mx');
  assert.equal(mx.spec.type, 'LoadBalancer');
  assert.equal(mx.spec.externalTrafficPolicy, 'Local');
  assert.deepEqual(mx.spec.ports, [{ name: 'smtp', port: 25, targetPort: 'smtp-25', protocol: 'TCP' }]);
  const submission = find(result.objects, 'Service', 'outbound-submission');
  assert.equal(submission.spec.type, 'ClusterIP');
  assert.equal(submission.spec.externalTrafficPolicy, undefined);
  const container = podSpec(result.objects).containers[0];
  assert.ok(container.ports.some((port: Json) => port.name === 'smtp-25' && port.containerPort === 10025));
  assert.equal(find(result.objects, 'Service', 'outbound-headless').spec.clusterIP, 'None');
  assert.deepEqual(find(result.objects, 'PodDisruptionBudget').spec.maxUnavailable, 1);

  const cluster = copy(input);
  const listener = cluster.listeners.find((candidate) => candidate.metadata.name === 'mx');
  assert.ok(listener?.spec.service);
  listener.spec.service.externalTrafficPolicy = 'Cluster';
  assert.equal(find(renderPool(cluster).objects, 'Service', 'outbound-mx').spec.externalTrafficPolicy, 'Cluster');
});

test('owner references are rendered when the pool has a uid', async () => {
  const input = await exampleInput();
  assert.equal(renderPool(input).objects[0]?.metadata.ownerReferences, undefined);
  const owned = copy(input);
  owned.pool.metadata.uid = '0b7e0f52-4a3c-4d7e-9a65-6f2d1c7e9b10';
  for (const object of renderPool(owned).objects) {
    assert.deepEqual(object.metadata.ownerReferences, [{ apiVersion: 'vmta.dev/v1alpha1', kind: 'VirtualMtaPool', name: 'outbound', uid: owned.pool.metadata.uid, controller: true, blockOwnerDeletion: true }]);
  }
});

test('rendering is deterministic', async () => {
  const input = await exampleInput();
  const shuffled = copy(input);
  shuffled.listeners.reverse();
  shuffled.policies.reverse();
  assert.deepEqual(renderPool(shuffled), renderPool(input));
});

// Hot: the relay reloads it from the mounted ConfigMap. Cold: it needs a new pod.
const hotChanges: [string, (input: Awaited<ReturnType<typeof exampleInput>>) => void][] = [
  ['a per-domain retryAfter', (input) => void (input.pool.spec.virtualMtas[0]!.domains![0]!.retryAfter = '15m')],
  ['a pool-wide domain default', (input) => void (input.pool.spec.domainDefaults![0]!.bounceAfter = '5d')],
  ['a relay domain of a policy', (input) => void input.policies[0]!.spec.relayDomains!.push('bounces.example.net')],
  ['the routing of a policy', (input) => void (input.policies.find((policy) => policy.metadata.name === 'submission')!.spec.routing!.defaultVirtualMta = 'mta2')],
  ['the sender domains of a user', (input) => void input.policies.find((policy) => policy.metadata.name === 'submission')!.spec.users!.senders![0]!.allowedSenderDomains.push('example.net')],
  ['a listener limit', (input) => void (input.listeners[0]!.spec.limits = { maxRecipients: 10 })],
  ['the spool free-space floor', (input) => void (input.pool.spec.spool.minFree = '1Gi')],
  ['the spool reserve', (input) => void (input.pool.spec.spool.reserve = '16Mi')],
  ['the delivery connection idle time', (input) => void (input.pool.spec.connectionIdleTimeout = '30s')],
  ['the pod-wide delivery connection bound', (input) => void (input.pool.spec.maxDeliveryConnections = 200)],
];

for (const [what, change] of hotChanges) {
  test(`a hot change (${what}) changes configHash but not the pod template`, async () => {
    const before = renderPool(await exampleInput());
    const input = await exampleInput();
    change(input);
    const after = renderPool(input);
    assert.deepEqual(after.problems, []);
    assert.notEqual(after.configHash, before.configHash);
    assert.equal(after.podTemplateHash, before.podTemplateHash);
    assert.deepEqual(find(after.objects, 'StatefulSet'), find(before.objects, 'StatefulSet'));
  });
}

const coldChanges: [string, (input: Awaited<ReturnType<typeof exampleInput>>) => void, boolean][] = [
  ['a listener port', (input) => void (input.listeners.find((listener) => listener.metadata.name === 'alternate')!.spec.port = 2526), true],
  ['a source address', (input) => void (input.pool.spec.virtualMtas[0]!.sourceAddress = '192.0.2.20'), true],
  ['the image', (input) => void (input.pool.spec.image = 'registry.example/vmta:1.0.1'), false],
  ['the resources', (input) => void (input.pool.spec.pod!.resources = { limits: { memory: '1Gi' } }), false],
  ['the spool size', (input) => void (input.pool.spec.spool.size = '20Gi'), false],
  ['the egress mode', (input) => void (input.pool.spec.egress.mode = 'hostNetwork'), false],
  ['the session process count', (input) => void (input.pool.spec.sessionProcesses = 3), true],
  ['no session processes', (input) => void (input.pool.spec.sessionProcesses = 0), true],
];

test('connectionIdleTimeout, maxDeliveryConnections and sessionProcesses reach relay.yaml as the relay reads them; left out, the relay defaults apply', async () => {
  const input = await exampleInput();
  input.pool.spec.connectionIdleTimeout = '45s';
  input.pool.spec.sessionProcesses = 2;
  input.pool.spec.maxDeliveryConnections = 300;
  const set = parseRuntimeConfig(renderPool(input).runtime.text);
  assert.equal(set.delivery.connectionIdleTimeout, 45_000);
  assert.equal(set.delivery.maxConnections, 300);
  assert.equal(set.sessionProcesses, 2);
  const unset = parseRuntimeConfig(renderPool(await exampleInput()).runtime.text);
  assert.equal(unset.delivery.connectionIdleTimeout, 2_000);
  assert.equal(unset.delivery.maxConnections, 1000);
  assert.equal(unset.sessionProcesses, 'auto');
});

for (const [what, change, configChanges] of coldChanges) {
  test(`a cold change (${what}) changes podTemplateHash${configChanges ? ' and configHash' : ''}`, async () => {
    const before = renderPool(await exampleInput());
    const input = await exampleInput();
    change(input);
    const after = renderPool(input);
    assert.deepEqual(after.problems, []);
    assert.notEqual(after.podTemplateHash, before.podTemplateHash);
    assert.equal(after.configHash !== before.configHash, configChanges);
    const annotation = (result: typeof after) => find(result.objects, 'StatefulSet').spec.template.metadata.annotations[POD_TEMPLATE_HASH_ANNOTATION];
    assert.equal(annotation(after), after.podTemplateHash);
    assert.notEqual(annotation(after), annotation(before));
  });
}

test('hostNetwork egress puts the pods on the node network with cluster DNS', async () => {
  const input = await exampleInput();
  input.pool.spec.egress.mode = 'hostNetwork';
  const spec = podSpec(renderPool(input).objects);
  assert.equal(spec.hostNetwork, true);
  assert.equal(spec.dnsPolicy, 'ClusterFirstWithHostNet');
});

function assertProblem(result: { objects: unknown[]; problems: { reason: string; message: string; object: { kind: string; name: string } }[] }, reason: string, kind: string, name: string, field: string): void {
  assert.deepEqual(result.objects, [], 'a pool with problems renders no objects');
  const problem = result.problems.find((candidate) => candidate.reason === reason);
  assert.ok(problem, `expected ${reason}, got ${JSON.stringify(result.problems)}`);
  assert.deepEqual([problem.object.kind, problem.object.name], [kind, name]);
  assert.ok(problem.message.startsWith(`${kind} "${name}" ${field}`), problem.message);
}

test('a listener naming a missing RelayPolicy is a PolicyNotFound problem', async () => {
  const input = await exampleInput();
  input.listeners.find((listener) => listener.metadata.name === 'mx')!.spec.relayPolicyRef.name = 'corp';
  assertProblem(renderPool(input), 'PolicyNotFound', 'SmtpListener', 'mx', 'spec.relayPolicyRef.name: no RelayPolicy "corp"');
});

test('a listener naming a missing pool is a PoolNotFound problem and leaves healthy pools alone', async () => {
  const input = await exampleInput();
  input.listeners.find((listener) => listener.metadata.name === 'mx')!.spec.poolRef.name = 'elsewhere';
  const rendered = renderNamespace({ ...input, pools: [input.pool] });
  assert.equal(rendered.problems[0]?.reason, 'PoolNotFound');
  assert.match(rendered.problems[0]!.message, /^SmtpListener "mx" spec.poolRef.name: no VirtualMtaPool "elsewhere"/);
  assert.deepEqual(rendered.pools.get('outbound')?.problems, []);
  assert.ok((rendered.pools.get('outbound')?.objects.length ?? 0) > 0);
});

test('two listeners on one port in a pool are a PortConflict problem', async () => {
  const input = await exampleInput();
  input.listeners.find((listener) => listener.metadata.name === 'alternate')!.spec.port = 587;
  assertProblem(renderPool(input), 'PortConflict', 'SmtpListener', 'submission', 'spec.port: port 587 is already used by SmtpListener "alternate"');
});

test('a missing Secret or a missing key is a problem naming the field', async () => {
  const noSecret = await exampleInput();
  noSecret.secrets = noSecret.secrets.filter((secret) => secret.name !== 'relay-users');
  assertProblem(renderPool(noSecret), 'SecretNotFound', 'RelayPolicy', 'submission', 'spec.users.secretName: no Secret "relay-users"');

  const noKey = await exampleInput();
  noKey.secrets = noKey.secrets.map((secret) => (secret.name === 'relay-tls' ? { ...secret, keys: ['tls.crt'] } : secret));
  assertProblem(renderPool(noKey), 'SecretKeyMissing', 'SmtpListener', 'alternate', 'spec.tls.secretName: Secret "relay-tls" has no key "tls.key"');

  const noUser = await exampleInput();
  noUser.secrets = noUser.secrets.map((secret) => (secret.name === 'relay-users' ? { ...secret, keys: ['alice'] } : secret));
  assertProblem(renderPool(noUser), 'SecretKeyMissing', 'RelayPolicy', 'submission', 'spec.users.secretName: Secret "relay-users" has no key "bob"');
});

test('a routing rule naming a VirtualMTA the pool lacks is a problem', async () => {
  const input = await exampleInput();
  input.policies.find((policy) => policy.metadata.name === 'submission')!.spec.routing!.rules![0]!.virtualMta = 'mta9';
  assertProblem(renderPool(input), 'VirtualMtaNotFound', 'RelayPolicy', 'submission', 'spec.routing.rules[0].virtualMta: no VirtualMTA "mta9"');
});

test('an admin token Secret is mounted and named in relay.yaml, and a missing one is a problem', async () => {
  const input = await exampleInput();
  input.pool.spec.admin = { tokenSecretName: 'relay-admin' };
  assertProblem(renderPool(input), 'SecretNotFound', 'VirtualMtaPool', 'outbound', 'spec.admin.tokenSecretName: no Secret "relay-admin"');
  input.secrets.push({ name: 'relay-admin', keys: ['token'] });
  const result = renderPool(input);
  assert.deepEqual(result.problems, []);
  assert.equal(parse(find(result.objects, 'ConfigMap').data['relay.yaml']).admin.tokenFile, '/etc/vmta/secrets/relay-admin/token');
  assert.ok(podSpec(result.objects).volumes.some((volume: Json) => volume.secret?.secretName === 'relay-admin'));
});

test('a listener naming a RelayPolicy that fails validation renders nothing and is told the policy is invalid, not missing', async () => {
  const input = await exampleInput();
  const name = input.listeners[0]!.spec.relayPolicyRef.name;
  const result = renderPool({ ...input, policies: input.policies.filter((policy) => policy.metadata.name !== name), invalidPolicyNames: [name] });
  assert.deepEqual(result.objects, []);
  const problem = result.problems.find((candidate) => candidate.reason === 'PolicyInvalid');
  assert.ok(problem, JSON.stringify(result.problems));
  assert.match(problem.message, new RegExp(`spec.relayPolicyRef.name: RelayPolicy "${name}" is invalid`));
});
