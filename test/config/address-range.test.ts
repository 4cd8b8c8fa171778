// The one parser of addresses and ranges over the generated class of notations: only canonical
// text is accepted, every other notation is refused naming the value and its canonical form,
// the width limit judges what a range covers in every notation, matching agrees with ipaddr.js
// arithmetic (IPv4 and IPv4-mapped clients alike), and the relay's config schema and the
// operator's resource schemas refuse exactly what the parser refuses.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import ipaddr from 'ipaddr.js';
import { isOverlyBroad, parseAddressRange, parseIpAddress, peerAddressValue, peerInRanges } from '../../mta/config/address-range.ts';
import { RuntimeConfig } from '../../mta/config/schema.ts';
import { parseVmtaResource } from '../../operator/api/parse.ts';
import { addressNotations, fixedLength, rangeNotations, type Notation } from '../fixtures/range-notations.ts';

const NOTATIONS = rangeNotations();
const MEANINGFUL = NOTATIONS.filter((notation): notation is Notation & { means: string } => notation.means !== undefined);

/** Independent of the parser: IPv4 below /8, IPv6 below /16, or an IPv6 range holding the whole mapped block. */
function expectedBroad(notation: Notation & { means: string }): boolean {
  if (notation.family === 4) return (notation.prefixLength ?? 32) < 8;
  const [network, bits] = ipaddr.parseCIDR(notation.means);
  const holdsMapped = bits <= 96 && ipaddr.IPv6.parse('::ffff:0:0').match(network, bits);
  return bits < 16 || holdsMapped;
}

describe('address ranges in every notation', () => {
  test(`the class is broad: ${NOTATIONS.length} notations, ${new Set(NOTATIONS.map((n) => n.how)).size} ways of writing`, () => {
    assert.ok(NOTATIONS.length > 300);
    assert.ok(NOTATIONS.some((n) => n.canonical) && NOTATIONS.some((n) => !n.canonical));
  });

  test('exactly the canonical notations are accepted, and they mean what they say', () => {
    const wrong = NOTATIONS.filter((notation) => {
      const parsed = parseAddressRange(notation.text);
      if (parsed.ok !== notation.canonical) return true;
      return parsed.ok && (parsed.value.canonical !== notation.means || parsed.value.family !== notation.family || parsed.value.prefixLength !== notation.prefixLength);
    });
    assert.deepEqual(wrong.map((n) => `${JSON.stringify(n.text)} (${n.how})`), []);
  });

  test('a non-canonical notation is refused naming the value and the canonical form of what it means', () => {
    for (const notation of MEANINGFUL.filter((n) => !n.canonical)) {
      const parsed = parseAddressRange(notation.text);
      assert.ok(!parsed.ok, notation.text);
      assert.ok(parsed.error.includes(JSON.stringify(notation.text)), parsed.error);
      assert.ok(parsed.error.includes(`write "${notation.means}"`), `${notation.how}: ${parsed.error}`);
      assert.equal(parsed.canonical, notation.means);
    }
  });

  test('text that is no range at all is refused without a suggestion', () => {
    for (const notation of NOTATIONS.filter((n) => n.means === undefined)) {
      const parsed = parseAddressRange(notation.text);
      assert.ok(!parsed.ok && parsed.canonical === undefined, `${JSON.stringify(notation.text)} (${notation.how})`);
    }
  });

  test('the open-relay width judges what a range covers, whatever the notation', () => {
    const wrong = MEANINGFUL.filter((notation) => {
      const meant = parseAddressRange(notation.means);
      return !meant.ok || isOverlyBroad(meant.value) !== expectedBroad(notation);
    });
    assert.deepEqual(wrong.map((n) => `${n.text} means ${n.means}`), []);
    assert.ok(MEANINGFUL.some((n) => n.how.startsWith('IPv4-mapped') && expectedBroad(n)), 'the class holds mapped open ranges');
  });

  test('matching agrees with ipaddr.js for IPv4 and IPv4-mapped clients at every range edge', () => {
    const mismatches: string[] = [];
    for (const notation of MEANINGFUL.filter((n) => n.canonical)) {
      const range = parseAddressRange(notation.text);
      assert.ok(range.ok);
      const [network, bits] = ipaddr.parseCIDR(notation.means.includes('/') ? notation.means : `${notation.means}/${notation.family === 4 ? 32 : 128}`);
      const asIpv6 = network.kind() === 'ipv4' ? (network as ipaddr.IPv4).toIPv4MappedAddress() : (network as ipaddr.IPv6);
      const width = network.kind() === 'ipv4' ? bits + 96 : bits;
      const first = BigInt(`0x${Buffer.from(asIpv6.toByteArray()).toString('hex')}`);
      const last = first + (1n << BigInt(128 - width)) - 1n;
      for (const value of [first - 1n, first, last, last + 1n].filter((v) => v >= 0n && v < 1n << 128n)) {
        const address = ipaddr.fromByteArray([...Buffer.from(value.toString(16).padStart(32, '0'), 'hex')]) as ipaddr.IPv6;
        const expected = address.match(asIpv6, width);
        const spellings = address.isIPv4MappedAddress() ? [address.toIPv4Address().toString(), `::ffff:${address.toIPv4Address().toString()}`, address.toRFC5952String()] : [address.toRFC5952String(), fixedLength(address)];
        for (const spelling of spellings) {
          if (peerInRanges(spelling, [range.value]) !== expected) mismatches.push(`${spelling} in ${notation.text}: expected ${expected}`);
        }
      }
    }
    assert.deepEqual(mismatches, []);
  });

  test('a peer address with leading zeros or a zone id matches nothing (it is ambiguous)', () => {
    for (const peer of ['010.0.0.1', '10.0.0.01', '::ffff:010.0.0.1', 'fe80::1%eth0', ' 10.0.0.1', 'not-an-ip', '']) assert.equal(peerAddressValue(peer), null, peer);
    const everything = parseAddressRange('0.0.0.0/0');
    assert.ok(everything.ok);
    assert.equal(peerInRanges('010.0.0.1', [everything.value]), false);
  });

  test('single addresses: canonical only, with the canonical form named', () => {
    for (const notation of addressNotations()) {
      const parsed = parseIpAddress(notation.text);
      assert.equal(parsed.ok, notation.canonical, `${notation.text} (${notation.how})`);
    }
    const mapped = parseIpAddress('::ffff:192.0.2.10');
    assert.ok(!mapped.ok && mapped.error.includes('write "192.0.2.10"'));
  });
});

describe('the schemas refuse what the parser refuses', () => {
  const relayConfig = (allowedCidrs: string[], trustedCidrs: string[], acknowledgeOpenRelay = false) => ({
    apiVersion: 'vmta.dev/relay-config/v1',
    hostname: 'relay.test',
    pool: { name: 'pool', virtualMtas: [{ name: 'vmta-1', hostname: 'out.relay.test' }] },
    listeners: [{ name: 'relay', port: 25, relayPolicy: 'p', proxyProtocol: { enabled: trustedCidrs.length > 0, trustedCidrs } }],
    relayPolicies: [{ name: 'p', allowedCidrs, acknowledgeOpenRelay }],
    spool: { path: '/spool' },
  });
  const policy = (alwaysAllowRelaying: string[], acknowledgeOpenRelay = false) => ({ apiVersion: 'vmta.dev/v1alpha1', kind: 'RelayPolicy', metadata: { name: 'p' }, spec: { alwaysAllowRelaying, acknowledgeOpenRelay } });
  const issuesAt = (result: ReturnType<typeof RuntimeConfig.safeParse>, path: string) => (result.success ? [] : result.error.issues.filter((issue) => issue.path.join('.') === path));

  test('runtime config: allowedCidrs and trustedCidrs take canonical ranges only; open ones need acknowledgeOpenRelay, trusted ones are never open', () => {
    for (const notation of NOTATIONS) {
      const broad = notation.canonical && notation.means !== undefined && expectedBroad(notation as Notation & { means: string });
      const allowed = RuntimeConfig.safeParse(relayConfig([notation.text], []), { reportInput: true });
      assert.equal(issuesAt(allowed, 'relayPolicies.0.allowedCidrs.0').length > 0, !notation.canonical || broad, `${JSON.stringify(notation.text)} (${notation.how})`);
      if (broad) {
        assert.match(issuesAt(allowed, 'relayPolicies.0.allowedCidrs.0')[0]!.message, /open relay/);
        assert.equal(RuntimeConfig.safeParse(relayConfig([notation.text], [], true)).success, true, notation.text);
      }
      const trusted = RuntimeConfig.safeParse(relayConfig([], [notation.text]), { reportInput: true });
      assert.equal(issuesAt(trusted, 'listeners.0.proxyProtocol.trustedCidrs.0').length > 0, !notation.canonical || broad, `${JSON.stringify(notation.text)} (${notation.how})`);
    }
  });

  test('RelayPolicy resource: the same verdict on spec.alwaysAllowRelaying, the value named in the problem', () => {
    for (const notation of NOTATIONS) {
      const broad = notation.canonical && notation.means !== undefined && expectedBroad(notation as Notation & { means: string });
      const result = parseVmtaResource(policy([notation.text]));
      assert.equal(!result.ok, !notation.canonical || broad, `${JSON.stringify(notation.text)} (${notation.how})`);
      if (!result.ok) assert.ok(result.problems.some((problem) => problem.startsWith('spec.alwaysAllowRelaying[0]: ') && problem.includes(JSON.stringify(notation.text))), result.problems.join('; '));
    }
  });
});
