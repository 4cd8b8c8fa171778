import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { AccountingLog, type AccountingRecord } from '../../mta/observe/accounting.ts';

const record: AccountingRecord = {
  time: '2026-01-01T00:00:00.000Z',
  queueId: 'q1',
  virtualMta: 'vmta-1',
  sourceAddress: '192.0.2.10',
  sender: 'a@example.com',
  recipient: 'b@example.net',
  domain: 'example.net',
  mxHost: 'mx.example.net',
  mxIp: '198.51.100.1',
  result: 'delivered',
  dsnStatus: '2.0.0',
  diagnostic: '250 2.0.0 Ok',
  bounceCategory: null,
  attempt: 1,
  tlsVersion: 'TLSv1.3',
  tlsCipher: 'TLS_AES_256_GCM_SHA384',
  durationMs: 12,
};

test('accounting appends one JSON line per record to the file', async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'vmta-acct-'));
  try {
    const file = path.join(dir, 'acct.jsonl');
    const first = new AccountingLog({ file });
    first.write(record);
    await first.close();
    const second = new AccountingLog({ file });
    second.write({ ...record, queueId: 'q2', result: 'bounced', bounceCategory: 'bad-mailbox' });
    await second.close();
    const lines = readFileSync(file, 'utf8').trimEnd().split('\n').map((line) => JSON.parse(line) as AccountingRecord);
    assert.deepEqual(lines.map((line) => [line.queueId, line.result, line.bounceCategory]), [['q1', 'delivered', null], ['q2', 'bounced', 'bad-mailbox']]);
    assert.deepEqual(lines[0], record);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('an accounting file that cannot be opened is reported, not thrown', async () => {
  const errors: Error[] = [];
  const log = new AccountingLog({ file: '/nonexistent-dir/acct.jsonl' }, (error) => errors.push(error));
  log.write(record);
  await new Promise((resolve) => setTimeout(resolve, 100));
  await log.close();
  assert.match(errors[0]?.message ?? '', /ENOENT/);
});
