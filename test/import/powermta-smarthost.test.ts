// PowerMTA's smarthost AUTH (`route` or `smtp-hosts` with `auth-username` and `auth-password` in
// a <domain> block) imported as a smarthost route: the route's host and port (465 implicit TLS,
// others STARTTLS), TLS required, the login in a kubernetes.io/basic-auth Secret named after the
// domain; AUTH without a route, or half a login, is refused with its reason; the imported
// resources render without problems; and no password is ever shown in the import report.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseVmtaResource } from '../../operator/api/parse.ts';
import type { VirtualMtaPool } from '../../operator/api/virtual-mta-pool.ts';
import { parsePowerMtaConfig } from '../../operator/import/powermta-config.ts';
import { importPowerMta, type ImportResult } from '../../operator/import/powermta-import.ts';
import { formatReport } from '../../operator/import/powermta-report.ts';
import { renderNamespace } from '../../operator/render/pool.ts';

type Resource = { kind: string; type?: string; metadata: { name: string }; spec: Record<string, any>; stringData?: Record<string, string> };
const VMTA = '<virtual-mta a>\nsmtp-source-host 127.0.0.2 a.test\n</virtual-mta>\n';

function importText(text: string): ImportResult {
  return importPowerMta(parsePowerMtaConfig(text, '/etc/pmta/config'), { poolName: 'p' });
}
const pool = (result: ImportResult) => (result.resources as Resource[]).find((resource) => resource.kind === 'VirtualMtaPool')!;
const secret = (result: ImportResult, name: string) => (result.resources as Resource[]).find((resource) => resource.kind === 'Secret' && resource.metadata.name === name);

test('a route with auth-username and auth-password becomes a smarthost route with its login in a basic-auth Secret, for each port form', () => {
  for (const [route, host, port, tls] of [
    ['smtp.esp.test:587', 'smtp.esp.test', 587, 'starttls'],
    ['smtp.esp.test:2525', 'smtp.esp.test', 2525, 'starttls'],
    ['[192.0.2.25]:465', '192.0.2.25', 465, 'implicit'],
    ['smtp.esp.test', 'smtp.esp.test', 25, 'starttls'],
  ] as const) {
    const result = importText(`${VMTA}<domain *>\nroute ${route}\nauth-username apikey\nauth-password S3cret-${port}\n</domain>\n<domain *.example.com>\nsmtp-hosts smtp.esp.test:587\nauth-username other\nauth-password Other-pw\n</domain>\n`);
    const [star, sub] = pool(result).spec.domainDefaults;
    assert.deepEqual(star, { domain: '*', smarthost: { hosts: [host], ports: [{ port, tls }], tlsPolicy: 'required', auth: { secretName: 'smarthost-login-default' } } }, route);
    assert.equal(sub.smarthost.auth.secretName, 'smarthost-login-any.example.com');
    assert.deepEqual(secret(result, 'smarthost-login-default'), { apiVersion: 'v1', kind: 'Secret', metadata: { name: 'smarthost-login-default' }, type: 'kubernetes.io/basic-auth', stringData: { username: 'apikey', password: `S3cret-${port}` } });
    const parsed = parseVmtaResource(pool(result));
    assert.ok(parsed.ok, JSON.stringify(parsed));
    const rendered = renderNamespace({ pools: [parsed.value as VirtualMtaPool], listeners: [], policies: [], secrets: (result.resources as Resource[]).filter((resource) => resource.kind === 'Secret').map((resource) => ({ name: resource.metadata.name, keys: Object.keys(resource.stringData ?? {}) })), image: 'local' });
    assert.deepEqual([...rendered.problems, ...[...rendered.pools.values()].flatMap((render) => render.problems)], [], route);
    const text = formatReport(result.report, '/etc/pmta');
    assert.ok(!text.includes(`S3cret-${port}`) && !text.includes('Other-pw'), `no password in the report:\n${text}`);
    assert.match(text, /approximated .*auth-username apikey: smarthost\.auth\.secretName: smarthost-login-default/);
  }
});

test('AUTH without a route, or half a login, is refused with the reason and leaves the route as it was', () => {
  for (const [block, reason] of [
    ['auth-username apikey\nauth-password pw-1', /no route or smtp-hosts/],
    ['route smtp.esp.test:587\nauth-username apikey', /go together/],
    ['route smtp.esp.test:587\nauth-password pw-2', /go together/],
  ] as const) {
    const result = importText(`${VMTA}<domain esp.test>\n${block}\n</domain>\n`);
    const notes = result.report.notes.filter((entry) => entry.directive.startsWith('auth-'));
    assert.ok(notes.length > 0 && notes.every((entry) => entry.coverage === 'refused' && reason.test(entry.message)), JSON.stringify(notes));
    const settings = pool(result).spec.domainDefaults[0];
    assert.equal(settings.smarthost, undefined);
    assert.equal(settings.smtpHost, block.includes('route') ? 'smtp.esp.test:587' : undefined);
    assert.ok(!formatReport(result.report, '/etc/pmta').includes('pw-'), 'no password in the report');
  }
});

test('an <smtp-user> password is not shown in the import report either', () => {
  const result = importText(`${VMTA}<smtp-user app>\npassword Sub-pw-9\n</smtp-user>\n`);
  const text = formatReport(result.report, '/etc/pmta');
  assert.match(text, /password \(value not shown\)/);
  assert.ok(!text.includes('Sub-pw-9'), text);
});
