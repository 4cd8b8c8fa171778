import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { promisify } from 'node:util';
import { createQueueApi } from '../../mta/admin/queue-api.ts';
import { startSinkGroup, type SinkMx } from '../fixtures/sink-mx.ts';
import { startHarness, waitFor, type Harness } from './harness.ts';

const run = promisify(execFile);
const TOKEN = 'test-admin-token';
let sinks: SinkMx[];
let harness: Harness;
let server: http.Server;
let adminUrl: string;
let dir: string;

// A minimal stand-in for the relay's admin server: JSON in and out, bearer token check.
before(async () => {
  sinks = await startSinkGroup([{}]);
  harness = await startHarness({
    mxPort: sinks[0]!.port,
    zone: { 'cli.test': { mx: [{ preference: 10, exchange: 'mx.cli.test' }] }, 'mx.cli.test': { a: [sinks[0]!.address] } },
    pool: { name: 'pool-cli', virtualMtas: [{ name: 'vmta-cli', hostname: 'cli.sender.test' }], domainDefaults: [{ match: '*', tlsPolicy: 'none' }] },
  });
  const handler = createQueueApi(harness.engine);
  server = http.createServer(async (request, response) => {
    const chunks: Buffer[] = [];
    for await (const chunk of request) chunks.push(chunk as Buffer);
    const url = new URL(request.url ?? '/', 'http://admin');
    const text = Buffer.concat(chunks).toString();
    const answer = await handler({
      method: request.method ?? 'GET',
      path: url.pathname,
      query: url.searchParams,
      body: text ? JSON.parse(text) : undefined,
      authorized: request.headers.authorization === `Bearer ${TOKEN}`,
    });
    response.writeHead(answer?.status ?? 404, { 'content-type': 'application/json' });
    response.end(JSON.stringify(answer?.body ?? { error: 'not found' }));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  adminUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  dir = mkdtempSync(path.join(os.tmpdir(), 'vmta-queue-cli-'));
  writeFileSync(path.join(dir, 'token'), `${TOKEN}\n`);
});

after(async () => {
  await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
  await harness?.close();
  await Promise.all((sinks ?? []).map((sink) => sink.close()));
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const vmta = (...args: string[]) => run(process.execPath, ['cli/vmta.ts', 'queue', ...args, '--admin', adminUrl], { cwd: path.resolve(import.meta.dirname, '../..') });

test('vmta queue pause/list/resume drive the relay through the admin API', async () => {
  await vmta('pause', '--domain', 'cli.test', '--token-file', path.join(dir, 'token'));
  const stored = await harness.submit({ to: ['someone@cli.test'] });
  const listed = await vmta('list');
  assert.match(listed.stdout, /^VIRTUAL-MTA\s+DOMAIN\s+MESSAGES/m);
  assert.match(listed.stdout, /^vmta-cli\s+cli\.test\s+1\s+1\s+0\s+0\s+paused/m);
  const shown = await vmta('show', stored.id);
  assert.equal(JSON.parse(shown.stdout).recipients[0].address, 'someone@cli.test');
  const resumed = await vmta('resume', '--domain', 'cli.test', '--token-file', path.join(dir, 'token'));
  assert.match(resumed.stdout, /resume: 1 queue\(s\)/);
  await waitFor(() => harness.spool.removed.includes(stored.id), 'delivery after resume');
});

test('vmta queue refuses a state change without the token and exits non-zero', async () => {
  await assert.rejects(vmta('delete', '--domain', 'cli.test'), (error: { code: number; stderr: string }) => {
    assert.equal(error.code, 1);
    assert.match(error.stderr, /needs the admin bearer token/);
    return true;
  });
});
