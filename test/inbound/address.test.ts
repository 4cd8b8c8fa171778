// The Mailbox parser and domain normalisation behind every relay decision.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { normaliseDomain, parseMailbox } from '../../mta/inbound/address.ts';

describe('parseMailbox', () => {
  const accepted: Array<[string, string, string, boolean]> = [
    // input, normalised address, domain, hasRoutingCharacters
    ['user@Example.COM', 'user@example.com', 'example.com', false],
    ['User.Name+tag@example.com.', 'User.Name+tag@example.com', 'example.com', false],
    ['@a.example,@b.example:user@c.example', 'user@c.example', 'c.example', false],
    ['"user@evil.example"@allowed.example', '"user@evil.example"@allowed.example', 'allowed.example', true],
    ['"x"@evil.example', '"x"@evil.example', 'evil.example', false],
    ['"a\\"b"@example.com', '"a\\"b"@example.com', 'example.com', false],
    ['user%other.example@allowed.example', 'user%other.example@allowed.example', 'allowed.example', true],
    ['host!user@allowed.example', 'host!user@allowed.example', 'allowed.example', true],
    ['"user%x"@allowed.example', '"user%x"@allowed.example', 'allowed.example', true],
    ['"a\\%b"@allowed.example', '"a\\%b"@allowed.example', 'allowed.example', true],
    ['user@bücher.example', 'user@xn--bcher-kva.example', 'xn--bcher-kva.example', false],
    ['user@[192.0.2.1]', 'user@[192.0.2.1]', '[192.0.2.1]', false],
  ];
  for (const [input, address, domain, routing] of accepted) {
    test(`accepts ${input} as ${address}`, () => {
      const result = parseMailbox(input);
      assert.ok(result.ok, JSON.stringify(result));
      assert.equal(result.mailbox.address, address);
      assert.equal(result.mailbox.domain, domain);
      assert.equal(result.mailbox.hasRoutingCharacters, routing);
    });
  }

  const refused = ['user@allowed.example@evil.example', 'user', '@allowed.example', 'user@', 'user@@example.com', '"unterminated@example.com', '"x"y@example.com', 'a..b@example.com', '.a@example.com', 'user@exa mple.com', 'user@-bad.example', 'user@example..com', `${'x'.repeat(65)}@example.com`, 'us er@example.com'];
  for (const input of refused) {
    test(`refuses ${JSON.stringify(input)}`, () => {
      assert.equal(parseMailbox(input).ok, false);
    });
  }

  test('a non-ASCII local part is flagged (needs SMTPUTF8)', () => {
    const result = parseMailbox('jörg@example.com');
    assert.ok(result.ok);
    assert.equal(result.mailbox.asciiLocalPart, false);
  });
});

describe('normaliseDomain', () => {
  test('folds case, drops one trailing dot, converts IDN to punycode', () => {
    assert.equal(normaliseDomain('ALLOWED.Example.'), 'allowed.example');
    assert.equal(normaliseDomain('BÜCHER.example'), 'xn--bcher-kva.example');
    assert.equal(normaliseDomain('example.com..'), null);
    assert.equal(normaliseDomain(''), null);
  });
});
