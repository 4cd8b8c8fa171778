// Which DSNs an attempt calls for, over the whole class of NOTIFY values (absent, NEVER, every
// non-empty set of SUCCESS, FAILURE, DELAY) x outcomes (delivered, deferred, bounced) x next hop
// with or without DSN x before or after delayWarningAfter; the delay notice once per recipient,
// also through the durable ledger after a reopen; and DSN fields that cannot carry a header
// line break whatever ENVID or ORCPT hold.
import assert from 'node:assert/strict';
import { test, after } from 'node:test';
import { buildDsn } from '../../mta/delivery/dsn.ts';
import { DelayNoticeLedger, noticesFor } from '../../mta/delivery/dsn-notices.ts';
import type { NotifyValue } from '../../mta/delivery/dsn-request.ts';
import { classifyReply, type Classification } from '../../mta/delivery/reply-classification.ts';
import { QueueIdGenerator } from '../../mta/spool/queue-id.ts';
import type { Envelope } from '../../mta/spool/types.ts';
import { temporaryDirectory } from '../fixtures/relay-process.ts';

const cleanups: (() => Promise<void>)[] = [];
after(() => Promise.all(cleanups.map((cleanup) => cleanup())));

const CONDITIONS = ['SUCCESS', 'FAILURE', 'DELAY'] as const;
function notifyValues(): (NotifyValue | undefined)[] {
  const sets: NotifyValue[] = [['NEVER']];
  for (let mask = 1; mask < 8; mask += 1) sets.push(CONDITIONS.filter((_, bit) => mask & (1 << bit)));
  return [undefined, ...sets];
}

const OUTCOMES: Record<string, Classification> = {
  delivered: classifyReply(250, '250 2.0.0 Ok'),
  deferred: classifyReply(451, '451 4.2.1 Mailbox busy'),
  bounced: classifyReply(550, '550 5.1.1 No such user'),
};

function envelope(notify: NotifyValue | undefined, receivedAt: number): Envelope {
  return { mailFrom: 'app@example.com', recipients: [{ address: 'r@example.net', domain: 'example.net', status: 'pending', attempts: 1, nextAttemptAt: 0, ...(notify ? { notify } : {}), orcpt: 'rfc822;R@example.net' }], virtualMta: 'v', receivedAt, listener: 'l', clientAddress: '127.0.0.1', size: 10, eightBitMime: false, smtpUtf8: false };
}

test('every NOTIFY x outcome x next hop x age gives exactly the notices RFC 3461 asks for', () => {
  const now = 10_000_000;
  let cases = 0;
  for (const notify of notifyValues()) {
    const asked = (condition: (typeof CONDITIONS)[number]) => (notify ? (notify as string[]).includes(condition) : condition !== 'SUCCESS');
    for (const [outcome, classification] of Object.entries(OUTCOMES)) {
      for (const nextHopDsn of [false, true]) {
        for (const age of [1000, 5000]) {
          for (const warnedBefore of [false, true]) {
            const notices = noticesFor({ queueId: 'q', envelope: envelope(notify, now - age), outcomes: new Map([[0, classification]]), nextHopDsn, remoteMta: 'mx.example.net', now, delayWarningAfter: 2000, giveUpAt: now + 3600_000 }, () => warnedBefore);
            const what = `${JSON.stringify(notify)} ${outcome} nextHopDsn=${nextHopDsn} age=${age} warned=${warnedBefore}`;
            assert.equal(notices.failed.length, outcome === 'bounced' && asked('FAILURE') ? 1 : 0, what);
            assert.equal(notices.relayed.length, outcome === 'delivered' && !nextHopDsn && asked('SUCCESS') ? 1 : 0, what);
            assert.equal(notices.delayed.length, outcome === 'deferred' && age >= 2000 && asked('DELAY') && !warnedBefore ? 1 : 0, what);
            for (const report of [...notices.failed, ...notices.relayed, ...notices.delayed]) assert.equal(report.orcpt, 'rfc822;R@example.net', what);
            cases += 1;
          }
        }
      }
    }
  }
  assert.equal(cases, 9 * 3 * 2 * 2 * 2);
});

test('nothing is ever sent about mail from the null sender', () => {
  const input = { ...envelope(['SUCCESS', 'FAILURE', 'DELAY'], 0), mailFrom: '' };
  for (const classification of Object.values(OUTCOMES)) {
    const notices = noticesFor({ queueId: 'q', envelope: input, outcomes: new Map([[0, classification]]), nextHopDsn: false, now: 1e7, delayWarningAfter: 1, giveUpAt: 2e7 }, () => false);
    assert.deepEqual([notices.failed, notices.relayed, notices.delayed], [[], [], []]);
  }
});

test('the delay notice ledger survives a reopen, skips torn lines, and drops entries of messages older than 90 days', async () => {
  const directory = await temporaryDirectory('vmta-delay-notices-');
  cleanups.push(directory.remove);
  const now = Date.now();
  const fresh = new QueueIdGenerator(() => now).next();
  const old = new QueueIdGenerator(() => now - 91 * 24 * 3600 * 1000).next();
  const ledger = await DelayNoticeLedger.open(directory.path, now);
  await ledger.record(fresh, [0, 2]);
  await ledger.record(old, [1]);
  assert.ok(ledger.has(fresh, 0) && ledger.has(fresh, 2) && !ledger.has(fresh, 1));
  await ledger.close();
  const { appendFile } = await import('node:fs/promises');
  await appendFile(`${directory.path}/delay-notices.log`, `${fresh.slice(0, 9)}`);
  const reopened = await DelayNoticeLedger.open(directory.path, now);
  assert.ok(reopened.has(fresh, 0) && reopened.has(fresh, 2));
  assert.equal(reopened.has(old, 1), false, 'older than any queue keeps mail');
  await reopened.close();
});

test('ENVID and ORCPT with line breaks or non-ASCII cannot add a header line to the DSN', () => {
  const hostile = ['x\r\nBcc: victim@example.org', 'x\nSubject: forged', 'x\rX: y', 'caf\u00e9\u2028z'];
  for (const value of hostile) {
    const dsn = buildDsn({ reportingMta: 'relay.test', queueId: 'q', originalSender: 'app@example.com', arrivalDate: 0, envelopeId: value, recipients: [{ address: 'r@example.net', status: '5.1.1', diagnostic: value, lastAttemptAt: 0, orcpt: `rfc822;${value}` }], originalHeaders: 'Subject: s', now: 0 }).toString('latin1');
    for (const line of dsn.split('\r\n')) {
      assert.ok(!/^(Bcc|Subject: forged|X: y)/.test(line), `${JSON.stringify(value)} made a line ${JSON.stringify(line)}`);
      assert.ok(!/[\r\n\u0080-\uffff]/.test(line), `bare CR/LF or non-ASCII in ${JSON.stringify(line)}`);
    }
  }
});
