// The TLS-RPT counts on disk: they survive a restart (a new store on the same file), a broken
// file starts empty without throwing, the bounds hold (failure rows per policy, policies per
// period, periods held), and ending a period early never reports a session twice.
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { MAX_DETAILS, MAX_PERIODS, MAX_POLICIES, TlsRptStore, type PolicyKey } from '../../mta/reporting/tls-rpt-store.ts';

const DAY = 86_400_000;
const STS: PolicyKey = { type: 'sts', strings: ['version: STSv1', 'mode: enforce', 'mx: mx.example.com', 'max_age: 86400'], mxHost: ['mx.example.com'] };
const NONE: PolicyKey = { type: 'no-policy-found', strings: [], mxHost: [] };
const noon = Date.UTC(2026, 11, 2, 12);
let dir: string;

before(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'vmta-tlsrpt-store-'));
});
after(() => rm(dir, { recursive: true, force: true }));

test('counts saved to the state file are there after a restart', async () => {
  const file = path.join(dir, 'restart', 'tls-rpt.json');
  const first = new TlsRptStore({ file, intervalMs: DAY });
  for (let index = 0; index < 5; index += 1) first.record('example.com', STS, { ok: true }, noon + index);
  first.record('example.com', STS, { ok: false, result: 'starttls-not-supported', mxHost: 'mx.example.com', mxIp: '192.0.2.1' }, noon);
  first.record('example.com', STS, { ok: false, result: 'starttls-not-supported', mxHost: 'mx.example.com', mxIp: '192.0.2.1' }, noon);
  first.flush();
  const second = new TlsRptStore({ file, intervalMs: DAY });
  const [period] = second.ended(noon + DAY);
  assert.deepEqual(period?.domains['example.com'], [{ ...STS, success: 5, failure: 2, details: [{ result: 'starttls-not-supported', mxHost: 'mx.example.com', mxIp: '192.0.2.1', count: 2 }] }]);
  assert.equal(period?.begin, Date.UTC(2026, 11, 2), 'aggregated per UTC day');
  second.done(period!, 'example.com', noon + DAY);
  second.flush();
  assert.deepEqual(new TlsRptStore({ file, intervalMs: DAY }).periods(), [], 'reported counts are gone after the next restart');
});

test('a state file that is not JSON, or has bad fields, starts the counts empty', async () => {
  for (const [name, text] of [
    ['garbage', 'not json {'],
    ['bad-fields', JSON.stringify({ version: 1, periods: [{ begin: 0, end: 1, domains: { 'a.test': [{ type: 'dane', strings: [], mxHost: [], success: 1, failure: 0, details: [] }] } }] })],
    ['future-version', JSON.stringify({ version: 2, periods: [] })],
  ] as const) {
    const file = path.join(dir, `${name}.json`);
    await writeFile(file, text);
    const warnings: string[] = [];
    const logger = { warn: (_fields: unknown, message: string) => warnings.push(message) } as never;
    const store = new TlsRptStore({ file, intervalMs: DAY, logger });
    assert.deepEqual(store.periods(), [], name);
    assert.equal(warnings.length, 1, `${name}: one warning`);
    store.record('a.test', NONE, { ok: true }, noon);
    store.flush();
    assert.equal(JSON.parse(await readFile(file, 'utf8')).periods.length, 1, `${name}: replaced by good counts`);
  }
});

test('the store is bounded: failure rows per policy, policies per period, periods held', () => {
  const store = new TlsRptStore({ intervalMs: DAY });
  for (let index = 0; index < MAX_DETAILS + 50; index += 1) store.record('rows.test', NONE, { ok: false, result: 'validation-failure', mxIp: `192.0.2.${index % 250}`, mxHost: `mx${index}.rows.test` }, noon);
  const rows = store.periods()[0]!.domains['rows.test']![0]!;
  assert.equal(rows.details.length, MAX_DETAILS);
  assert.equal(rows.failure, MAX_DETAILS + 50, 'failures beyond the rows still count in the summary');
  for (let index = 0; index < MAX_POLICIES + 10; index += 1) store.record(`d${index}.test`, NONE, { ok: true }, noon);
  const period = store.periods()[0]!;
  assert.equal(Object.values(period.domains).reduce((sum, policies) => sum + policies.length, 0), MAX_POLICIES);
  assert.equal(period.dropped, 11, 'sessions of policies beyond the bound are counted as dropped');
  for (let day = 1; day <= MAX_PERIODS + 3; day += 1) store.record('days.test', NONE, { ok: true }, noon + day * DAY);
  assert.equal(store.periods().length, MAX_PERIODS);
  assert.equal(store.periods().at(-1)!.begin, Date.UTC(2026, 11, 2 + MAX_PERIODS + 3));
});

test('a period ended early (admin request) reports its sessions once; later sessions go to a new period', () => {
  const store = new TlsRptStore({ intervalMs: DAY });
  store.record('example.com', NONE, { ok: true }, noon);
  const [early] = store.ended(noon + 1000, true);
  assert.equal(early?.end, noon + 1000);
  store.done(early!, 'example.com', noon + 1000);
  store.record('example.com', NONE, { ok: true }, noon + 2000);
  store.record('example.com', NONE, { ok: true }, noon + 3000);
  assert.deepEqual(store.ended(noon + 5000), [], 'the rest of the day has not ended');
  const [rest] = store.ended(Date.UTC(2026, 11, 3));
  assert.equal(rest?.begin, noon + 1000, 'begins where the early report ended');
  assert.equal(rest?.end, Date.UTC(2026, 11, 3));
  assert.equal(rest?.domains['example.com']?.[0]?.success, 2);
});
