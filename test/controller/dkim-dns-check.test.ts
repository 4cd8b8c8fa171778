// The operator's DKIM DNS check against the fake API server and the test DNS server: for each
// key of the pool (pool keys and a VirtualMTA's own), status.dkimKeys says whether
// <selector>._domainkey.<domain> publishes the public half of the key in its Secret, the
// DkimPublished condition carries the worst reason, and each change of a key's state is an
// Event. Fixing DNS turns them Published without any change to the resources. Removing the keys removes
// status.dkimKeys (a merge patch keeps what it omits, so the controller sends null).
import assert from 'node:assert/strict';
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { after, before, test } from 'node:test';
import { secretKeysOnly } from '../../operator/controller/cache-transforms.ts';
import type { VmtaOperator } from '../../operator/controller/operator.ts';
import { dkimPublicKeyData, dkimPublicKeyRecord } from '../../mta/signing/dkim-keys.ts';
import { startDnsServer, type TestDnsServer } from '../fixtures/dns-server.ts';
import type { FakeKubeApi, JsonObject } from '../fixtures/fake-kube-api.ts';
import { eventually, startFakeApi } from '../kube/helpers.ts';
import { condition, loadExamples, NAMESPACE, startOperator } from './harness.ts';

let api: FakeKubeApi;
let operator: VmtaOperator;
let dns: TestDnsServer;

const rsa = (bits = 2048) => generateKeyPairSync('rsa', { modulusLength: bits }).privateKey;
const ed25519 = () => generateKeyPairSync('ed25519').privateKey;
const pem = (key: KeyObject) => key.export({ type: 'pkcs8', format: 'pem' }) as string;

const KEYS = { published: rsa(), mismatched: ed25519(), other: ed25519(), vmta: rsa(), short: rsa(1024) };

function secret(name: string, data: Record<string, string>): JsonObject {
  return { apiVersion: 'v1', kind: 'Secret', metadata: { name, namespace: NAMESPACE }, type: 'Opaque', data: Object.fromEntries(Object.entries(data).map(([key, value]) => [key, Buffer.from(value).toString('base64')])) };
}

interface KeyStatus {
  domain: string;
  selector: string;
  state: string;
  virtualMta?: string;
  message?: string;
}
const pool = () => api.get('vmta.dev/v1alpha1', 'VirtualMtaPool', NAMESPACE, 'outbound');
const keyStates = () => Object.fromEntries((((pool()?.status as { dkimKeys?: KeyStatus[] } | undefined)?.dkimKeys) ?? []).map((status) => [`${status.virtualMta ?? 'pool'}:${status.selector}._domainkey.${status.domain}`, status.state]));

before(async () => {
  dns = await startDnsServer({
    's1._domainkey.example.com': { txt: [dkimPublicKeyRecord(KEYS.published)] },
    // A record of another Ed25519 key: Mismatch until it is corrected.
    'ed1._domainkey.example.com': { txt: ['v=spf1 -all', dkimPublicKeyRecord(KEYS.other)] },
  });
  const started = await startFakeApi({ bookmarkIntervalMs: 500 });
  api = started.api;
  await loadExamples(api);
  api.put(secret('dkim-example', { 'private.pem': pem(KEYS.published), 'ed25519.pem': pem(KEYS.mismatched), 'short.pem': pem(KEYS.short) }));
  api.put(secret('dkim-brand', { 'private.pem': pem(KEYS.vmta) }));
  const object = pool()!;
  const spec = object.spec as { dkim?: unknown; virtualMtas: { dkimKeys?: unknown }[] };
  spec.dkim = {
    keys: [
      { domain: 'example.com', selector: 's1', secretName: 'dkim-example' },
      { domain: 'example.com', selector: 'ed1', algorithm: 'ed25519-sha256', secretName: 'dkim-example', secretKey: 'ed25519.pem' },
      { domain: 'example.com', selector: 'old', secretName: 'dkim-example', secretKey: 'short.pem' },
    ],
    dnsCheck: { resolvers: [dns.server] },
  };
  spec.virtualMtas[0]!.dkimKeys = [{ domain: 'brand.example', selector: 'vm1', secretName: 'dkim-brand' }];
  api.put(object);
  operator = startOperator(api, started.kubeconfig, { resyncPeriodMs: 60_000, dkimRecheckIntervalMs: 300 });
  await operator.start();
});

after(async () => {
  await operator.stop();
  await api.close();
  await dns.close();
});

test('status.dkimKeys reports Published, Mismatch, NotPublished and InvalidKey per key, with the condition and Events', async () => {
  const states = await eventually('dkimKeys in the pool status', () => (Object.keys(keyStates()).length === 4 ? keyStates() : undefined));
  assert.deepEqual(states, {
    'pool:s1._domainkey.example.com': 'Published',
    'pool:ed1._domainkey.example.com': 'Mismatch',
    'pool:old._domainkey.example.com': 'InvalidKey',
    'mta1:vm1._domainkey.brand.example': 'NotPublished',
  });
  const published = condition(pool(), 'DkimPublished');
  assert.equal(published?.status, 'False');
  assert.equal(published?.reason, 'Mismatch');
  assert.match(published!.message, /ed1\._domainkey\.example\.com/);
  const invalid = ((pool()!.status as { dkimKeys: KeyStatus[] }).dkimKeys).find((status) => status.selector === 'old')!;
  assert.match(invalid.message!, /RSA key of 1024 bits is too short/);
  const notPublished = ((pool()!.status as { dkimKeys: KeyStatus[] }).dkimKeys).find((status) => status.selector === 'vm1')!;
  assert.ok(notPublished.message!.includes(dkimPublicKeyData(KEYS.vmta)), 'the NotPublished message gives the record to publish');
  for (const reason of ['DkimMismatch', 'DkimNotPublished', 'DkimInvalidKey']) {
    await eventually(`a Warning Event ${reason}`, () => api.list('v1', 'Event', NAMESPACE).find((event) => event.reason === reason && event.type === 'Warning'));
  }
  assert.ok(dns.queries.includes('TXT ed1._domainkey.example.com'), `the check asked the configured resolver: ${dns.queries.join(', ')}`);
});

test('publishing the right records turns the keys Published without touching the resources', async () => {
  dns.set('ed1._domainkey.example.com', { txt: [dkimPublicKeyRecord(KEYS.mismatched)] });
  dns.set('vm1._domainkey.brand.example', { txt: [dkimPublicKeyRecord(KEYS.vmta)] });
  await eventually('both keys Published', () => {
    const states = keyStates();
    return states['pool:ed1._domainkey.example.com'] === 'Published' && states['mta1:vm1._domainkey.brand.example'] === 'Published' ? true : undefined;
  });
  assert.equal(condition(pool(), 'DkimPublished')?.reason, 'InvalidKey', 'the short key still holds the condition down');
  await eventually('a Normal DkimPublished Event', () => api.list('v1', 'Event', NAMESPACE).find((event) => event.reason === 'DkimPublished' && event.type === 'Normal'));
});

test('the Secret cache keeps the public half of a private key, never the key', () => {
  const cached = secretKeysOnly(secret('dkim', { 'private.pem': pem(KEYS.published), note: 'not a key' }) as never);
  const text = JSON.stringify(cached);
  assert.doesNotMatch(text, /PRIVATE KEY/);
  assert.deepEqual(cached.vmtaPublicKeys, { 'private.pem': { type: 'rsa', bits: 2048, publicKey: dkimPublicKeyData(KEYS.published) } });
  assert.deepEqual(cached.data, { 'private.pem': '', note: '' });
});

test('keys removed from the spec take status.dkimKeys and the DkimPublished condition away', async () => {
  const current = pool()!;
  const spec = current.spec as { dkim?: unknown; virtualMtas: JsonObject[] };
  const { dkim: _dkim, ...withoutDkim } = spec;
  api.put({ ...current, spec: { ...withoutDkim, virtualMtas: spec.virtualMtas.map(({ dkimKeys: _keys, ...vmta }) => vmta) } });
  await eventually('status.dkimKeys gone', () => ((pool()!.status as { dkimKeys?: unknown }).dkimKeys === undefined && condition(pool(), 'DkimPublished') === undefined ? true : undefined));
});
