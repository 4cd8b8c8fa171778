// SIGKILL a real process that is storing messages, at random moments, again and again; after each
// kill the spool must hold every message whose store() had resolved (exactly once, complete) and
// every recipient result that had been recorded.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { buffer } from 'node:stream/consumers';
import { after, before, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { SEGMENT_HEADER_LENGTH } from '../../mta/spool/segment-format.ts';
import { FileSpool } from '../../mta/spool/spool.ts';

const WRITER = path.join(import.meta.dirname, '../fixtures/spool-writer.ts');
const ROUNDS = 8;

let directory: string;
before(async () => {
  directory = await fs.mkdtemp(path.join(os.tmpdir(), 'spool-crash-'));
});
after(async () => {
  await fs.rm(directory, { recursive: true, force: true });
});

interface Acknowledged {
  recipients: Map<string, number>;
  delivered: Set<string>;
}

/** Runs the writer until it has acknowledged at least one store, then a random while longer, then SIGKILLs it. */
async function runAndKill(acknowledged: Acknowledged): Promise<void> {
  const child = spawn(process.execPath, [WRITER, directory], { stdio: ['ignore', 'pipe', 'inherit'] });
  let pending = '';
  let firstAck: () => void = () => undefined;
  const acked = new Promise<void>((resolve) => (firstAck = resolve));
  child.stdout.setEncoding('utf8');
  child.stdout.on('data', (chunk: string) => {
    pending += chunk;
    const lines = pending.split('\n');
    pending = lines.pop() ?? '';
    for (const line of lines) {
      const [first, second] = line.split(' ');
      if (first === 'D' && second) acknowledged.delivered.add(second);
      else if (first && second) acknowledged.recipients.set(first, Number(second));
      firstAck();
    }
  });
  const exited = new Promise<NodeJS.Signals | null>((resolve) => child.on('exit', (_code, signal) => resolve(signal)));
  const drained = new Promise((resolve) => child.stdout.once('close', resolve));
  await Promise.race([acked, exited]);
  await sleep(Math.floor(Math.random() * 300));
  child.kill('SIGKILL');
  assert.equal(await exited, 'SIGKILL', 'the writer must still be running when it is killed');
  // Lines already written to the pipe before the kill are still delivered; let them drain.
  await drained;
}

it('keeps every acknowledged message and recorded result across repeated SIGKILLs, with no partial message', { timeout: 300_000 }, async () => {
  const acknowledged: Acknowledged = { recipients: new Map(), delivered: new Set() };
  for (let round = 0; round < ROUNDS; round++) {
    await runAndKill(acknowledged);
    const spool = await FileSpool.open(directory);
    const seen = new Set<string>();
    for await (const { id, envelope } of spool.scan()) {
      assert.ok(!seen.has(id), `message ${id} appears twice`);
      seen.add(id);
      const message = await buffer(spool.readMessage(id));
      assert.equal(message.length, envelope.size, `message ${id} is complete`);
      const number = Number(/^Subject: (\d+)\r\n\r\n/.exec(message.toString('latin1', 0, 40))?.[1]);
      const body = Buffer.alloc(1024 + (number % 7) * 4096, `line ${number}\r\n`);
      assert.ok(message.subarray(message.length - body.length).equals(body), `message ${id} has the body that was stored`);
      const recipients = acknowledged.recipients.get(id);
      if (recipients !== undefined) assert.equal(envelope.recipients.length, recipients);
      if (acknowledged.delivered.has(id)) assert.equal(envelope.recipients[0]?.status, 'delivered', `recorded result of ${id} survived`);
    }
    const missing = [...acknowledged.recipients.keys()].filter((id) => !seen.has(id));
    assert.deepEqual(missing, [], `round ${round}: acknowledged messages missing after SIGKILL`);
    const files = (await fs.readdir(path.join(directory, 'queue'), { recursive: true, withFileTypes: true })).filter((entry) => entry.isFile());
    assert.deepEqual(files.filter((entry) => entry.name.endsWith('.tmp')), [], 'no temp file survives an open');
    const segments = files.filter((entry) => entry.name.endsWith('.seg'));
    const emptySegments = (await Promise.all(segments.map(async (entry) => ((await fs.stat(path.join(entry.parentPath, entry.name))).size <= SEGMENT_HEADER_LENGTH ? entry.name : undefined)))).filter(Boolean);
    assert.deepEqual(emptySegments, [], 'an open deletes the spare segments a killed writer left');
    assert.ok(segments.length > 0 || seen.size === 0, 'messages live in segment files');
    await spool.close();
  }
  assert.ok(acknowledged.recipients.size > ROUNDS, `the writer acknowledged ${acknowledged.recipients.size} messages`);
});
