// The zod side of the API: role defaults, explicit overrides, and the refusals (forbidden TLS
// and AUTH combinations, open-relay CIDRs) that the CRDs' CEL rules also make.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseVmtaResource } from '../../operator/api/parse.ts';
import { resolveListener, ROLE_DEFAULTS } from '../../operator/api/smtp-listener.ts';

function listener(spec: Record<string, unknown>, name = 'l1'): unknown {
  return { apiVersion: 'vmta.dev/v1alpha1', kind: 'SmtpListener', metadata: { name }, spec: { relayPolicyRef: { name: 'p' }, poolRef: { name: 'pool' }, tls: { secretName: 'tls' }, ...spec } };
}

function policy(spec: Record<string, unknown>): unknown {
  return { apiVersion: 'vmta.dev/v1alpha1', kind: 'RelayPolicy', metadata: { name: 'p' }, spec };
}

function pool(spec: Record<string, unknown>, name = 'pool'): unknown {
  return { apiVersion: 'vmta.dev/v1alpha1', kind: 'VirtualMtaPool', metadata: { name }, spec: { virtualMtas: [{ name: 'mta1', hostname: 'mta1.example.com' }], ...spec } };
}

function problemsOf(raw: unknown): string[] {
  const result = parseVmtaResource(raw);
  return result.ok ? [] : result.problems;
}

function assertRefused(raw: unknown, field: string, words: RegExp): void {
  const problems = problemsOf(raw);
  assert.ok(problems.some((problem) => problem.startsWith(`${field}:`) && words.test(problem)), `expected a problem on ${field} matching ${words}, got ${JSON.stringify(problems)}`);
}

test('each role fills the RFC defaults for port, TLS and AUTH', () => {
  assert.deepEqual(resolveListener({ role: 'relay' }), { role: 'relay', address: '0.0.0.0', port: 25, tlsMode: 'starttls', tlsRequired: false, authRequired: false, authMechanisms: [] });
  assert.deepEqual(resolveListener({ role: 'submission' }), { role: 'submission', address: '0.0.0.0', port: 587, tlsMode: 'starttls', tlsRequired: true, authRequired: true, authMechanisms: ['PLAIN', 'LOGIN'] });
  assert.deepEqual(resolveListener({ role: 'submissions' }), { role: 'submissions', address: '0.0.0.0', port: 465, tlsMode: 'implicit', tlsRequired: true, authRequired: true, authMechanisms: ['PLAIN', 'LOGIN'] });
  assert.equal(resolveListener({ role: 'alternate' }).port, 2525);
  assert.deepEqual(Object.keys(ROLE_DEFAULTS), ['relay', 'submission', 'submissions', 'alternate']);
});

test('explicit fields override the role defaults', () => {
  const resolved = resolveListener({ role: 'relay', port: 2526, address: '10.0.0.1', tls: { mode: 'none', minVersion: 'TLSv1.2' } });
  assert.equal(resolved.port, 2526);
  assert.equal(resolved.address, '10.0.0.1');
  assert.equal(resolved.tlsMode, 'none');
  assert.equal(resolved.tlsRequired, false);
  assert.deepEqual(problemsOf(listener({ role: 'submission', port: 10587, auth: { mechanisms: ['PLAIN'] } })), []);
  assert.deepEqual(problemsOf(listener({ role: 'relay', tls: { mode: 'none' } })), []);
});

test('an SmtpListener with a combination the RFCs forbid is refused, naming the field', () => {
  assertRefused(listener({ role: 'relay', tls: { mode: 'implicit', secretName: 'tls' } }), 'spec.tls.mode', /relay: none or starttls/);
  assertRefused(listener({ role: 'submissions', tls: { mode: 'starttls', secretName: 'tls' } }), 'spec.tls.mode', /implicit/);
  assertRefused(listener({ role: 'submission', tls: { mode: 'none' } }), 'spec.tls.mode', /RFC 6409/);
  assertRefused(listener({ role: 'submission', port: 25, tls: { mode: 'implicit', secretName: 'tls' } }), 'spec.tls.mode', /port 25 cannot use implicit TLS/);
  assertRefused(listener({ role: 'submission', tls: { required: false, secretName: 'tls' } }), 'spec.tls.required', /tls.required cannot be false/);
  assertRefused(listener({ role: 'alternate', auth: { required: false } }), 'spec.auth.required', /requires AUTH/);
  assertRefused(listener({ role: 'submissions', auth: { mechanisms: [] } }), 'spec.auth.mechanisms', /cannot be empty/);
  assertRefused(listener({ role: 'submission', tls: undefined }), 'spec.tls.secretName', /required unless tls.mode is none/);
});

test('AUTH without TLS is refused on every listener, including relay', () => {
  assertRefused(listener({ role: 'relay', tls: { mode: 'none' }, auth: { mechanisms: ['PLAIN'] } }), 'spec.auth', /credentials in clear/);
  assertRefused(listener({ role: 'relay', tls: { mode: 'none' }, auth: { required: true } }), 'spec.auth', /credentials in clear/);
});

test('PROXY protocol needs trusted CIDRs and never trusts a range wider than /8 (v4) or /16 (v6)', () => {
  assertRefused(listener({ role: 'relay', proxyProtocol: { enabled: true } }), 'spec.proxyProtocol.trustedCidrs', /needs proxyProtocol.trustedCidrs/);
  assertRefused(listener({ role: 'relay', proxyProtocol: { enabled: true, trustedCidrs: ['0.0.0.0/0'] } }), 'spec.proxyProtocol.trustedCidrs[0]', /wider than a \/8/);
  assert.deepEqual(problemsOf(listener({ role: 'relay', proxyProtocol: { enabled: true, trustedCidrs: ['10.0.0.0/8'] } })), []);
});

test('a malformed value is reported with its field and the value given', () => {
  const problems = problemsOf(listener({ role: 'submission', port: 70000, address: '300.1.1.1' }));
  assert.ok(problems.some((problem) => problem.startsWith('spec.port:') && problem.includes('70000')), JSON.stringify(problems));
  assert.ok(problems.some((problem) => problem.startsWith('spec.address:') && problem.includes('300.1.1.1')), JSON.stringify(problems));
  assert.ok(problemsOf(listener({ role: 'smtp' }))[0]?.startsWith('spec.role:'));
  assert.ok(problemsOf(listener({ role: 'relay', tls: { mode: 'none' }, colour: 'blue' })).some((problem) => problem.includes('colour')));
});

test('a RelayPolicy allowing 0.0.0.0/0, ::/0 or any range wider than /8 (v4) or /16 (v6) to relay is refused unless acknowledged', () => {
  assertRefused(policy({ alwaysAllowRelaying: ['10.0.0.0/8', '0.0.0.0/0'] }), 'spec.alwaysAllowRelaying[1]', /open relay/);
  assertRefused(policy({ alwaysAllowRelaying: ['::/0'] }), 'spec.alwaysAllowRelaying[0]', /open relay/);
  assertRefused(policy({ alwaysAllowRelaying: ['0.0.0.0/1', '128.0.0.0/1'] }), 'spec.alwaysAllowRelaying[1]', /open relay/);
  assertRefused(policy({ alwaysAllowRelaying: ['2000::/3'] }), 'spec.alwaysAllowRelaying[0]', /open relay/);
  assert.deepEqual(problemsOf(policy({ alwaysAllowRelaying: ['0.0.0.0/0'], acknowledgeOpenRelay: true })), []);
  assert.deepEqual(problemsOf(policy({ alwaysAllowRelaying: ['192.168.0.0/16', '2001:db8::/32'] })), []);
  assertRefused(policy({ alwaysAllowRelaying: ['10.0.0.0/33'] }), 'spec.alwaysAllowRelaying[0]', /CIDR/);
});

test('a routing rule must match on something', () => {
  assertRefused(policy({ routing: { rules: [{ virtualMta: 'mta1' }] } }), 'spec.routing.rules[0]', /senderDomain, user or recipientDomain/);
});

test('a VirtualMtaPool refuses duplicate names, two retry forms and a too-long name, and fills defaults', () => {
  assertRefused(pool({ virtualMtas: [{ name: 'a', hostname: 'a.example.com' }, { name: 'a', hostname: 'b.example.com' }] }), 'spec.virtualMtas[1].name', /duplicate/);
  assertRefused(pool({ domainDefaults: [{ domain: 'example.com', retryAfter: '10m', retrySchedule: ['1m'] }] }), 'spec.domainDefaults[0].retrySchedule', /at most one/);
  assertRefused(pool({ domainDefaults: [{ domain: 'example.com' }, { domain: 'example.com' }] }), 'spec.domainDefaults[1].domain', /duplicate/);
  assertRefused(pool({ domainDefaults: [{ domain: 'example.com', retryAfter: '10 minutes' }] }), 'spec.domainDefaults[0].retryAfter', /duration/);
  assertRefused(pool({ spool: { mode: 'ephemeral', storageClassName: 'fast' } }), 'spec.spool.storageClassName', /persistent/);
  assertRefused(pool({}, 'p'.repeat(53)), 'metadata.name', /52/);
  const parsed = parseVmtaResource(pool({}));
  assert.ok(parsed.ok && parsed.value.kind === 'VirtualMtaPool');
  assert.equal(parsed.value.spec.replicas, 1);
  assert.deepEqual(parsed.value.spec.spool, { mode: 'persistent', size: '10Gi', minFree: '100Mi', reserve: '8Mi' });
  assert.equal(parsed.value.spec.egress.mode, 'podNetwork');
});
