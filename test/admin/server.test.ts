// The admin HTTP server over real sockets: health, readiness, metrics, config status, mounted
// routes, bearer-token access per route (full and read-only tokens) and JSON body limits.
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { pino } from 'pino';
import { AdminServer, readAdminToken, readAdminTokens, type Readiness } from '../../mta/admin/server.ts';
import type { AdminRequest, AdminRoute } from '../../mta/admin/routes.ts';
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
    readToken: 'read-only-token',
    maxBodyBytes: 1024,
  });
  const echo = async (request: AdminRequest) => {
    seen.push(request);
    if (request.path === '/api/v1/fail') throw new Error('boom');
    return { status: 200, body: { path: request.path, params: request.params, body: request.body, q: request.query.get('q') } };
  };
  const routes: AdminRoute[] = [
    { method: 'POST', path: '/api/v1/queues', access: 'write', handle: echo },
    { method: 'GET', path: '/api/v1/things/:id', access: 'read', handle: echo },
    { method: 'GET', path: '/api/v1/fail', access: 'open', handle: echo },
  ];
  admin.mount(routes);
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

test('a mounted route gets path, parameters, query and parsed JSON body once its token is right', async () => {
  const response = await fetch(`${base}/api/v1/queues?q=x`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: 'Bearer s3cret-token' }, body: JSON.stringify({ pause: true }) });
  assert.equal(response.status, 200);
  assert.deepEqual(await response.json(), { path: '/api/v1/queues', params: {}, body: { pause: true }, q: 'x' });
  const thing = await fetch(`${base}/api/v1/things/a.b-c_1`, { headers: { authorization: 'Bearer read-only-token' } });
  assert.deepEqual(((await thing.json()) as { params: unknown }).params, { id: 'a.b-c_1' });
});

test('bearer tokens: wrong, malformed and missing ones are told apart; the read token reads but changes nothing', async () => {
  const status = async (method: string, url: string, authorization?: string) => {
    const before = seen.length;
    const response = await fetch(`${base}${url}`, { method, headers: authorization === undefined ? {} : { authorization }, ...(method === 'POST' ? { body: '{}' } : {}) });
    const body = (await response.json()) as { reason?: string };
    if (response.status >= 400) assert.equal(seen.length, before, 'a refused request never reaches the handler');
    return `${response.status} ${body.reason ?? ''}`.trim();
  };
  for (const [header, reason] of [['Bearer wrong', 'token-wrong'], [undefined, 'token-missing'], ['Basic s3cret-token', 'token-wrong'], ['Bearer s3cret-token-longer', 'token-wrong'], ['Bearer', 'token-wrong']] as const) {
    assert.equal(await status('POST', '/api/v1/queues', header), `401 ${reason}`, `${header}`);
    assert.equal(await status('GET', '/api/v1/things/x', header), `401 ${reason}`, `${header}`);
  }
  assert.equal(await status('POST', '/api/v1/queues', 'Bearer read-only-token'), '403 token-read-only');
  assert.equal(await status('GET', '/api/v1/things/x', 'Bearer read-only-token'), '200');
  assert.equal(await status('GET', '/api/v1/things/x', 'bearer s3cret-token'), '200');
});

test('replaced tokens (config reload) take effect at once; with no token configured only open routes answer', async () => {
  admin.setTokens({ token: 'rotated', readToken: undefined });
  const asked = async (token: string) => (await fetch(`${base}/api/v1/things/x`, { headers: { authorization: `Bearer ${token}` } })).status;
  assert.equal(await asked('s3cret-token'), 401);
  assert.equal(await asked('read-only-token'), 401);
  assert.equal(await asked('rotated'), 200);
  admin.setTokens({ token: undefined, readToken: undefined });
  const unconfigured = await fetch(`${base}/api/v1/things/x`);
  assert.deepEqual([unconfigured.status, ((await unconfigured.json()) as { reason: string }).reason], [401, 'token-unconfigured']);
  assert.equal(await asked('rotated'), 401);
  assert.equal((await fetch(`${base}/healthz`)).status, 200);
  admin.setTokens({ token: 's3cret-token', readToken: 'read-only-token' });
});

test('a method the path does not take gets 405 naming the ones it does; a route mounted twice is refused', async () => {
  const response = await fetch(`${base}/api/v1/queues`, { headers: { authorization: 'Bearer s3cret-token' } });
  assert.equal(response.status, 405);
  assert.match(((await response.json()) as { error: string }).error, /takes POST/);
  assert.throws(() => admin.mount([{ method: 'GET', path: '/healthz', access: 'open', handle: async () => ({ status: 200, body: null }) }]), /mounted twice/);
});

test('bodies over the limit get 413, invalid JSON gets 400, unknown paths 404, handler failures 500', async () => {
  const headers = { authorization: 'Bearer s3cret-token' };
  const big = await fetch(`${base}/api/v1/queues`, { method: 'POST', headers, body: JSON.stringify({ pad: 'x'.repeat(2000) }) });
  assert.equal(big.status, 413);
  const bad = await fetch(`${base}/api/v1/queues`, { method: 'POST', headers, body: '{nope' });
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
    await assert.rejects(readAdminToken(file, 'admin.readTokenFile'), /admin\.readTokenFile: .* is empty/);
    await writeFile(file, 'same\n');
    await assert.rejects(readAdminTokens({ tokenFile: file, readTokenFile: file }), /admin\.readTokenFile: .* same token as admin\.tokenFile/);
  } finally {
    await directory.remove();
  }
});
