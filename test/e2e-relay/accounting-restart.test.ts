// Accounting records across a stop and a restart of a real relay process on the same spool
// (docs/accounting.md): for a graceful stop (SIGTERM) and a crash (SIGKILL once the deliveries
// are older than the sync interval), smtplib submits messages with several recipients and an
// X-Job header, the relay delivers them to a sink, stops, starts again and delivers one more.
// Then the JSON lines and the CSV file hold exactly one receipt (r) and one delivery (d) per
// recipient of every message, with the job id (taken out of the delivered message), the CSV
// header once at the top, and as many CSV rows as JSON lines. And a crash before a life's
// batches were synced: the delivered messages stay in the spool until their records are durable
// (a message with a recipient still pending stays anyway), so the restart writes the lost d
// records again from the spool, once each, and sends nothing again.
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, test } from 'node:test';
import { freePort, loopbackRelayConfig, metricValue, startRelayProcess, temporaryDirectory, writeRelayConfig, type RelayProcess } from '../fixtures/relay-process.ts';
import { loopbackAddresses, startSinkMx, type SinkMx } from '../fixtures/sink-mx.ts';
import { smtplibSend } from '../fixtures/smtp-clients.ts';
import { waitForRelay } from '../fixtures/wait-for-relay.ts';

const SYNC_INTERVAL_MS = 200;
const RECIPIENTS = 3;
let sink: SinkMx;
const cleanups: (() => Promise<unknown>)[] = [];

before(async () => {
  sink = await startSinkMx({ address: loopbackAddresses(1)[0]! });
  cleanups.push(() => sink.close());
});

after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

async function submit(port: number, job: string, tag: string): Promise<string[]> {
  const to = Array.from({ length: RECIPIENTS }, (_, index) => `${tag}-${index}@example.test`);
  const sent = await smtplibSend({ host: '127.0.0.1', port, mode: 'plain', from: 'billing@sender.test', to, message: `X-Job: ${job}\r\nSubject: ${tag}\r\n\r\n${tag}\r\n` });
  assert.match(sent.stdout, /^OK/, `smtplib: ${sent.stdout}${sent.stderr}`);
  return to;
}

const arrived = (recipients: readonly string[]) => recipients.every((recipient) => sink.messages.some((message) => message.to.includes(recipient)));

for (const stop of ['SIGTERM', 'SIGKILL'] as const) {
  test(`after a ${stop} and a restart every recipient has exactly one r and one d record, with its job id, in JSON lines and CSV alike`, async () => {
    const directory = await temporaryDirectory(`vmta-accounting-${stop}-`);
    cleanups.push(directory.remove);
    const port = await freePort();
    const adminPort = await freePort();
    await writeRelayConfig(directory.path, loopbackRelayConfig(port, adminPort, {
      pool: { name: 'pool-acct', domainDefaults: [{ match: '*', smtpHost: `${sink.address}:${sink.port}`, tlsPolicy: 'none' }], virtualMtas: [{ name: 'vmta-1', hostname: 'out.acct.test' }] },
      delivery: { accounting: { file: 'acct.jsonl', csvFile: 'acct.csv', receipts: true, syncInterval: `${SYNC_INTERVAL_MS}ms` } },
    }));
    let relay: RelayProcess = await startRelayProcess({ configDir: directory.path, adminPort });
    cleanups.push(() => relay.kill('SIGKILL'));
    const tag = stop.toLowerCase();
    const before = [...(await submit(port, 'campaign-1', `${tag}-a`)), ...(await submit(port, 'campaign-2', `${tag}-b`))];
    await waitForRelay('the first messages at the sink', () => (arrived(before) ? true : undefined), [relay]);
    // A record is written and synced at most syncInterval after it is made; a crash before that can lose it (docs/accounting.md).
    if (stop === 'SIGKILL') await sleep(SYNC_INTERVAL_MS * 5);
    await relay.kill(stop);
    relay = await startRelayProcess({ configDir: directory.path, adminPort });
    const afterRestart = await submit(port, 'campaign-3', `${tag}-c`);
    await waitForRelay('the message after the restart at the sink', () => (arrived(afterRestart) ? true : undefined), [relay]);
    await relay.kill('SIGTERM');

    const lines = (await readFile(path.join(directory.path, 'acct.jsonl'), 'utf8')).trim().split('\n').map((line) => JSON.parse(line) as Record<string, string>);
    const csv = (await readFile(path.join(directory.path, 'acct.csv'), 'utf8')).trim().split('\r\n');
    const recipients = [...before, ...afterRestart];
    const jobOf = (recipient: string) => ({ a: 'campaign-1', b: 'campaign-2', c: 'campaign-3' })[recipient.split('-')[1] as 'a' | 'b' | 'c'];
    for (const recipient of recipients) {
      const mine = lines.filter((line) => line.recipient === recipient);
      assert.deepEqual(mine.map((line) => line.type).sort(), ['d', 'r'], `one receipt and one delivery for ${recipient}: ${JSON.stringify(mine)}`);
      assert.ok(mine.every((line) => line.jobId === jobOf(recipient)), `job id ${jobOf(recipient)} on ${recipient}'s records`);
    }
    assert.equal(lines.length, 2 * recipients.length, 'no other records');
    assert.ok(csv[0]!.startsWith('type,timeLogged,'), `the CSV header first: ${csv[0]}`);
    assert.equal(csv.filter((row) => row === csv[0]).length, 1, 'the header once, not again after the restart');
    assert.equal(csv.length - 1, lines.length, 'as many CSV rows as JSON lines');
    const delivered = sink.messages.filter((message) => recipients.some((recipient) => message.to.includes(recipient)));
    assert.ok(delivered.every((message) => !/^x-job:/im.test(message.body.toString('latin1').split('\r\n\r\n')[0]!)), 'X-Job is taken out before sending');
    console.log(`accounting_restart stop=${stop} recipients=${recipients.length} json_lines=${lines.length} csv_rows=${csv.length - 1}`);
  });
}

test('a crash before the accounting batch was synced loses no d record: the restart writes each once from the spool and sends nothing again', async () => {
  const directory = await temporaryDirectory('vmta-accounting-unsynced-');
  cleanups.push(directory.remove);
  const port = await freePort();
  const adminPort = await freePort();
  const closedPort = await freePort(); // later.test's host: nothing listens, its recipient stays pending
  const config = (syncInterval: string) => loopbackRelayConfig(port, adminPort, {
    pool: { name: 'pool-acct', domainDefaults: [{ match: '*', smtpHost: `${sink.address}:${sink.port}`, tlsPolicy: 'none' }, { match: 'later.test', smtpHost: `127.0.0.1:${closedPort}`, retryAfter: ['1h'] }], virtualMtas: [{ name: 'vmta-1', hostname: 'out.acct.test' }] },
    delivery: { accounting: { file: 'acct.jsonl', csvFile: 'acct.csv', syncInterval } },
  });
  const files = { json: path.join(directory.path, 'acct.jsonl'), csv: path.join(directory.path, 'acct.csv') };
  const jsonLines = async () => (await readFile(files.json, 'utf8').catch(() => '')).trim().split('\n').filter(Boolean).map((line) => JSON.parse(line) as Record<string, string | number>);

  // First life: records synced as usual (the files' tails then tell what is there).
  await writeRelayConfig(directory.path, config('200ms'));
  let relay: RelayProcess = await startRelayProcess({ configDir: directory.path, adminPort });
  cleanups.push(() => relay.kill('SIGKILL'));
  const early = await submit(port, 'campaign-0', 'unsynced-early');
  await waitForRelay('the first message at the sink', () => (arrived(early) ? true : undefined), [relay]);
  await sleep(1000);
  await relay.kill('SIGTERM');
  const firstLife = (await jsonLines()).length;
  assert.ok(firstLife >= early.length, `the first life's records are in the file (${firstLife})`);
  await sleep(6000); // past the recovery's 5 s slack after the files' newest records

  // Second life, syncing once a minute: killed after delivering, before any of its batches was synced.
  await writeRelayConfig(directory.path, config('60s'));
  relay = await startRelayProcess({ configDir: directory.path, adminPort });
  const recipients = [...(await submit(port, 'campaign-1', 'unsynced-a')), ...(await submit(port, 'campaign-2', 'unsynced-b'))];
  const mixed = ['unsynced-m-0@example.test', 'unsynced-m-1@later.test'];
  const sentMixed = await smtplibSend({ host: '127.0.0.1', port, mode: 'plain', from: 'billing@sender.test', to: mixed, message: 'X-Job: campaign-3\r\nSubject: mixed\r\n\r\nmixed\r\n' });
  assert.match(sentMixed.stdout, /^OK/);
  await waitForRelay('the messages at the sink', () => (arrived([...recipients, mixed[0]!]) ? true : undefined), [relay]);
  await sleep(500); // the results recorded in the spool (a group commit of a few ms)
  assert.equal(await metricValue(relay.adminUrl, 'vmta_spool_messages'), 3, 'two delivered messages kept while their records are not durable, and the one still pending for later.test');
  assert.equal((await jsonLines()).length, firstLife, 'nothing of the second life synced before the crash');
  await relay.kill('SIGKILL');

  // Third life: the lost records are written again; a graceful stop syncs them and removes the finished messages.
  relay = await startRelayProcess({ configDir: directory.path, adminPort });
  await relay.kill('SIGTERM');
  // Fourth life: nothing is left to restore, nothing is written twice; later.test's recipient still waits.
  relay = await startRelayProcess({ configDir: directory.path, adminPort });
  await waitForRelay('only the pending message in the spool', async () => ((await metricValue(relay.adminUrl, 'vmta_spool_messages')) === 1 ? true : undefined), [relay]);
  await relay.kill('SIGTERM');

  const lines = await jsonLines();
  const csv = (await readFile(files.csv, 'utf8')).trim().split('\r\n');
  const delivered = [...early, ...recipients, mixed[0]!];
  const jobOf = (recipient: string) => ({ early: 'campaign-0', a: 'campaign-1', b: 'campaign-2', m: 'campaign-3' })[recipient.split('-')[1] as 'early' | 'a' | 'b' | 'm'];
  for (const recipient of delivered) {
    const mine = lines.filter((line) => line.recipient === recipient && (line.type === 'd' || line.type === 'b'));
    assert.deepEqual(mine.map((line) => [line.type, line.attempt, line.dsnStatus, line.jobId]), [['d', 1, '2.0.0', jobOf(recipient)]], `one d record for ${recipient}: ${JSON.stringify(mine)}`);
    assert.equal(csv.filter((row) => row.startsWith('d,') && row.includes(`,${recipient},`)).length, 1, `one d row in the CSV for ${recipient}`);
  }
  assert.equal(lines.filter((line) => line.recipient === mixed[1] && (line.type === 'd' || line.type === 'b')).length, 0, 'the pending recipient has no final record');
  assert.equal(lines.filter((line) => line.type === 'd').length, delivered.length, 'no other d records');
  const sent = delivered.map((recipient) => sink.messages.filter((message) => message.to.includes(recipient)).length);
  assert.deepEqual(sent, delivered.map(() => 1), 'each recipient received its message once: nothing was sent again');
  console.log(`accounting_unsynced_crash delivered=${delivered.length} d_json=${lines.filter((line) => line.type === 'd').length} d_csv=${csv.filter((row) => row.startsWith('d,')).length}`);
});
