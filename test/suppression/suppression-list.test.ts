// The suppression list's store on a real directory: lookups without letter case over a class of
// address forms, durability across reopen, torn lines skipped, the merge rule peers rely on
// (latest record per address wins, removals are tombstones), and compaction at open.
import assert from 'node:assert/strict';
import { appendFile, mkdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { after, test } from 'node:test';
import { parseMailbox } from '../../mta/inbound/address.ts';
import { SUPPRESSION_LOG, SuppressionList, type SuppressionRecord } from '../../mta/suppression/suppression-list.ts';
import { temporaryDirectory } from '../fixtures/relay-process.ts';

const cleanups: (() => Promise<void>)[] = [];
after(() => Promise.all(cleanups.map((cleanup) => cleanup())));

async function stateDir(): Promise<string> {
  const directory = await temporaryDirectory('vmta-suppression-');
  cleanups.push(directory.remove);
  return path.join(directory.path, 'state');
}

const add = (address: string, addedAt: number, origin = 'relay-a'): SuppressionRecord => ({ op: 'add', address, reason: 'bad-mailbox', source: 'delivery', addedAt, status: '5.1.1', detail: '550 5.1.1 No such user', origin });
const remove = (address: string, at: number, origin = 'relay-a'): SuppressionRecord => ({ op: 'remove', address, at, source: 'admin', origin });

/** Local parts and domains as clients write them; each normalised by the relay's own parser, as RCPT TO is. */
function addressClass(): string[] {
  const locals = ['user', 'First.Last', 'user+tag', '"quoted local"', 'o\'brien', 'UPPER', 'x'];
  const domains = ['example.net', 'Example.NET', 'sub.example.net.', 'bücher.example', 'xn--bcher-kva.example'];
  const addresses = new Set<string>();
  for (const local of locals) {
    for (const domain of domains) {
      const parsed = parseMailbox(`${local}@${domain}`);
      assert.ok(parsed.ok, `${local}@${domain} parses`);
      addresses.add(parsed.mailbox.address);
    }
  }
  return [...addresses];
}

/** Spellings of one address that must match it: letter case of local part and domain flipped. */
function caseSpellings(address: string): string[] {
  const flip = (text: string) => [...text].map((char, index) => (index % 2 === 0 ? char.toUpperCase() : char.toLowerCase())).join('');
  return [address, address.toUpperCase(), address.toLowerCase(), flip(address)];
}

test('every address of the class is found in every letter case once added, and no other address is', async () => {
  const list = await SuppressionList.open(await stateDir());
  const addresses = addressClass();
  const suppressed = addresses.filter((_, index) => index % 2 === 0);
  await list.apply(suppressed.map((address, index) => add(address, 1000 + index)));
  const suppressedKeys = new Set(suppressed.map((address) => address.toLowerCase()));
  for (const address of addresses) {
    for (const spelling of caseSpellings(address)) {
      assert.equal(list.lookup(spelling) !== undefined, suppressedKeys.has(address.toLowerCase()), `${spelling} (from ${address})`);
    }
  }
  assert.equal(list.size, suppressedKeys.size);
  await list.close();
});

test('entries survive a reopen with reason, time, status, source and origin', async () => {
  const dir = await stateDir();
  const list = await SuppressionList.open(dir);
  await list.apply([add('gone@example.net', 1_700_000_000_000), { op: 'add', address: 'ops@example.org', reason: 'operator', source: 'admin', addedAt: 1_700_000_000_500, detail: 'complaint', origin: 'relay-b' }]);
  await list.apply([remove('gone@example.net', 1_700_000_001_000), add('later@example.net', 1_700_000_002_000)]);
  await list.close();
  const reopened = await SuppressionList.open(dir);
  assert.equal(reopened.lookup('gone@example.net'), undefined, 'the removal is durable');
  assert.deepEqual(reopened.lookup('OPS@example.org'), { address: 'ops@example.org', reason: 'operator', source: 'admin', addedAt: 1_700_000_000_500, detail: 'complaint', origin: 'relay-b' });
  assert.deepEqual(reopened.entries().map((entry) => entry.address), ['ops@example.org', 'later@example.net']);
  assert.deepEqual(reopened.entries({ domain: 'EXAMPLE.NET' }).map((entry) => entry.address), ['later@example.net']);
  await reopened.close();
});

test('a torn last line and garbage lines are skipped; every complete record before and after them counts', async () => {
  const dir = await stateDir();
  const list = await SuppressionList.open(dir);
  await list.apply([add('one@example.net', 1)]);
  await list.close();
  const file = path.join(dir, SUPPRESSION_LOG);
  const complete = `\n${JSON.stringify(add('two@example.net', 2))}\n`;
  // A torn append (half a record), a record with a field of the wrong type, then a complete record.
  await appendFile(file, `${complete.slice(0, complete.length / 2)}\n{"op":"add","address":7}\n${JSON.stringify(add('three@example.net', 3))}\n`);
  const reopened = await SuppressionList.open(dir);
  assert.deepEqual(reopened.entries().map((entry) => entry.address), ['one@example.net', 'three@example.net']);
  await reopened.close();
});

test('merging: the latest record per address wins whatever the order, a removal beats an older addition, at equal times the addition wins', async () => {
  const records = [add('a@example.net', 10), remove('a@example.net', 20), add('b@example.net', 30), remove('b@example.net', 25), add('c@example.net', 40), remove('c@example.net', 40), add('d@example.net', 5, 'relay-b'), add('D@example.net', 6, 'relay-c')];
  const orders = [records, [...records].reverse(), [...records.slice(3), ...records.slice(0, 3)]];
  const results: string[][] = [];
  for (const order of orders) {
    const list = await SuppressionList.open(await stateDir());
    for (const record of order) await list.apply([record]);
    results.push(list.entries().map((entry) => `${entry.address}@${entry.addedAt}/${entry.origin}`));
    await list.close();
  }
  assert.deepEqual(results[0], ['D@example.net@6/relay-c', 'b@example.net@30/relay-a', 'c@example.net@40/relay-a']);
  for (const result of results) assert.deepEqual(result, results[0]);
});

test('apply returns only the records that changed the list, so a peer\'s echo is not applied twice', async () => {
  const list = await SuppressionList.open(await stateDir());
  assert.equal((await list.apply([add('x@example.net', 1), add('x@example.net', 1)])).length, 1);
  assert.equal((await list.apply([add('X@EXAMPLE.NET', 1)])).length, 0);
  assert.equal((await list.apply([remove('x@example.net', 0)])).length, 0, 'an older removal changes nothing');
  assert.equal((await list.apply([remove('x@example.net', 2)])).length, 1);
  assert.equal(list.size, 0);
  await list.close();
});

test('a log of mostly superseded records is compacted at open to one record per address, with nothing lost', async () => {
  const dir = await stateDir();
  const list = await SuppressionList.open(dir);
  for (let round = 0; round < 3; round += 1) {
    await list.apply(Array.from({ length: 500 }, (_, index) => (round % 2 === 0 ? add(`user${index}@example.net`, round * 1000 + index) : remove(`user${index}@example.net`, round * 1000 + index))));
  }
  await list.close();
  const file = path.join(dir, SUPPRESSION_LOG);
  const before = (await readFile(file, 'utf8')).split('\n').filter(Boolean).length;
  assert.equal(before, 1500);
  const reopened = await SuppressionList.open(dir);
  const after = (await readFile(file, 'utf8')).split('\n').filter(Boolean).length;
  assert.equal(after, 500);
  assert.equal(reopened.size, 500);
  assert.equal(reopened.lookup('user499@example.net')?.addedAt, 2499);
  await reopened.close();
});

test('a log that cannot be read is an error naming the file', async () => {
  const dir = await stateDir();
  // A directory where the log should be: unreadable as a file, for root too.
  await mkdir(path.join(dir, SUPPRESSION_LOG), { recursive: true });
  await assert.rejects(SuppressionList.open(dir), /suppression list .*suppression\.log: cannot read it/);
});
