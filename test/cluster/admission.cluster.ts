// The admission contract on a real API server (the chart installed, so the CRDs are there):
// 1. what CEL can say, the API server refuses itself, naming the field: canonical addresses and
//    ranges (no IPv4-mapped IPv6, leading zeros, host bits, zones), the open-relay width in
//    every notation, relayDomains "*", relayAddresses without a literal, ports over 65535, IP
//    literals such as 10.0.0.300; and accepts the good forms;
// 2. over the generated class of range notations, the API server and the operator's zod
//    schemas give the same verdict, so no range passes one and not the other;
// 3. what CEL cannot say (a regex that does not compile, a relay pattern that only the probe
//    finds open) is accepted by the API server, and the operator (running in the cluster) answers
//    with Ready=False and a Warning Event naming the field, and renders no ConfigMap.
// Uses kubectl, so it runs against any cluster KUBECONFIG names.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { stringify } from 'yaml';
import { parseVmtaResource } from '../../operator/api/parse.ts';
import { rangeNotations } from '../fixtures/range-notations.ts';
import { clusterEnv } from './support/env.ts';
import { createNamespace, deleteNamespace, kubectlResult as kubectl, waitFor } from './support/kubectl.ts';

clusterEnv();
const NAMESPACE = `vmta-admission-${process.pid}`;
const GROUP_VERSION = 'vmta.dev/v1alpha1';

type Resource = { apiVersion: string; kind: string; metadata: { name: string; namespace?: string }; spec: Record<string, unknown> };

/** Server-side dry-run creates of many objects in one kubectl call: the API server's message per object name, or undefined when it was admitted. */
async function admit(resources: Resource[]): Promise<Map<string, string | undefined>> {
  const documents = resources.map((resource) => stringify({ ...resource, metadata: { ...resource.metadata, namespace: NAMESPACE } })).join('---\n');
  const result = await kubectl(['create', '--dry-run=server', '-o', 'name', '-f', '-'], documents);
  const verdicts = new Map<string, string | undefined>();
  for (const line of result.stdout.split('\n')) {
    const name = line.split('/')[1];
    if (name) verdicts.set(name, undefined);
  }
  for (const line of result.stderr.split('\n')) {
    const match = /"([a-z0-9-]+)" is (?:invalid|forbidden): (.*)$/.exec(line);
    if (match) verdicts.set(match[1]!, match[2]!);
  }
  for (const resource of resources) assert.ok(verdicts.has(resource.metadata.name), `kubectl said nothing of ${resource.metadata.name}: ${result.stderr.slice(0, 2000)}`);
  return verdicts;
}

const policy = (name: string, spec: Record<string, unknown>): Resource => ({ apiVersion: GROUP_VERSION, kind: 'RelayPolicy', metadata: { name }, spec });
const listener = (name: string, spec: Record<string, unknown>): Resource => ({ apiVersion: GROUP_VERSION, kind: 'SmtpListener', metadata: { name }, spec: { role: 'relay', relayPolicyRef: { name: 'p' }, poolRef: { name: 'pool' }, tls: { mode: 'none' }, ...spec } });
const pool = (name: string, spec: Record<string, unknown>): Resource => ({ apiVersion: GROUP_VERSION, kind: 'VirtualMtaPool', metadata: { name }, spec: { virtualMtas: [{ name: 'mta1', hostname: 'mta1.example.com' }], ...spec } });

/** [resource, the field the API server's message must name, or null when it must be admitted]. */
const TABLE: Array<[Resource, string | null]> = [
  [policy('mapped-open', { alwaysAllowRelaying: ['::ffff:0:0/96'] }), 'spec.alwaysAllowRelaying[0]'],
  [policy('mapped-private', { alwaysAllowRelaying: ['::ffff:10.0.0.0/104'] }), 'spec.alwaysAllowRelaying[0]'],
  [policy('prefix-zeros', { alwaysAllowRelaying: ['0.0.0.0/00'] }), 'spec.alwaysAllowRelaying[0]'],
  [policy('octet-zeros', { alwaysAllowRelaying: ['010.0.0.0/8'] }), 'spec.alwaysAllowRelaying[0]'],
  [policy('host-bits', { alwaysAllowRelaying: ['10.0.0.1/8'] }), 'spec.alwaysAllowRelaying[0]'],
  [policy('upper-case', { alwaysAllowRelaying: ['2001:DB8::/32'] }), 'spec.alwaysAllowRelaying[0]'],
  [policy('open-v4', { alwaysAllowRelaying: ['10.0.0.0/8', '0.0.0.0/1'] }), 'spec.alwaysAllowRelaying'],
  [policy('open-v6-holding-v4', { alwaysAllowRelaying: ['::/80'] }), 'spec.alwaysAllowRelaying'],
  [policy('open-v4-acknowledged', { alwaysAllowRelaying: ['0.0.0.0/0'], acknowledgeOpenRelay: true }), null],
  [policy('private-networks', { alwaysAllowRelaying: ['10.0.0.0/8', '192.0.2.7', '2001:db8::/32', 'fd00::/16'] }), null],
  [policy('every-domain', { relayDomains: ['example.com', '*'] }), 'spec.relayDomains'],
  [policy('a-tld', { relayDomains: ['*.com'] }), 'spec.relayDomains'],
  [policy('every-domain-acknowledged', { relayDomains: ['*'], acknowledgeOpenRelay: true }), null],
  [policy('every-address', { relayAddresses: ['/.*/'] }), 'spec.relayAddresses'],
  [policy('every-address-2', { relayAddresses: ['/.+@.+/i'] }), 'spec.relayAddresses'],
  [policy('one-address-pattern', { relayDomains: ['*.example.com'], relayAddresses: ['/fbl-[0-9]+@feedback\\.example\\.com/i'] }), null],
  [listener('proxy-mapped', { proxyProtocol: { enabled: true, trustedCidrs: ['::ffff:0:0/96'] } }), 'spec.proxyProtocol.trustedCidrs[0]'],
  [listener('proxy-zeros', { proxyProtocol: { enabled: true, trustedCidrs: ['0.0.0.0/00'] } }), 'spec.proxyProtocol.trustedCidrs[0]'],
  [listener('proxy-open', { proxyProtocol: { enabled: true, trustedCidrs: ['0.0.0.0/0'] } }), 'spec.proxyProtocol.trustedCidrs'],
  [listener('proxy-lb', { proxyProtocol: { enabled: true, trustedCidrs: ['10.0.0.0/8'] } }), null],
  [listener('address-zeros', { address: '010.0.0.1' }), 'spec.address'],
  [listener('address-mapped', { address: '::ffff:10.0.0.1' }), 'spec.address'],
  [listener('port-too-high', { port: 99999 }), 'spec.port'],
  [listener('lb-ranges-zone', { service: { type: 'LoadBalancer', loadBalancerSourceRanges: ['fe80::/10', 'fe80::1%eth0'] } }), 'spec.service.loadBalancerSourceRanges[1]'],
  [pool('resolver-octet', { resolvers: ['10.0.0.300'] }), 'spec.resolvers[0]'],
  [pool('resolver-port', { resolvers: ['10.0.0.10:99999'] }), 'spec.resolvers[0]'],
  [pool('resolver-mapped', { resolvers: ['::ffff:10.0.0.10'] }), 'spec.resolvers[0]'],
  [pool('resolvers-good', { resolvers: ['10.0.0.10', '10.0.0.11:5353', '2001:db8::53', '[2001:db8::53]:5353'] }), null],
  [pool('smarthost-port', { domainDefaults: [{ domain: '*', smtpHost: 'smarthost.example.net:99999' }] }), 'spec.domainDefaults[0].smtpHost'],
  [pool('smarthost-octet', { domainDefaults: [{ domain: '*', smtpHost: '10.0.0.300:25' }] }), 'spec.domainDefaults[0].smtpHost'],
  [pool('smarthost-good', { domainDefaults: [{ domain: '*', smtpHost: 'smarthost.example.net:587' }, { domain: 'b.example', smtpHost: '192.0.2.25:25' }, { domain: 'c.example', smtpHost: '[2001:db8::25]:25' }] }), null],
  [pool('smarthost-two-routes', { domainDefaults: [{ domain: '*', smtpHost: 'mx.example.net:25', smarthost: { hosts: ['smtp.esp.example'] } }] }), 'spec.domainDefaults[0].smarthost'],
  [pool('smarthost-plain-port', { domainDefaults: [{ domain: '*', smarthost: { hosts: ['smtp.esp.example'], ports: [{ port: 25, tls: 'none' }] } }] }), 'spec.domainDefaults[0].smarthost.ports[0].tls'],
  [pool('smarthost-login', { domainDefaults: [{ domain: '*', smarthost: { hosts: ['smtp.esp.example'], auth: { secretName: 'esp-login', mechanism: 'LOGIN' } } }] }), null],
  [pool('source-mapped', { virtualMtas: [{ name: 'mta1', hostname: 'mta1.example.com', sourceAddress: '::ffff:192.0.2.10' }] }), 'spec.virtualMtas[0].sourceAddress'],
  [pool('source-good', { virtualMtas: [{ name: 'mta1', hostname: 'mta1.example.com', sourceAddress: '192.0.2.10' }] }), null],
];

before(() => createNamespace(NAMESPACE));
after(() => deleteNamespace(NAMESPACE));

describe('the API server refuses what CEL can express, naming the field', () => {
  test('the table: each resource refused with its field named, or admitted', async () => {
    const verdicts = await admit(TABLE.map(([resource]) => resource));
    const wrong: string[] = [];
    for (const [resource, field] of TABLE) {
      const message = verdicts.get(resource.metadata.name);
      if (field === null && message !== undefined) wrong.push(`${resource.metadata.name}: refused: ${message}`);
      if (field !== null && (message === undefined || !message.includes(field))) wrong.push(`${resource.metadata.name}: expected a refusal naming ${field}, got ${message ?? 'admitted'}`);
    }
    assert.deepEqual(wrong, []);
  });

  test('the operator refuses every resource of the table that the API server refuses (and admits the rest)', () => {
    for (const [resource, field] of TABLE) {
      const result = parseVmtaResource(resource);
      assert.equal(!result.ok, field !== null, `${resource.metadata.name}: ${result.ok ? 'accepted' : result.problems.join('; ')}`);
    }
  });

  test('over the generated class of range notations, the API server and the operator give the same verdict (alwaysAllowRelaying and trustedCidrs)', async () => {
    const notations = rangeNotations(12).filter((notation) => !/\s/.test(notation.text));
    const resources = notations.flatMap((notation, index) => [
      policy(`range-${index}`, { alwaysAllowRelaying: [notation.text] }),
      listener(`trust-${index}`, { proxyProtocol: { enabled: true, trustedCidrs: [notation.text] } }),
    ]);
    const verdicts = await admit(resources);
    const disagreements = resources.filter((resource) => (verdicts.get(resource.metadata.name) === undefined) !== parseVmtaResource(resource).ok);
    assert.deepEqual(
      disagreements.map((resource) => `${resource.metadata.name} ${JSON.stringify(resource.spec)}: API server ${verdicts.get(resource.metadata.name) === undefined ? 'admits' : 'refuses'}`),
      [],
    );
    assert.ok([...verdicts.values()].some((message) => message === undefined) && [...verdicts.values()].some((message) => message !== undefined));
  });
});

async function jsonOf(kind: string, name: string): Promise<Record<string, unknown> | undefined> {
  const result = await kubectl(['-n', NAMESPACE, 'get', kind, name, '-o', 'json']);
  return result.code === 0 ? (JSON.parse(result.stdout) as Record<string, unknown>) : undefined;
}

function readyCondition(object: Record<string, unknown> | undefined): { status: string; reason: string; message: string } | undefined {
  const conditions = ((object?.status as { conditions?: Array<{ type: string; status: string; reason: string; message: string }> } | undefined)?.conditions ?? []);
  return conditions.find((condition) => condition.type === 'Ready');
}

describe('what CEL cannot express gets a condition and an Event from the operator, and no ConfigMap', () => {
  const cases: Array<{ what: string; resources: Resource[]; kind: string; name: string; field: string }> = [
    {
      what: 'a backoff reply pattern that does not compile',
      resources: [pool('bad-regex', { domainDefaults: [{ domain: '*', backoff: { replyPatterns: ['^421 (unclosed'] } }] })],
      kind: 'virtualmtapool',
      name: 'bad-regex',
      field: 'spec.domainDefaults[0].backoff.replyPatterns[0]',
    },
    {
      what: 'a relay-address regex only the probe finds open',
      resources: [policy('probe-open', { relayAddresses: ['/[^@]+@[^@]+/'] }), listener('probe-open', { relayPolicyRef: { name: 'probe-open' }, poolRef: { name: 'probe-open' } }), pool('probe-open', {})],
      kind: 'relaypolicy',
      name: 'probe-open',
      field: 'spec.relayAddresses[0]',
    },
    {
      what: 'a relay domain covering a public suffix of two labels',
      resources: [policy('suffix-open', { relayDomains: ['*.co.uk'] }), listener('suffix-open', { relayPolicyRef: { name: 'suffix-open' }, poolRef: { name: 'suffix-open' } }), pool('suffix-open', {})],
      kind: 'relaypolicy',
      name: 'suffix-open',
      field: 'spec.relayDomains[0]',
    },
  ];
  for (const { what, resources, kind, name, field } of cases) {
    test(`${what}: admitted by the API server, refused by the operator with Ready=False, a Warning Event and no ConfigMap`, async () => {
      const documents = resources.map((resource) => stringify({ ...resource, metadata: { ...resource.metadata, namespace: NAMESPACE } })).join('---\n');
      const created = await kubectl(['create', '-f', '-'], documents);
      assert.equal(created.code, 0, `the API server should admit it: ${created.stderr}`);
      const ready = await waitFor(`Ready=False on ${kind} ${name}`, async () => {
        const condition = readyCondition(await jsonOf(kind, name));
        return condition?.status === 'False' ? condition : undefined;
      }, 60_000, 500);
      assert.equal(ready.reason, 'InvalidSpec');
      assert.ok(ready.message.includes(field), ready.message);
      const events = await waitFor('a Warning Event', async () => {
        const result = await kubectl(['-n', NAMESPACE, 'get', 'events', '--field-selector', `involvedObject.name=${name},type=Warning`, '-o', 'json']);
        const items = (JSON.parse(result.stdout || '{"items":[]}') as { items: Array<{ reason: string; message: string }> }).items;
        return items.some((event) => event.message.includes(field)) ? items : undefined;
      }, 60_000, 500);
      assert.ok(events.length > 0);
      // The pool of the broken policy is not rendered either: its listener names a policy the operator refuses.
      const poolName = resources.find((resource) => resource.kind === 'VirtualMtaPool')!.metadata.name;
      await waitFor(`pool ${poolName} not Ready`, async () => readyCondition(await jsonOf('virtualmtapool', poolName))?.status === 'False', 60_000, 500);
      assert.equal(await jsonOf('configmap', `${poolName}-config`), undefined, 'no ConfigMap may be rendered from an invalid resource');
    });
  }
});
