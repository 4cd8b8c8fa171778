// When the relay gives memory back: one memory-reducing collection once a burst of at least
// 1,000 accepted connections is followed by a quiet interval (under 50), never while
// connections keep coming, never twice for one burst, and never without the gc function.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { IdleMemoryRelease } from '../../mta/idle-memory-release.ts';

function releaser(): { release: IdleMemoryRelease; collections: unknown[] } {
  const collections: unknown[] = [];
  const release = new IdleMemoryRelease((options) => void collections.push(options));
  release.stop();
  return { release, collections };
}

function accept(release: IdleMemoryRelease, connections: number): void {
  for (let index = 0; index < connections; index++) release.noteWork();
}

test('a burst followed by a quiet interval runs one last-resort full collection', () => {
  const { release, collections } = releaser();
  accept(release, 1_000);
  assert.equal(release.check(), false, 'the burst interval itself is not quiet');
  accept(release, 49);
  assert.equal(release.check(), true);
  assert.deepEqual(collections, [{ type: 'major', execution: 'sync', flavor: 'last-resort' }]);
  assert.equal(release.check(), false, 'one collection per burst');
  assert.equal(collections.length, 1);
});

test('no collection while connections keep coming, however many', () => {
  const { release, collections } = releaser();
  for (let interval = 0; interval < 20; interval++) {
    accept(release, 500);
    assert.equal(release.check(), false);
  }
  assert.equal(collections.length, 0);
  assert.equal(release.check(), true, 'and one as soon as they stop');
});

test('no collection after fewer than 1,000 connections, quiet or not', () => {
  const { release, collections } = releaser();
  for (let interval = 0; interval < 30; interval++) {
    accept(release, 33);
    release.check();
  }
  assert.equal(collections.length, 0);
});

test('without the gc function (no --expose-gc) nothing is scheduled or run', () => {
  const release = new IdleMemoryRelease(undefined);
  accept(release, 5_000);
  assert.equal(release.check(), false);
  release.stop();
});
