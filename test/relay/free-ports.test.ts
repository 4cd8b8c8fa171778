// The tests' port picker: the ports one test process is given are distinct and below the
// kernel's ephemeral range, so two listeners of one test never get the same port.
import assert from 'node:assert/strict';
import test from 'node:test';
import { freePort } from '../fixtures/relay-process.ts';

test('freePort never gives one process the same port twice', async () => {
  const given = new Set<number>();
  // 1,500 picks out of 12,768 ports: with random picks alone a repeat is all but certain (p > 0.99).
  for (let pick = 0; pick < 1500; pick += 1) {
    const port = await freePort();
    assert.ok(port >= 20_000 && port < 32_768, `port ${port} outside 20000-32767`);
    assert.ok(!given.has(port), `port ${port} given twice (pick ${pick})`);
    given.add(port);
  }
});
