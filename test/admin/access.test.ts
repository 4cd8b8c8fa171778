// Who may call what on a real relay's admin API: every route of the relay's own route table (taken
// from a relay started in this process, so a route added later is tried here without editing this
// file) is called over HTTP on a relay process with no token, a wrong one, the read-only one and
// the full one. Open routes answer anyone; read routes need the read or the full token; write
// routes need the full token (the read token gets 403). Only health, readiness, metrics, config
// status, egress-proxy health and warm-up use are open.
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { pino } from 'pino';
import type { AdminRoute } from '../../mta/admin/routes.ts';
import { Relay } from '../../mta/relay.ts';
import { freePort, loopbackRelayConfig, startRelayProcess, temporaryDirectory, writeRelayConfig, type RelayProcess } from '../fixtures/relay-process.ts';

const FULL = 'full-admin-token-for-access-test';
const READ = 'read-only-token-for-access-test';
const OPEN_PATHS = ['/config', '/egress-proxies', '/healthz', '/metrics', '/readyz', '/warmup'];

let directory: { path: string; remove: () => Promise<void> };
let routes: readonly AdminRoute[];
let relay: RelayProcess;

before(async () => {
  directory = await temporaryDirectory('vmta-admin-access-');
  await writeFile(path.join(directory.path, 'token'), `${FULL}\n`);
  await writeFile(path.join(directory.path, 'read-token'), `${READ}\n`);
  const adminPort = await freePort();
  await writeRelayConfig(directory.path, loopbackRelayConfig(await freePort(), adminPort, { admin: { address: '127.0.0.1', port: adminPort, tokenFile: 'token', readTokenFile: 'read-token' } }));
  const inProcess = await Relay.start({ configDir: directory.path, shutdownTimeoutMs: 1000, logger: pino({ level: 'silent' }) });
  routes = [...inProcess.adminRoutes()];
  await inProcess.shutdown('route table read');
  relay = await startRelayProcess({ configDir: directory.path, adminPort });
});

after(async () => {
  await relay?.kill('SIGKILL');
  await directory?.remove();
});

/** A concrete URL path for a route: each ":name" segment filled with an id nothing has. */
function concretePath(route: AdminRoute): string {
  return route.path.replace(/:[a-zA-Z]+/g, 'no-such-id-0000');
}

async function call(route: AdminRoute, token: string | undefined): Promise<{ status: number; reason?: string }> {
  const response = await fetch(`${relay.adminUrl}${concretePath(route)}`, {
    method: route.method,
    headers: { ...(token === undefined ? {} : { authorization: `Bearer ${token}` }), ...(route.method === 'POST' ? { 'content-type': 'application/json' } : {}) },
    // An empty selector: changes nothing (bounce and delete refuse it; pause gets a resume below).
    ...(route.method === 'POST' ? { body: '{}' } : {}),
  });
  const text = await response.text();
  let reason: string | undefined;
  try {
    reason = (JSON.parse(text) as { reason?: string } | null)?.reason;
  } catch {
    reason = undefined;
  }
  return { status: response.status, reason };
}

test('the route table has read and write routes, and only health, readiness, metrics, config status, egress-proxy health and warm-up use are open', () => {
  assert.deepEqual(routes.filter((route) => route.access === 'open').map((route) => route.path).sort(), OPEN_PATHS);
  assert.ok(routes.some((route) => route.access === 'read' && route.path === '/api/v1/messages/:id'), 'messages (with their recipients) are a read route');
  assert.ok(routes.filter((route) => route.access === 'write').length >= 5, 'queue actions and the drain are write routes');
  assert.ok(routes.every((route) => route.method !== 'GET' || route.access !== 'write' || route.path === '/api/v1/drain'), 'no GET needs the full token but the drain report');
});

test('every route, with no token, a wrong token, the read-only token and the full token, answers as its access says', async () => {
  const tokens = { none: undefined, wrong: 'not-a-token-of-this-relay', read: READ, full: FULL } as const;
  for (const route of routes) {
    const name = `${route.method} ${route.path} (${route.access})`;
    for (const [kind, token] of Object.entries(tokens)) {
      const answer = await call(route, token);
      const admitted = route.access === 'open' || kind === 'full' || (route.access === 'read' && kind === 'read');
      if (admitted) {
        assert.ok(answer.status !== 401 && answer.status !== 403, `${name} with ${kind} token is admitted (got ${answer.status})`);
      } else if (kind === 'read') {
        assert.deepEqual(answer, { status: 403, reason: 'token-read-only' }, `${name} with the read token`);
      } else {
        assert.deepEqual(answer, { status: 401, reason: kind === 'none' ? 'token-missing' : 'token-wrong' }, `${name} with ${kind} token`);
      }
    }
  }
  const resume = routes.find((route) => route.path === '/api/v1/queues/resume');
  if (resume) assert.equal((await call(resume, FULL)).status, 200);
});

test('the read token lists queues and shows messages; the same answers need no more than it', async () => {
  const headers = { authorization: `Bearer ${READ}` };
  const listed = await fetch(`${relay.adminUrl}/api/v1/queues`, { headers });
  assert.equal(listed.status, 200);
  assert.ok(Array.isArray(((await listed.json()) as { queues: unknown }).queues));
  const missing = await fetch(`${relay.adminUrl}/api/v1/messages/no-such-id-0000`, { headers });
  assert.deepEqual([missing.status, ((await missing.json()) as { reason: string }).reason], [404, 'not-found']);
});
