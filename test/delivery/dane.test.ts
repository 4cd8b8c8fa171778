// DANE's two halves over their classes. Certificate matching: every usage (0-3) x selector (0, 1)
// x matching type (0, 1, 2) against a real chain, altered data, DANE-TA name and chain checks.
// TLSA and MX lookups: a real validating resolver (Unbound) over zones NSD serves, signed here:
// validated records, validated denial, insecure zones and bogus signatures.
import assert from 'node:assert/strict';
import { createHash, X509Certificate } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { domainDane, hostDane, isUsable, verifyDane, type TlsaRecord } from '../../mta/delivery/dane.ts';
import { DnssecLookup } from '../../mta/delivery/dnssec-lookup.ts';
import { dnssecToolsSkip, missingDnssecTools, startDnssecResolver, type TestDnssecResolver } from '../fixtures/dnssec-resolver.ts';
import { createTestCa, type TestCa } from '../fixtures/tls.ts';

let ca: TestCa;
let leaf: X509Certificate;
let anchor: X509Certificate;
before(() => {
  ca = createTestCa('dane test CA');
  leaf = new X509Certificate(ca.issue(['mx.example.test']).cert);
  anchor = new X509Certificate(ca.ca);
});
after(() => ca.cleanup());

function record(certificate: X509Certificate, usage: number, selector: number, matchingType: number): TlsaRecord {
  const content = selector === 0 ? certificate.raw : certificate.publicKey.export({ type: 'spki', format: 'der' });
  const data = matchingType === 0 ? content : createHash(matchingType === 1 ? 'sha256' : 'sha512').update(content).digest();
  return { usage, selector, matchingType, data };
}

test('every usage x selector x matching type: DANE-EE and DANE-TA match, altered data never does, PKIX usages are unusable', () => {
  for (const usage of [0, 1, 2, 3]) {
    for (const selector of [0, 1]) {
      for (const matchingType of [0, 1, 2]) {
        const label = `${usage} ${selector} ${matchingType}`;
        const target = usage === 2 ? anchor : leaf;
        const good = record(target, usage, selector, matchingType);
        const verdict = verifyDane([leaf, anchor], [good], ['mx.example.test']);
        if (usage < 2) {
          assert.equal(isUsable(good), false, label);
          assert.deepEqual(verdict, { ok: true, usage: 'unauthenticated' }, `${label}: only unusable records -> TLS without authentication`);
          continue;
        }
        assert.deepEqual(verdict, { ok: true, usage: usage === 3 ? 'dane-ee' : 'dane-ta' }, label);
        for (const position of [0, Math.floor(good.data.length / 2), good.data.length - 1]) {
          const altered = Buffer.from(good.data);
          altered[position] = altered[position]! ^ 0x01;
          assert.equal(verifyDane([leaf, anchor], [{ ...good, data: altered }], ['mx.example.test']).ok, false, `${label} altered at ${position}`);
        }
      }
    }
  }
});

test('DANE-EE ignores names; DANE-TA needs the MX host name in the leaf and a chain up to the anchor', () => {
  assert.equal(verifyDane([leaf], [record(leaf, 3, 1, 1)], ['some.other.name']).ok, true, 'DANE-EE: names do not matter (RFC 7672 3.1.1)');
  const ta = record(anchor, 2, 0, 1);
  assert.match(JSON.stringify(verifyDane([leaf, anchor], [ta], ['mx.wrong.test'])), /names none of mx\.wrong\.test/);
  assert.equal(verifyDane([leaf, anchor], [ta], ['MX.Example.Test.']).ok, true, 'names compare case-insensitively, trailing dot ignored');
  const stranger = createTestCa('another CA');
  try {
    const foreignLeaf = new X509Certificate(stranger.issue(['mx.example.test']).cert);
    assert.equal(verifyDane([foreignLeaf, anchor], [ta], ['mx.example.test']).ok, false, 'a leaf not issued by the anchor does not chain to it');
  } finally {
    stranger.cleanup();
  }
  assert.equal(verifyDane([leaf], [ta], ['mx.example.test']).ok, false, 'the anchor must be in the presented chain');
  assert.equal(verifyDane([], [record(leaf, 3, 1, 1)], ['mx.example.test']).ok, false, 'no certificate, no match');
});

const missing = missingDnssecTools();
describe('TLSA and MX lookups through a validating resolver', { skip: dnssecToolsSkip(missing) }, () => {
  let resolver: TestDnssecResolver;
  let lookup: DnssecLookup;
  const tlsa = `3 1 1 ${'ab'.repeat(32)}`;
  before(async () => {
    assert.deepEqual(missing, [], 'CI installs nsd, unbound and ldnsutils (scripts/install-dnssec-tools.sh)');
    resolver = await startDnssecResolver([
      { name: 'signed.test', signed: true, records: ['@ IN MX 10 mx', 'mx IN A 127.1.2.3', `_25._tcp.mx IN TLSA ${tlsa}`, 'bare IN A 127.1.2.4'] },
      { name: 'bogus.test', signed: true, records: ['@ IN MX 10 mx', 'mx IN A 127.1.2.5', `_25._tcp.mx IN TLSA ${tlsa}`], tamper: (zone) => zone.replace(/(TLSA\s+3 1 1 )ab/, '$1cd') },
      { name: 'plain.test', signed: false, records: ['@ IN MX 10 mx', 'mx IN A 127.1.2.6', `_25._tcp.mx IN TLSA ${tlsa}`] },
    ]);
    lookup = new DnssecLookup({ servers: [resolver.server] });
  });
  after(() => resolver?.close());

  test('validated TLSA records, validated denial, insecure answers and bogus signatures each get their own state', async () => {
    assert.deepEqual(await domainDane(lookup, 'signed.test'), { kind: 'secure-mx' });
    const found = await hostDane(lookup, 'mx.signed.test', 25);
    assert.equal(found.kind, 'tlsa');
    assert.deepEqual(found.kind === 'tlsa' ? found.records.map((r) => [r.usage, r.selector, r.matchingType, r.data.toString('hex')]) : [], [[3, 1, 1, 'ab'.repeat(32)]]);
    assert.deepEqual(await hostDane(lookup, 'bare.signed.test', 25), { kind: 'none', reason: 'no-tlsa' }, 'validated denial');
    assert.deepEqual(await hostDane(lookup, 'mx.signed.test', 587), { kind: 'none', reason: 'no-tlsa' }, 'TLSA is per port');
    assert.equal((await domainDane(lookup, 'plain.test')).kind, 'insecure-mx');
    assert.deepEqual(await hostDane(lookup, 'mx.plain.test', 25), { kind: 'none', reason: 'insecure' }, 'TLSA in an unsigned zone is not used');
    const bogus = await hostDane(lookup, 'mx.bogus.test', 25);
    assert.equal(bogus.kind === 'unusable' && bogus.reason, 'dnssec-invalid');
  });

  test('no validating resolver configured, or none answering, is never taken for a validated answer', async () => {
    assert.equal((await domainDane(new DnssecLookup({ servers: [] }), 'signed.test')).kind, 'insecure-mx');
    const silent = new DnssecLookup({ servers: ['127.0.0.1:9'], timeoutMs: 200 });
    assert.equal((await domainDane(silent, 'signed.test')).kind, 'bogus-mx', 'a lookup failure defers, it does not fall back');
    const host = await hostDane(silent, 'mx.signed.test', 25);
    assert.equal(host.kind === 'unusable' && host.reason, 'lookup-failed');
  });
});
