// Accounting output: JSON lines that parse back to the record, PowerMTA CSV that Python's csv
// module reads back field for field over a class of awkward values (commas, quotes, CR/LF,
// non-ASCII, empty and null fields), the header line of every CSV file, batched syncing within
// syncInterval, rotation by size and by UTC interval with names that sort, retention by count and
// by age, a file whose header changed rotated away, and an unwritable file reported.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync, utimesSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, test } from 'node:test';
import { AccountingLog, type AccountingRecord } from '../../mta/observe/accounting.ts';
import { AccountingFile, rotatedFiles } from '../../mta/observe/accounting-file.ts';
import { CSV_HEADER } from '../../mta/observe/accounting-record.ts';
import { temporaryDirectory } from '../fixtures/relay-process.ts';

const cleanups: (() => Promise<void>)[] = [];
after(() => Promise.all(cleanups.map((cleanup) => cleanup())));
async function directory(): Promise<string> {
  const made = await temporaryDirectory('vmta-acct-');
  cleanups.push(made.remove);
  return made.path;
}

function record(overrides: Partial<AccountingRecord> = {}): AccountingRecord {
  return {
    type: 'd', time: '2026-01-01T00:00:05.000Z', timeQueued: '2026-01-01T00:00:00.000Z', queueId: 'q1', virtualMta: 'vmta-1', pool: 'pool-a', tenant: 'mail',
    user: 'app', relayGrant: 'auth', jobId: 'spring-sale', envId: null, listener: 'submission', clientAddress: '192.0.2.7', heloName: 'app.example.com',
    sourceAddress: '192.0.2.10', sender: 'a@example.com', recipient: 'b@example.net', orcpt: null, domain: 'example.net', mxHost: 'mx.example.net', mxIp: '198.51.100.1',
    result: 'delivered', dsnAction: 'relayed', dsnStatus: '2.0.0', diagnostic: '250 2.0.0 Ok', bounceCategory: null, attempt: 1, size: 1234,
    tlsVersion: 'TLSv1.3', tlsCipher: 'TLS_AES_256_GCM_SHA384', durationMs: 12, ...overrides,
  };
}

/** Values a CSV writer gets wrong: separators, quotes, line breaks, leading/trailing spaces, non-ASCII, empty. */
const AWKWARD = ['plain', 'with,comma', 'with "quotes"', '"', 'line\r\nbreak', 'bare\nlf', 'cr\ronly', ' spaced ', 'ünïcödé ✉', '', ',"\r\n'];

/** Rows of a CSV file as Python's csv.DictReader reads them. */
function pythonCsvRows(file: string): Record<string, string>[] {
  const script = 'import csv,json,sys\nwith open(sys.argv[1], newline="", encoding="utf-8") as f:\n  print(json.dumps(list(csv.DictReader(f))))';
  return JSON.parse(execFileSync('python3', ['-c', script, file], { encoding: 'utf8' })) as Record<string, string>[];
}

test('CSV as PowerMTA writes it reads back in Python field for field, and JSON lines parse back to the record', async () => {
  const dir = await directory();
  const log = new AccountingLog({ file: path.join(dir, 'acct.jsonl'), csvFile: path.join(dir, 'acct.csv') });
  const records = AWKWARD.flatMap((value, index) => [
    record({ queueId: `q${index}`, diagnostic: value, jobId: value, user: value || null }),
    record({ queueId: `r${index}`, type: 'r', result: 'received', dsnAction: null, dsnStatus: '', diagnostic: '', jobId: null, heloName: value, sender: value === '' ? '' : 'x@example.com' }),
    record({ queueId: `b${index}`, type: 'b', result: 'bounced', dsnAction: 'failed', dsnStatus: '5.1.1', bounceCategory: 'bad-mailbox', diagnostic: `550 ${value}`, tlsVersion: null, tlsCipher: null }),
  ]);
  for (const each of records) log.write(each);
  await log.close();
  const json = readFileSync(path.join(dir, 'acct.jsonl'), 'utf8').trimEnd().split('\n').map((line) => JSON.parse(line) as AccountingRecord);
  assert.deepEqual(json, records);
  assert.ok(readFileSync(path.join(dir, 'acct.csv'), 'utf8').startsWith(CSV_HEADER));
  const rows = pythonCsvRows(path.join(dir, 'acct.csv'));
  assert.equal(rows.length, records.length);
  for (const [index, row] of rows.entries()) {
    const expected = records[index]!;
    const what = `row ${index} (${JSON.stringify(expected.diagnostic)})`;
    assert.equal(row.type, expected.type, what);
    assert.equal(row.rcpt, expected.recipient, what);
    assert.equal(row.orig, expected.sender, what);
    assert.equal(row.dsnDiag, expected.diagnostic, what);
    assert.equal(row.jobId, expected.jobId ?? '', what);
    assert.equal(row.rcvSmtpUser, expected.user ?? '', what);
    assert.equal(row.srcMta, expected.heloName ?? '', what);
    assert.equal(row.bounceCat, expected.bounceCategory ?? '', what);
    assert.equal(row.vmta, expected.virtualMta, what);
    assert.equal(row.vmtaPool, expected.pool, what);
    assert.equal(row.tenant, expected.tenant, what);
    assert.equal(row.dlvSize, String(expected.size), what);
    assert.equal(row.queue, `${expected.domain}/${expected.virtualMta}`, what);
    assert.equal(row.timeLogged, '2026-01-01 00:00:05+0000', what);
    assert.equal(row.timeQueued, '2026-01-01 00:00:00+0000', what);
  }
});

test('records wait in memory at most syncInterval, then one batch is written and synced', async () => {
  const dir = await directory();
  const file = path.join(dir, 'acct.jsonl');
  const synced: number[] = [];
  const log = new AccountingLog({ file, syncInterval: 300 }, (error) => assert.fail(error), (_, lines) => synced.push(lines));
  for (let index = 0; index < 50; index += 1) log.write(record({ queueId: `q${index}` }));
  assert.equal(readFileSync(file, { flag: 'a+' }).length, 0, 'nothing written before the batch is due');
  await new Promise((resolve) => setTimeout(resolve, 900));
  assert.deepEqual(synced, [50], 'one batch of every record written so far');
  assert.equal(readFileSync(file, 'utf8').trimEnd().split('\n').length, 50);
  await log.close();
});

test('size rotation keeps every file within maxBytes, names sort by time, and the files together hold every record in order', async () => {
  const dir = await directory();
  const file = path.join(dir, 'acct.csv');
  const maxBytes = 4096;
  const accounting = new AccountingFile(file, { header: CSV_HEADER, maxBytes, syncIntervalMs: 10_000, onError: (error) => assert.fail(error) });
  const written: string[] = [];
  for (let batch = 0; batch < 12; batch += 1) {
    for (let index = 0; index < 1 + batch * 3; index += 1) {
      const line = `d,${batch}-${index},${'x'.repeat((batch * 37 + index * 11) % 300)}\r\n`;
      written.push(line);
      accounting.append(line);
    }
    await accounting.flush();
  }
  await accounting.close();
  const rotated = await rotatedFiles(file);
  assert.ok(rotated.length >= 3, `several rotations (${rotated.length})`);
  const names = [...rotated.map((entry) => path.basename(entry.path)), 'acct.csv'];
  assert.deepEqual([...names].sort(), names, 'rotated names sort before the current file, oldest first');
  assert.deepEqual(readdirSync(dir).sort(), names);
  let body = '';
  for (const name of names) {
    const text = readFileSync(path.join(dir, name), 'utf8');
    assert.ok(Buffer.byteLength(text) <= maxBytes, `${name} holds ${Buffer.byteLength(text)} bytes`);
    assert.ok(text.startsWith(CSV_HEADER), `${name} starts with the header`);
    body += text.slice(CSV_HEADER.length);
  }
  assert.equal(body, written.join(''));
});

test('time rotation starts a file at each UTC interval, named by the time its first record came', async () => {
  const dir = await directory();
  const file = path.join(dir, 'acct.jsonl');
  const hour = 3_600_000;
  const start = Date.parse('2026-03-01T10:15:00Z');
  let now = start;
  const accounting = new AccountingFile(file, { intervalMs: hour, syncIntervalMs: 10_000, onError: (error) => assert.fail(error), now: () => now });
  const offsets = [0, 20 * 60_000, 50 * 60_000, 2 * hour, 2 * hour + 1, 5 * hour + 30 * 60_000];
  for (const offset of offsets) {
    now = start + offset;
    accounting.append(`${JSON.stringify({ at: new Date(now).toISOString() })}\n`);
    await accounting.flush();
  }
  await accounting.close();
  const rotated = await rotatedFiles(file);
  // 10:15 and 10:35 share the 10:00 hour; 11:05 its own; 12:15 and 12:15.001; then 15:45 is current.
  assert.deepEqual(rotated.map((entry) => new Date(entry.startedAt).toISOString()), ['2026-03-01T10:15:00.000Z', '2026-03-01T11:05:00.000Z', '2026-03-01T12:15:00.000Z']);
  assert.deepEqual(rotated.map((entry) => readFileSync(entry.path, 'utf8').trimEnd().split('\n').length), [2, 1, 2]);
  assert.match(readFileSync(file, 'utf8'), /15:45:00/);
});

test('retention keeps at most maxFiles rotated files, the newest, and none started before maxAge', async () => {
  const minute = 60_000;
  let now = Date.parse('2026-03-01T00:00:00Z');
  for (const retain of [{ maxFiles: 3 }, { maxAgeMs: 10 * minute }, { maxFiles: 2, maxAgeMs: 3 * minute }]) {
    const file = path.join(await directory(), 'acct.jsonl');
    const accounting = new AccountingFile(file, { intervalMs: minute, ...retain, syncIntervalMs: 10_000, onError: (error) => assert.fail(error), now: () => now });
    for (let step = 0; step < 20; step += 1) {
      now += minute;
      accounting.append(`${step}\n`);
      await accounting.flush();
    }
    await accounting.close();
    const rotated = await rotatedFiles(file);
    const expected = Math.min(retain.maxFiles ?? Infinity, retain.maxAgeMs === undefined ? Infinity : retain.maxAgeMs / minute);
    assert.equal(rotated.length, expected, JSON.stringify(retain));
    assert.ok(rotated.every((entry) => retain.maxAgeMs === undefined || entry.startedAt >= now - retain.maxAgeMs), JSON.stringify(retain));
    assert.equal(readFileSync(rotated.at(-1)!.path, 'utf8'), '18\n', 'the newest rotated file is kept');
  }
});

test('a CSV file whose header is not the current one is rotated away before anything is appended', async () => {
  const dir = await directory();
  const file = path.join(dir, 'acct.csv');
  writeFileSync(file, 'type,timeLogged,orig\r\nd,1,a@example.com\r\n');
  utimesSync(file, new Date('2026-01-01T00:00:00Z'), new Date('2026-01-01T00:00:00Z'));
  const log = new AccountingLog({ csvFile: file });
  log.write(record());
  await log.close();
  const rotated = await rotatedFiles(file);
  assert.equal(rotated.length, 1);
  assert.equal(readFileSync(rotated[0]!.path, 'utf8'), 'type,timeLogged,orig\r\nd,1,a@example.com\r\n');
  assert.equal(pythonCsvRows(file).length, 1);
  assert.ok(readFileSync(file, 'utf8').startsWith(CSV_HEADER));
});

test('an accounting file that cannot be opened is reported, not thrown, and the other outputs go on', async () => {
  const dir = await directory();
  writeFileSync(path.join(dir, 'not-a-directory'), '');
  const errors: Error[] = [];
  const log = new AccountingLog({ file: path.join(dir, 'not-a-directory', 'acct.jsonl'), csvFile: path.join(dir, 'acct.csv') }, (error) => errors.push(error));
  log.write(record());
  await log.close();
  assert.match(errors[0]?.message ?? '', /ENOTDIR|EEXIST/);
  assert.equal(pythonCsvRows(path.join(dir, 'acct.csv')).length, 1);
});
