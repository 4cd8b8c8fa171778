// The EventLog bounds the lines a flood can cause: per kind of line, `burst` per window, then one
// summary with the count left out; other kinds are not held back by a flooded one.
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { Writable } from 'node:stream';
import { test } from 'node:test';
import { pino } from 'pino';
import { EVENT_LOG_BURST, EVENT_LOG_WINDOW_MS, EventLog } from '../../mta/observe/event-log.ts';

function capturingLogger(): { logger: pino.Logger; records: Array<Record<string, unknown>> } {
  const records: Array<Record<string, unknown>> = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString('utf8').split('\n')) if (line) records.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  });
  return { logger: pino({ level: 'info' }, stream), records };
}

const settle = () => new Promise((resolve) => setImmediate(resolve));

for (const { burst, sent } of [{ burst: 1, sent: 1 }, { burst: 5, sent: 4 }, { burst: 5, sent: 5 }, { burst: 5, sent: 6 }, { burst: 20, sent: 1000 }]) {
  test(`burst ${burst}, ${sent} lines of one kind in a window: min(sent, burst) written, then one summary counting the rest`, async () => {
    const { logger, records } = capturingLogger();
    let now = 0;
    const events = new EventLog(logger, { burst, windowMs: 1000, now: () => now });
    for (let index = 0; index < sent; index++) events.write('refusal relay_denied', 'info', { client: `192.0.2.${index % 250}` }, 'refused: relay denied');
    await settle();
    assert.equal(records.filter((record) => record.msg === 'refused: relay denied').length, Math.min(sent, burst));
    assert.ok(records.every((record) => record.event === 'refusal relay_denied'));
    now = 1000;
    events.write('refusal relay_denied', 'info', { client: '192.0.2.1' }, 'refused: relay denied');
    await settle();
    const summaries = records.filter((record) => record.suppressed !== undefined);
    assert.deepEqual(summaries.map((record) => record.suppressed), sent > burst ? [sent - burst] : []);
    // The new window writes again.
    assert.equal(records.at(-1)!.msg, 'refused: relay denied');
  });
}

test('a flooded kind does not hold back another kind', async () => {
  const { logger, records } = capturingLogger();
  const events = new EventLog(logger, { burst: 3, windowMs: 60_000 });
  for (let index = 0; index < 100; index++) events.write('refusal relay_denied', 'info', {}, 'refused: relay denied');
  events.write('delivery bounced', 'info', { reply: '550 5.1.1 no such user' }, 'bounced');
  events.flush();
  await settle();
  assert.equal(records.filter((record) => record.msg === 'bounced').length, 1);
  assert.deepEqual(records.filter((record) => record.suppressed !== undefined).map((record) => [record.event, record.suppressed]), [['refusal relay_denied', 97]]);
});

test('the summary comes by itself when the flood stops (no further line needed)', async () => {
  const { logger, records } = capturingLogger();
  const events = new EventLog(logger, { burst: 2, windowMs: 50 });
  for (let index = 0; index < 10; index++) events.write('lockout', 'warn', {}, 'client locked out');
  await new Promise((resolve) => setTimeout(resolve, 200));
  const summary = records.find((record) => record.suppressed !== undefined);
  assert.equal(summary?.suppressed, 8);
  assert.equal(summary?.level, 40, 'the summary keeps the level of the lines it stands for');
});

test('docs/operations.md states the limits the EventLog applies', async () => {
  const page = await readFile(new URL('../../docs/operations.md', import.meta.url), 'utf8');
  assert.ok(page.includes(`at most ${EVENT_LOG_BURST} lines of one \`event\` per ${EVENT_LOG_WINDOW_MS / 1000} seconds`), 'the burst and window of the page are the code\'s');
});
