// PowerMTA value notations over their whole classes: every combination of duration units, rates
// per period, CIDR shorthand at every prefix length, and listener address forms.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseDuration } from '../../mta/config/duration.ts';
import { parseAddressRange } from '../../mta/config/address-range.ts';
import { DomainSettings } from '../../operator/api/domain-settings.ts';
import { pmtaBoolean, pmtaCidr, pmtaDuration, pmtaListenAddress, pmtaRate, pmtaRoute } from '../../operator/import/powermta-values.ts';

test('booleans take yes/no, true/false, on/off, 1/0 in any case and refuse anything else', () => {
  for (const word of ['yes', 'YES', 'true', 'True', 'on', '1']) assert.equal(pmtaBoolean(word), true, word);
  for (const word of ['no', 'No', 'false', 'FALSE', 'off', '0']) assert.equal(pmtaBoolean(word), false, word);
  for (const word of ['y', 'enabled', '', '2']) assert.throws(() => pmtaBoolean(word), /not yes\/no/, word);
});

test('every combination of duration units converts to the same number of seconds in one unit', () => {
  const units: [string, number][] = [['w', 604_800], ['d', 86_400], ['h', 3600], ['m', 60], ['s', 1]];
  for (let mask = 1; mask < 32; mask += 1) {
    const parts = units.filter((_, index) => mask & (1 << index));
    const amounts = parts.map((_, index) => (index % 3) + 1);
    const text = parts.map(([unit], index) => `${amounts[index]}${unit}`).join('');
    const seconds = parts.reduce((sum, [, size], index) => sum + amounts[index]! * size, 0);
    const converted = pmtaDuration(text);
    assert.match(converted, /^\d+(d|h|m|s)$/, text);
    assert.equal(parseDuration(converted) / 1000, seconds, `${text} -> ${converted}`);
  }
  assert.equal(pmtaDuration('90'), '90s');
  assert.equal(pmtaDuration('120'), '2m');
  for (const bad of ['10 m', '1y', 'm10', '', '1.5h']) assert.throws(() => pmtaDuration(bad), /not a PowerMTA duration/, bad);
});

test('rates per second, minute and hour stay exact; longer periods become a per-hour rate that is never faster', () => {
  for (const [text, expected] of [['5/s', '5/s'], ['600/m', '600/m'], ['100/h', '100/h'], ['10/60s', '10/m'], ['7/1h', '7/h']] as const) {
    assert.deepEqual(pmtaRate(text), { rate: expected }, text);
  }
  for (const [text, perSecond] of [['2400/d', 2400 / 86_400], ['10/2h', 10 / 7200], ['1/d', 1 / 86_400], ['45/90m', 45 / 5400]] as const) {
    const { rate, approximation } = pmtaRate(text);
    assert.ok(approximation, text);
    const perHour = Number(/^(\d+)\/h$/.exec(rate ?? '')?.[1]);
    assert.ok(perHour >= 1 && (perHour / 3600 <= perSecond || perHour === 1), `${text} -> ${rate}`);
  }
  assert.deepEqual(pmtaRate('unlimited'), { rate: undefined });
  for (const bad of ['100', '/h', '10/y', 'fast']) assert.throws(() => pmtaRate(bad), /not a PowerMTA rate/, bad);
});

test('CIDR shorthand at every prefix length and octet count becomes a CIDR the relay accepts', () => {
  for (let length = 0; length <= 32; length += 1) {
    for (let octets = 1; octets <= 4; octets += 1) {
      const shorthand = `${['10', '20', '30', '40'].slice(0, octets).join('.')}/${length}`;
      const cidr = pmtaCidr(shorthand);
      assert.match(cidr, /^\d+\.\d+\.\d+\.\d+\/\d+$/, shorthand);
      assert.ok(parseAddressRange(cidr).ok, `${shorthand} -> ${cidr}`);
    }
  }
  assert.equal(pmtaCidr('0/0'), '0.0.0.0/0');
  assert.equal(pmtaCidr('10.0.5.20'), '10.0.5.20');
  assert.equal(pmtaCidr('2001:db8::/32'), '2001:db8::/32');
  for (const bad of ['10.0.0.256/8', '1.2.3.4.5/8', 'a/8', '10/8/1', '10/', 'gggg::/16']) assert.throws(() => pmtaCidr(bad), /not an/, bad);
});

test('listener addresses: every-address forms, IPv4, bracketed IPv6, and refused ports and hosts', () => {
  for (const any of ['0/0:25', '*:25', '0.0.0.0:25', '[::]:25']) assert.deepEqual(pmtaListenAddress(any), { address: undefined, port: 25 }, any);
  assert.deepEqual(pmtaListenAddress('10.0.1.22:587'), { address: '10.0.1.22', port: 587 });
  assert.deepEqual(pmtaListenAddress('[2001:db8::1]:465'), { address: '2001:db8::1', port: 465 });
  for (const bad of ['10.0.1.22', '10.0.1.22:0', '10.0.1.22:70000', 'mail.example.com:25', ':25']) assert.throws(() => pmtaListenAddress(bad), /not|port/, bad);
});

test('routes take host or host:port (port 25 by default) and bracketed literals', () => {
  assert.equal(pmtaRoute('smarthost.example.com'), 'smarthost.example.com:25');
  assert.equal(pmtaRoute('smarthost.example.com:587'), 'smarthost.example.com:587');
  // The resources bracket IPv6 only: PowerMTA's [192.0.2.1] loses its brackets, and every result is a valid smtpHost.
  for (const [route, host] of [['[192.0.2.1]:2525', '192.0.2.1:2525'], ['[192.0.2.1]', '192.0.2.1:25'], ['192.0.2.1:2525', '192.0.2.1:2525'], ['[2001:db8::25]:25', '[2001:db8::25]:25'], ['[2001:db8::25]', '[2001:db8::25]:25']] as const) {
    assert.equal(pmtaRoute(route), host, route);
    assert.ok(DomainSettings.safeParse({ domain: '*', smtpHost: pmtaRoute(route) }).success, `${route}: a valid smtpHost`);
  }
  for (const bad of ['', 'a b', 'host:port', 'host:123456']) assert.throws(() => pmtaRoute(bad), /not host/, bad);
});
