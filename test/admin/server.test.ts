// The admin HTTP server over real sockets: health, readiness, metrics, config status, mounted
// handlers, bearer-token authorization and JSON body limits.
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { pino } from 'pino';
import { AdminServer, readAdminToken, type Readiness } from '../../mta/admin/server.ts';
import type { AdminRequest } from '../../mta/admin/routes.ts';
import { RelayMetrics } from '../../mta/observe/metrics.ts';
import { temporaryDirectory } from '../fixtures/relay-process.ts';

let admin: AdminServer;
let base: string;
let readiness: Readiness = { ready: false, reason: 'listeners not bound' };
const seen: AdminRequest[] = [];
const metrics = new RelayMetrics({ processMetrics: false });

before(async () => {
  metrics.configInfo.set({ hash: 'abc123' }, 1);
  admin = await AdminServer.start({
    address: '127.0.0.1',
    port: 0,
    metrics,
    logger: pino({ level: 'silent' }),
    readiness: () => readiness,
    configStatus: () => ({ hash: 'abc123', loadedAt: '2026-11-23T14:00:00.000Z', lastError: { message: 'hostname: bad (got "x y")', at: '2026-11-23T14:05:00.000Z' } }),
    token: 's3cret-token',
    maxBodyBytes: 1024,
  });
  admin.mount(async (request) => {
    if (!request.path.startsWith('/api/v1/')) return undefined;
    seen.push(request);
    if (request.path === '/api/v1/fail') throw new Error('boom');
    return { status: 200, body: { path: request.path, authorized: request.authorized, credentials: request.credentials, body: request.body, q: request.query.get('q') } };
  });
  base = `http://127.0.0.1:${admin.address().port}`;
});
after(() => admin.close());

test('/healthz answers 200 while the process lives', async () => {
  const response = await fetch(`${base}/healthz`);
  assert.equal(response.status, 200);
  assert.deepEqual(await response.json(), { status: 'alive', pid: process.pid });
});

test('/readyz answers 503 with the reason until ready, then 200', async () => {
  readiness = { ready: false, reason: 'listeners not bound' };
  let response = await fetch(`${base}/readyz`);
  assert.equal(response.status, 503);
  assert.deepEqual(await response.json(), { status: 'not ready', reason: 'listeners not bound', pid: process.pid });
  readiness = { ready: true };
  response = await fetch(`${base}/readyz`);
  assert.equal(response.status, 200);
  readiness = { ready: false, reason: 'shutting down' };
  assert.equal((await fetch(`${base}/readyz`)).status, 503);
});

test('/metrics serves the relay registry in Prometheus text format', async () => {
  const response = await fetch(`${base}/metrics`);
  assert.equal(response.status, 200);
  assert.match(response.headers.get('content-type') ?? '', /text\/plain/);
  assert.match(await response.text(), /vmta_config_info\{hash="abc123"\} 1/);
});

test('/config reports the hash, load time and last refused version', async () => {
  const body = (await (await fetch(`${base}/config`)).json()) as Record<string, unknown>;
  assert.equal(body.hash, 'abc123');
  assert.equal(body.loadedAt, '2026-11-23T14:00:00.000Z');
  assert.deepEqual(body.lastError, { message: 'hostname: bad (got "x y")', at: '2026-11-23T14:05:00.000Z' });
});

test('a mounted handler gets path, query and parsed JSON body; authorized only with the right bearer token, and told a wrong token from none', async () => {
  const call = async (authorization?: string) => {
    const headers: Record<string, string> = { 'content-type': 'application/json' };
    if (authorization) headers.authorization = authorization;
    const response = await fetch(`${base}/api/v1/queues?q=x`, { method: 'POST', headers, body: JSON.stringify({ pause: true }) });
    assert.equal(response.status, 200);
    return (await response.json()) as { authorized: boolean; credentials: string; body: unknown; q: string; path: string };
  };
  const good = await call('Bearer s3cret-token');
  assert.deepEqual(good, { path: '/api/v1/queues', authorized: true, credentials: 'valid', body: { pause: true }, q: 'x' });
  for (const [header, credentials] of [['Bearer wrong', 'wrong'], [undefined, 'missing'], ['Basic s3cret-token', 'wrong'], ['Bearer s3cret-token-longer', 'wrong'], ['Bearer', 'wrong']] as const) {
    const answer = await call(header);
    assert.equal(answer.authorized, false, `${header}`);
    assert.equal(answer.credentials, credentials, `${header}`);
  }
});

test('a replaced token (config reload) takes effect at once; with no token configured nothing is authorized', async () => {
  admin.setToken('rotated');
  const asked = async (token: string) => ((await (await fetch(`${base}/api/v1/x`, { headers: { authorization: `Bearer ${token}` } })).json()) as { authorized: boolean }).authorized;
  assert.equal(await asked('s3cret-token'), false);
  assert.equal(await asked('rotated'), true);
  admin.setToken(undefined);
  const unconfigured = (await (await fetch(`${base}/api/v1/x`)).json()) as { authorized: boolean; credentials: string };
  assert.deepEqual([unconfigured.authorized, unconfigured.credentials], [false, 'unconfigured']);
  assert.equal(await asked('rotated'), false);
  admin.setToken('s3cret-token');
});

test('bodies over the limit get 413, invalid JSON gets 400, unknown paths 404, handler failures 500', async () => {
  const big = await fetch(`${base}/api/v1/queues`, { method: 'POST', body: JSON.stringify({ pad: 'x'.repeat(2000) }) });
  assert.equal(big.status, 413);
  const bad = await fetch(`${base}/api/v1/queues`, { method: 'POST', body: '{nope' });
  assert.equal(bad.status, 400);
  assert.match(((await bad.json()) as { error: string }).error, /not valid JSON/);
  assert.equal((await fetch(`${base}/nothing-here`)).status, 404);
  assert.equal((await fetch(`${base}/api/v1/fail`)).status, 500);
});

test('readAdminToken trims the mounted file and names the field when it cannot read it', async () => {
  const directory = await temporaryDirectory('vmta-admin-');
  try {
    const file = path.join(directory.path, 'token');
    await writeFile(file, 'tok\n');
    assert.equal(await readAdminToken(file), 'tok');
    assert.equal(await readAdminToken(undefined), undefined);
    await assert.rejects(readAdminToken(path.join(directory.path, 'missing')), /admin\.tokenFile: cannot read/);
    await writeFile(file, '\n');
    await assert.rejects(readAdminToken(file), /admin\.tokenFile: .* is empty/);
  } finally {
    await directory.remove();
  }
});
