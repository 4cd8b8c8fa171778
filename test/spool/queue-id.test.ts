import assert from 'node:assert/strict';
import { it } from 'node:test';
import { isQueueId, QUEUE_ID_LENGTH, QueueIdGenerator, queueIdTime } from '../../mta/spool/queue-id.ts';

it('makes short, file-name safe ids that encode their time', () => {
  const time = Date.UTC(2026, 10, 23, 14, 0, 0);
  const id = new QueueIdGenerator(() => time).next();
  assert.equal(id.length, QUEUE_ID_LENGTH);
  assert.match(id, /^[0-9a-z]+$/);
  assert.ok(isQueueId(id));
  assert.equal(queueIdTime(id), time);
});

it('sorts ids in allocation order, within one millisecond and when the clock steps back', () => {
  const clock = [1000, 1000, 1000, 999, 998, 1001, 1001];
  const generator = new QueueIdGenerator(() => clock.shift() ?? 2000);
  const ids = Array.from({ length: 8 }, () => generator.next());
  assert.deepEqual([...ids].sort(), ids);
  assert.equal(new Set(ids).size, ids.length);
});

it('does not collide between two generators (two processes, or a restart) in the same millisecond', () => {
  const first = new QueueIdGenerator(() => 5000);
  const second = new QueueIdGenerator(() => 5000);
  const ids = new Set<string>();
  for (let index = 0; index < 20; index++) {
    ids.add(first.next());
    ids.add(second.next());
  }
  assert.equal(ids.size, 40);
});

it('refuses strings that are not queue ids', () => {
  for (const value of ['', '../../etc/passwd', '01jd3k5m2q0000abc', '01jd3k5m2q0000abcdu', '01JD3K5M2Q0000ABCD']) assert.equal(isQueueId(value), false, value);
});
