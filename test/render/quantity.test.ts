import assert from 'node:assert/strict';
import { test } from 'node:test';
import { quantityBytes } from '../../operator/render/quantity.ts';

test('a quantity in every suffix, whole or with a fraction, is the bytes it means (rounded up)', () => {
  const factors: [string, number][] = [['', 1], ['k', 1e3], ['M', 1e6], ['G', 1e9], ['T', 1e12], ['Ki', 1024], ['Mi', 1024 ** 2], ['Gi', 1024 ** 3], ['Ti', 1024 ** 4]];
  for (const [suffix, factor] of factors) {
    for (const amount of ['0', '1', '7', '100', '1.5', '0.25']) {
      assert.equal(quantityBytes(`${amount}${suffix}`), Math.ceil(Number(amount) * factor), `${amount}${suffix}`);
    }
  }
  assert.equal(quantityBytes('1500m'), 2, 'milli-bytes round up to a whole byte');
});

test('a string that is not a quantity is refused, naming it', () => {
  for (const bad of ['', 'Mi', '1 Mi', '1mi', '-1', '1e3', '1.Mi']) {
    assert.throws(() => quantityBytes(bad), (error: Error) => error.message.startsWith(`not a quantity: ${JSON.stringify(bad)}`));
  }
});
