// Which final records an accounting file already holds after a crash (accounting-recovery.ts),
// over a class of files: JSON lines and PowerMTA CSV, written by AccountingLog with awkward
// values (commas, quotes, CR/LF in recipients and diagnostics), rotated by size so the records
// span several files, read whole and from tails cut at every kind of place, with a torn last
// line. Every d and b record in the bytes read is found, no r or t record and nothing else is,
// and the oldest attempt record's time is known; a message gets rebuilt records exactly for its
// recipients finalised since then whose record is not found (not for older ones, whose record
// may lie before the tail, nor for those this pod made no record of). A last line torn at any
// byte is cut off when the file is opened again.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { appendFileSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, test } from 'node:test';
import { AccountingLog, type AccountingRecord } from '../../mta/observe/accounting.ts';
import { accountingTail, missingFinalRecords } from '../../mta/observe/accounting-recovery.ts';
import type { Envelope } from '../../mta/spool/types.ts';
import { temporaryDirectory } from '../fixtures/relay-process.ts';

const cleanups: (() => Promise<void>)[] = [];
after(() => Promise.all(cleanups.map((cleanup) => cleanup())));

const AWKWARD = ['plain', 'with,comma', 'with "quotes"', 'line\r\nbreak', 'bare\nlf', ',"\r\nd,2026-01-01 00:00:00+0000,', 'ünïcödé ✉', ''];
const TYPES = ['r', 'd', 't', 'b'] as const;
const RESULT = { r: 'received', d: 'delivered', t: 'deferred', b: 'bounced' } as const;

function record(index: number): AccountingRecord {
  const type = TYPES[index % TYPES.length]!;
  const awkward = AWKWARD[index % AWKWARD.length]!;
  return {
    type, time: new Date(Date.UTC(2026, 0, 1) + index * 1000).toISOString(), timeQueued: '2026-01-01T00:00:00.000Z', queueId: `q${Math.floor(index / 8)}`,
    virtualMta: 'vmta-1', pool: 'pool-a', tenant: null, user: null, relayGrant: null, jobId: awkward, envId: null, listener: 'relay', clientAddress: '127.0.0.1',
    heloName: null, sourceAddress: null, sender: 'a@example.com', recipient: `"${awkward}"@example.net`, orcpt: null, domain: 'example.net', mxHost: null, mxIp: null,
    result: RESULT[type], dsnAction: null, dsnStatus: '2.0.0', diagnostic: `250 ${awkward}`, bounceCategory: null, attempt: 1, size: 100, tlsVersion: null, tlsCipher: null, durationMs: 0,
  };
}

const keyOf = (item: AccountingRecord) => `${item.queueId}\t${item.recipient}`;

test('the final records of a file\'s tail are found, in JSON lines and CSV, whole, rotated and cut anywhere, with a torn last line', async () => {
  const directory = await temporaryDirectory('vmta-acct-recovery-');
  cleanups.push(directory.remove);
  const records = Array.from({ length: 400 }, (_, index) => record(index));
  const log = new AccountingLog({ file: path.join(directory.path, 'acct.jsonl'), csvFile: path.join(directory.path, 'acct.csv'), rotate: { maxBytes: 16 * 1024 } }, (error) => assert.fail(error));
  for (const [index, item] of records.entries()) {
    log.write(item);
    if (index % 50 === 49) await log.flush(); // batches, so the size rotation splits the records over files
  }
  await log.close();
  // A crash tearing the last line: half a record at the end of each current file.
  appendFileSync(path.join(directory.path, 'acct.jsonl'), '{"type":"d","queueId":"torn","recip');
  appendFileSync(path.join(directory.path, 'acct.csv'), 'd,2026-01-01 00:00:00+0000,2026-01-01 00:00:00+0000,a@example.com,"torn');
  const rotated = readdirSync(directory.path).filter((name) => /^acct-/.test(name)).length;
  assert.ok(rotated >= 4, `the records span several files (${rotated} rotated)`);
  const finals = new Set(records.filter((item) => item.type === 'd' || item.type === 'b').map(keyOf));

  for (const format of ['json', 'csv'] as const) {
    const file = path.join(directory.path, format === 'json' ? 'acct.jsonl' : 'acct.csv');
    const whole = await accountingTail({ path: file, format });
    assert.deepEqual([...whole.keys].sort(), [...finals].sort(), `${format}: every d and b record of every file, nothing else`);
    // Record 0 is a receipt (its time is the acceptance, not when it was written): the oldest attempt record is record 1.
    assert.equal(whole.oldest, Date.parse(records[1]!.time), `${format}: the oldest attempt record's time`);
    // Tails cut at many places, reaching into the rotated files: each finds a suffix of the records, never a wrong key.
    const totalBytes = readdirSync(directory.path).filter((name) => name.endsWith(format === 'json' ? '.jsonl' : '.csv')).reduce((sum, name) => sum + statSync(path.join(directory.path, name)).size, 0);
    for (let tail = 37; tail < totalBytes + 1000; tail = Math.ceil(tail * 1.7)) {
      const found = (await accountingTail({ path: file, format }, tail)).keys;
      assert.ok([...found].every((key) => finals.has(key)), `${format} tail ${tail}: only keys of real final records`);
      // The newest final records are found once the tail holds them (the last 8 records take under 8 KiB in either format).
      if (tail >= 8 * 1024) assert.ok(records.slice(-8).filter((item) => item.type === 'd' || item.type === 'b').every((item) => found.has(keyOf(item))), `${format} tail ${tail}: the newest final records`);
    }
  }
  assert.deepEqual(await accountingTail({ path: path.join(directory.path, 'missing.jsonl'), format: 'json' }), { keys: new Set(), oldest: undefined }, 'a file that does not exist holds nothing');
});

test('a message gets a rebuilt record for each recipient finalised since the tail\'s oldest record whose record is missing, with the status code of its last reply', () => {
  const oldest = Date.UTC(2026, 0, 1, 12);
  const recent = oldest + 60_000;
  const envelope = {
    mailFrom: 'a@example.com', virtualMta: 'vmta-1', receivedAt: Date.UTC(2026, 0, 1), listener: 'relay', clientAddress: '127.0.0.1', size: 10, eightBitMime: false, smtpUtf8: false, jobId: 'job-7',
    recipients: [
      { address: 'found@example.net', domain: 'example.net', status: 'delivered', attempts: 1, nextAttemptAt: recent, lastResult: '250 2.0.0 ok' },
      { address: 'lost@example.net', domain: 'example.net', status: 'delivered', attempts: 3, nextAttemptAt: recent, lastResult: '250 2.6.0 queued as X' },
      { address: 'bounced@example.org', domain: 'example.org', status: 'bounced', attempts: 2, nextAttemptAt: recent + 1, lastResult: '550-5.1.1 no such user' },
      { address: 'plain@example.org', domain: 'example.org', status: 'bounced', attempts: 1, nextAttemptAt: recent + 2, lastResult: 'connection refused' },
      // Finalised before the tail begins (its record may be in an older part of the file): never rebuilt.
      { address: 'old@example.net', domain: 'example.net', status: 'delivered', attempts: 1, nextAttemptAt: oldest - 86_400_000, lastResult: '250 ok' },
      // Within the slack after the oldest record: its record may have been written just before it.
      { address: 'edge@example.net', domain: 'example.net', status: 'delivered', attempts: 1, nextAttemptAt: oldest + 4_000, lastResult: '250 ok' },
      // No record was made here (handed over to a peer, suppressed at acceptance): never rebuilt.
      { address: 'handed@example.net', domain: 'example.net', status: 'delivered', attempts: 0, nextAttemptAt: 0, lastResult: 'handed over to outbound-1' },
      { address: 'pending@example.org', domain: 'example.org', status: 'pending', attempts: 1, nextAttemptAt: recent + 5, lastResult: '451 later' },
    ],
  } as unknown as Envelope;
  const tail = { keys: new Set(['m1\tfound@example.net', 'other\tlost@example.net']), oldest };
  const rebuilt = missingFinalRecords(tail, { id: 'm1' as never, envelope }, { pool: 'pool-a', tenant: 'mail' });
  assert.deepEqual(
    rebuilt.map(({ type, recipient, attempt, dsnStatus, dsnAction, result, diagnostic, jobId, tenant, time }) => ({ type, recipient, attempt, dsnStatus, dsnAction, result, diagnostic, jobId, tenant, time })),
    [
      { type: 'd', recipient: 'lost@example.net', attempt: 3, dsnStatus: '2.6.0', dsnAction: 'relayed', result: 'delivered', diagnostic: '250 2.6.0 queued as X', jobId: 'job-7', tenant: 'mail', time: new Date(recent).toISOString() },
      { type: 'b', recipient: 'bounced@example.org', attempt: 2, dsnStatus: '5.1.1', dsnAction: 'failed', result: 'bounced', diagnostic: '550-5.1.1 no such user', jobId: 'job-7', tenant: 'mail', time: new Date(recent + 1).toISOString() },
      { type: 'b', recipient: 'plain@example.org', attempt: 1, dsnStatus: '5.0.0', dsnAction: 'failed', result: 'bounced', diagnostic: 'connection refused', jobId: 'job-7', tenant: 'mail', time: new Date(recent + 2).toISOString() },
    ],
  );
  assert.deepEqual(missingFinalRecords({ keys: new Set(), oldest: undefined }, { id: 'm1' as never, envelope }, { pool: 'pool-a' }), [], 'a file with no record restores nothing');
});

test('a last line torn at any byte is cut off when the file is opened again, and the next records read back whole', async () => {
  const directory = await temporaryDirectory('vmta-acct-torn-');
  cleanups.push(directory.remove);
  // Records without line breaks in their fields: a tear inside a quoted CRLF is the one case left as written (docs/accounting.md).
  const plain = (index: number) => ({ ...record(index * 8 + 1), diagnostic: `250 ok, "quoted", ünï ${index}`, recipient: `user${index}@example.net`, jobId: 'job' });
  for (const format of ['json', 'csv'] as const) {
    const file = path.join(directory.path, `torn.${format === 'json' ? 'jsonl' : 'csv'}`);
    const write = async (items: AccountingRecord[]) => {
      const log = new AccountingLog(format === 'json' ? { file } : { csvFile: file }, (error) => assert.fail(error));
      for (const item of items) log.write(item);
      await log.close();
    };
    await write([plain(0), plain(1)]);
    const whole = readFileSync(file);
    await write([plain(2)]);
    const withThird = readFileSync(file);
    for (let cut = whole.length; cut <= withThird.length; cut += 1) {
      writeFileSync(file, withThird.subarray(0, cut));
      await write([plain(3)]);
      const text = readFileSync(file, 'utf8');
      const expected = cut === withThird.length ? [0, 1, 2, 3] : [0, 1, 3];
      const recipients = format === 'json' ? text.trim().split('\n').map((line) => (JSON.parse(line) as AccountingRecord).recipient) : pythonCsvRows(file).map((row) => row.rcpt);
      assert.deepEqual(recipients, expected.map((index) => `user${index}@example.net`), `${format} torn at byte ${cut - whole.length} of the third record`);
    }
  }
});

/** Rows of a CSV file as Python's csv.DictReader reads them. */
function pythonCsvRows(file: string): Record<string, string>[] {
  const script = 'import csv,json,sys\nwith open(sys.argv[1], newline="", encoding="utf-8") as f:\n  print(json.dumps(list(csv.DictReader(f))))';
  return JSON.parse(execFileSync('python3', ['-c', script, file], { encoding: 'utf8' })) as Record<string, string>[];
}
