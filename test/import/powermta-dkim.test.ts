// PowerMTA's `domain-key SELECTOR,DOMAIN,KEYFILE` (top level and inside <virtual-mta>) and
// `dkim-sign` imported onto the VirtualMtaPool's DKIM fields: every form of the directive either
// lands in its field (the key's PEM in a Secret, its algorithm read from the key) or is refused
// with its reason; and the round trip: the imported pool, run as a relay, signs as PowerMTA would
// (a VirtualMTA's own key before the pool's key of the same domain), checked by dkimpy over DNS.
import assert from 'node:assert/strict';
import { generateKeyPairSync, createPrivateKey } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { parsePowerMtaConfig, readPowerMtaConfig } from '../../operator/import/powermta-config.ts';
import { importPowerMta, type ImportResult } from '../../operator/import/powermta-import.ts';
import { dkimPublicKeyRecord, dkimRecordName } from '../../mta/signing/dkim-keys.ts';
import { startDkimWorld, verifyWithDkimpy, sendWithSmtplib } from '../fixtures/dkim-verifier.ts';
import { startImportedRelay } from '../fixtures/imported-relay.ts';
import { REPO_ROOT, type RelayProcess } from '../fixtures/relay-process.ts';

type Resource = { kind: string; metadata: { name: string }; spec: Record<string, any>; stringData?: Record<string, string> };
const pem = (type: 'rsa' | 'ed25519' | 'ec') =>
  (type === 'rsa' ? generateKeyPairSync('rsa', { modulusLength: 2048 }) : type === 'ec' ? generateKeyPairSync('ec', { namedCurve: 'P-256' }) : generateKeyPairSync('ed25519')).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
const KEYS = { rsa: pem('rsa'), ed25519: pem('ed25519'), ec: pem('ec') };
const VMTA = '<virtual-mta a>\nsmtp-source-host 127.0.0.2 a.test\n</virtual-mta>\n';

function importText(text: string, files: Record<string, string> = {}): ImportResult {
  return importPowerMta(parsePowerMtaConfig(text, '/etc/pmta/config'), { poolName: 'p', readKeyFile: (file) => files[file] });
}
const note = (result: ImportResult, directive: string) => result.report.notes.find((entry) => entry.directive === directive);
const resources = (result: ImportResult) => result.resources as Resource[];

describe('domain-key forms', () => {
  const refused: Array<[string, RegExp]> = [
    ['s1,example.test', /takes SELECTOR,DOMAIN,KEYFILE/],
    ['s1,example.test,k.pem,extra', /takes SELECTOR,DOMAIN,KEYFILE/],
    [',example.test,k.pem', /takes SELECTOR,DOMAIN,KEYFILE/],
    ['s1,*,k.pem', /not a signing domain: a key signs for one domain/],
    ['s1,*.example.test,k.pem', /not a signing domain/],
    ['s1,exa mple.test,k.pem', /not a signing domain/],
    ['*,example.test,k.pem', /not a DKIM selector/],
    ['s!1,example.test,k.pem', /not a DKIM selector/],
    ['s1,example.test,ec.pem', /holds a ec key; DKIM signs with RSA .* or Ed25519/],
    ['s1,example.test,garbage.pem', /is not a PEM private key/],
  ];
  const files = { '/etc/pmta/k.pem': KEYS.rsa, '/etc/pmta/ec.pem': KEYS.ec, '/etc/pmta/garbage.pem': 'not a key' };
  for (const [form, reason] of refused) {
    test(`domain-key ${form}: refused, and no key or Secret is made`, () => {
      const result = importText(`domain-key ${form}\n${VMTA}`, files);
      const entry = note(result, `domain-key ${form}`);
      assert.equal(entry?.coverage, 'refused');
      assert.match(entry!.message, reason);
      const pool = resources(result).find((resource) => resource.kind === 'VirtualMtaPool')!;
      assert.equal(pool.spec.dkim, undefined);
      assert.ok(!resources(result).some((resource) => resource.metadata.name.includes('-dkim-')));
    });
  }

  for (const [type, algorithm] of [['rsa', 'rsa-sha256'], ['ed25519', 'ed25519-sha256']] as const) {
    for (const [where, text] of [['top level', `domain-key Sel_1,Example.TEST,keys/${type}.pem\n${VMTA}`], ['a virtual-mta', `<virtual-mta a>\nsmtp-source-host 127.0.0.2 a.test\ndomain-key Sel_1,Example.TEST,keys/${type}.pem\n</virtual-mta>\n`]] as const) {
      test(`a ${type} key at the ${where}: mapped with ${algorithm} read from the key, its PEM in a Secret (path relative to the config file)`, () => {
        const result = importText(text, { [`/etc/pmta/keys/${type}.pem`]: KEYS[type] });
        assert.equal(note(result, `domain-key Sel_1,Example.TEST,keys/${type}.pem`)?.coverage, 'mapped');
        const pool = resources(result).find((resource) => resource.kind === 'VirtualMtaPool')!;
        const keys = where === 'top level' ? pool.spec.dkim?.keys : pool.spec.virtualMtas[0].dkimKeys;
        const secretName = where === 'top level' ? 'p-dkim-example.test-sel-1' : 'p-dkim-a-example.test-sel-1';
        assert.deepEqual(keys, [{ domain: 'example.test', selector: 'Sel_1', algorithm, secretName }]);
        const secret = resources(result).find((resource) => resource.kind === 'Secret' && resource.metadata.name === secretName);
        assert.equal(secret?.stringData?.['private.pem'], KEYS[type]);
      });
    }
  }

  test('a key file that cannot be read here: approximated, an empty Secret and the command that fills it', () => {
    const result = importText(`domain-key s1,example.test,/secure/dkim.pem\n${VMTA}`);
    const entry = note(result, 'domain-key s1,example.test,/secure/dkim.pem');
    assert.equal(entry?.coverage, 'approximated');
    assert.match(entry!.message, /kubectl create secret generic p-dkim-example\.test-s1 --from-file=private\.pem=\/secure\/dkim\.pem/);
    assert.equal(resources(result).find((resource) => resource.metadata.name === 'p-dkim-example.test-s1')?.stringData?.['private.pem'], '');
  });

  test('a second key for the same domain and selector in one scope is refused; another scope may have its own', () => {
    const result = importText(`domain-key s1,example.test,k.pem\ndomain-key s1,example.test,k2.pem\n<virtual-mta a>\nsmtp-source-host 127.0.0.2 a.test\ndomain-key s1,example.test,k.pem\n</virtual-mta>\n`, { '/etc/pmta/k.pem': KEYS.rsa, '/etc/pmta/k2.pem': KEYS.ed25519 });
    assert.match(note(result, 'domain-key s1,example.test,k2.pem')!.message, /a second key for d=example\.test, s=s1 in spec\.dkim\.keys/);
    const pool = resources(result).find((resource) => resource.kind === 'VirtualMtaPool')!;
    assert.equal(pool.spec.dkim.keys.length, 1);
    assert.equal(pool.spec.virtualMtas[0].dkimKeys.length, 1);
  });

  test('dkim-sign yes is mapped, dkim-sign no approximated, dkim-identity refused, domain-key in a <domain> block refused', () => {
    const result = importText(`dkim-identity @example.test\n<domain *>\ndkim-sign yes\n</domain>\n<domain other.test>\ndkim-sign no\ndomain-key s,other.test,k.pem\n</domain>\n${VMTA}`);
    assert.equal(note(result, 'dkim-sign yes')?.coverage, 'mapped');
    assert.equal(note(result, 'dkim-sign no')?.coverage, 'approximated');
    assert.match(note(result, 'dkim-identity @example.test')!.message, /no i= tag/);
    assert.match(note(result, 'domain-key s,other.test,k.pem')!.message, /signs by From domain, not by destination/);
  });

  test('broad.conf: its DKIM directives are all reported, its readable keys imported', () => {
    const result = importPowerMta(readPowerMtaConfig(path.join(REPO_ROOT, 'test/fixtures/powermta/broad.conf')), { poolName: 'outbound', readKeyFile: (file) => (file.startsWith(REPO_ROOT) ? KEYS.rsa : undefined) });
    const coverage = (directive: string) => result.report.notes.filter((entry) => entry.directive.startsWith(directive)).map((entry) => entry.coverage).sort();
    assert.deepEqual(coverage('domain-key'), ['approximated', 'mapped', 'mapped', 'refused', 'refused']);
    assert.deepEqual(coverage('dkim-sign'), ['approximated', 'mapped', 'mapped']);
  });
});

describe('round trip: the imported pool signs as the PowerMTA configuration says', () => {
  const cleanups: (() => Promise<void> | void)[] = [];
  let relay: RelayProcess;
  let world: Awaited<ReturnType<typeof startDkimWorld>>;
  let relayPort: number;

  before(async () => {
    world = await startDkimWorld('vmta-pmta-dkim-', cleanups);
    const keys = { pool: KEYS.rsa, own: KEYS.ed25519, other: pem('rsa') };
    await mkdir(path.join(world.dir, 'pmta', 'dkim'), { recursive: true });
    for (const [name, text] of Object.entries(keys)) await writeFile(path.join(world.dir, 'pmta', 'dkim', `${name}.pem`), text);
    for (const [selector, domain] of [['pool', 'signed.test'], ['own', 'signed.test'], ['other', 'other.test']] as const) {
      world.dns.set(dkimRecordName(selector, domain), { txt: [dkimPublicKeyRecord(createPrivateKey(keys[selector]))] });
    }
    const config = path.join(world.dir, 'pmta', 'config');
    await writeFile(config, [
      'smtp-listener 0/0:25',
      '<source 0/0>', 'process-x-virtual-mta yes', '</source>',
      '<source 127.0.0.1/32>', 'always-allow-relaying yes', '</source>',
      'domain-key pool,signed.test,dkim/pool.pem',
      'domain-key other,other.test,dkim/other.pem',
      `<domain *>`, `route [${world.sink.address}]:${world.sink.port}`, 'dkim-sign yes', '</domain>',
      '<virtual-mta own>', 'smtp-source-host 127.0.0.1 own.signed.test', 'domain-key own,signed.test,dkim/own.pem', '</virtual-mta>',
      '<virtual-mta shared>', 'smtp-source-host 127.0.0.1 shared.signed.test', '</virtual-mta>',
      '',
    ].join('\n'));
    const { readFileSync } = await import('node:fs');
    const imported = importPowerMta(readPowerMtaConfig(config), { poolName: 'outbound', readKeyFile: (file) => readFileSync(file, 'utf8') });
    assert.deepEqual(imported.report.notes.filter((entry) => entry.directive.startsWith('domain-key')).map((entry) => entry.coverage), ['mapped', 'mapped', 'mapped']);
    const started = await startImportedRelay(imported.resources, world.dir, 'outbound', (runtime) => {
      relayPort = runtime.listeners[0]!.port;
    });
    relay = started.relay;
    cleanups.push(() => relay.kill('SIGKILL').then(() => undefined));
  });
  after(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup();
  });

  test('a VirtualMTA\'s own key signs before the pool\'s key of the same domain; other domains get the pool\'s key; all verify', async () => {
    const cases = [
      { vmta: 'own', from: 'a@signed.test', signature: ['signed.test', 'own', 'ed25519-sha256'] },
      { vmta: 'shared', from: 'b@signed.test', signature: ['signed.test', 'pool', 'rsa-sha256'] },
      { vmta: 'own', from: 'c@other.test', signature: ['other.test', 'other', 'rsa-sha256'] },
    ];
    await sendWithSmtplib('127.0.0.1', relayPort, cases.map((entry, index) => ({
      from: entry.from,
      to: ['rcpt@rcpt.test'],
      message: Buffer.from(`From: ${entry.from}\r\nTo: rcpt@rcpt.test\r\nX-Virtual-MTA: ${entry.vmta}\r\nSubject: case ${index}\r\n\r\nbody ${index}\r\n`),
    })));
    const deadline = Date.now() + 30_000;
    while (world.sink.messages.length < cases.length && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 100));
    assert.equal(world.sink.messages.length, cases.length, `every message reached the sink; relay log: ${relay.logs.slice(-8).map((record) => JSON.stringify(record)).join('\n')}`);
    const bySubject = cases.map((_, index) => world.sink.messages.find((message) => message.body.toString().includes(`Subject: case ${index}`))!);
    const checks = await verifyWithDkimpy(bySubject.map((message) => message.body), world.dns.server);
    cases.forEach((entry, index) => {
      assert.deepEqual(checks[index]!.map((check) => [check.domain, check.selector, check.algorithm]), [entry.signature], `${entry.from} via ${entry.vmta}`);
      assert.ok(checks[index]!.every((check) => check.valid), JSON.stringify(checks[index]));
    });
  });
});
