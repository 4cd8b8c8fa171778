// The listener self-check probe against real endpoints: a real relay process serving every
// listener role (relay 25, submission 587, submissions 465, alternate 2525, and a plaintext relay
// listener) with a certificate from a test CA, and purpose-built misbehaving servers. Each
// failure is tried on every listener kind it can happen on, and must be reported at its step.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { probeListener, type ProbeResult, type ProbeStep, type ProbeTarget } from '../../operator/controller/listener-probe.ts';
import { startMisbehavingSmtp, type MisbehaviourOptions } from '../fixtures/misbehaving-smtp.ts';
import { freePort } from '../fixtures/relay-process.ts';
import { LISTENER_KINDS as KINDS, startRoleRelay, type ListenerKind, type RoleRelay } from '../fixtures/role-relay.ts';
import { createSelfSignedCertificate, createTestCa, type TestCa, type TestCertificate } from '../fixtures/tls.ts';

const HOSTNAME = 'relay.test';
const STEP_TIMEOUT_MS = 3000;

const TLS_KINDS = KINDS.filter((kind) => kind.tlsMode !== 'none');
const STARTTLS_KINDS = KINDS.filter((kind) => kind.tlsMode === 'starttls');

let ca: TestCa;
let goodCertificate: TestCertificate;
let roleRelay: RoleRelay;

function failedStep(result: ProbeResult): ProbeStep | undefined {
  return result.steps.find((verdict) => !verdict.ok)?.step;
}

function verdict(result: ProbeResult, step: ProbeStep) {
  const found = result.steps.find((v) => v.step === step);
  assert.ok(found, `step ${step} ran: ${JSON.stringify(result.steps)}`);
  return found;
}

function target(kind: ListenerKind, port: number, overrides: Partial<ProbeTarget> = {}): ProbeTarget {
  return { host: '127.0.0.1', port, tlsMode: kind.tlsMode, hostname: HOSTNAME, ca: ca.ca.toString(), expectAuth: kind.expectAuth, stepTimeoutMs: STEP_TIMEOUT_MS, ...overrides };
}

async function probeMisbehaving(kind: ListenerKind, options: MisbehaviourOptions, overrides: Partial<ProbeTarget> = {}): Promise<ProbeResult> {
  const server = await startMisbehavingSmtp(options);
  try {
    return await probeListener(target(kind, server.port, overrides));
  } finally {
    await server.close();
  }
}

before(async () => {
  ca = createTestCa();
  goodCertificate = ca.issue([HOSTNAME], { days: 60 });
  roleRelay = await startRoleRelay(goodCertificate, HOSTNAME);
});

after(async () => {
  await roleRelay?.stop();
  ca?.cleanup();
});

describe('a real relay', () => {
  for (const kind of KINDS) {
    test(`${kind.name}: every step passes, with TLS version, cipher, certificate expiry and banner reported`, async () => {
      const result = await probeListener(target(kind, roleRelay.ports.get(kind.name)!));
      assert.equal(failedStep(result), undefined, JSON.stringify(result.steps));
      assert.equal(result.ok, true);
      assert.match(result.banner ?? '', new RegExp(HOSTNAME.replace('.', '\\.')));
      assert.deepEqual(result.warnings, []);
      const steps = result.steps.map((v) => v.step).sort();
      if (kind.tlsMode === 'none') {
        assert.deepEqual(steps, ['auth', 'banner', 'connect', 'ehlo']);
        assert.equal(result.tls, undefined);
      } else {
        assert.deepEqual(steps, ['auth', 'banner', 'chain', 'connect', 'ehlo', 'expiry', 'name', 'tls']);
        assert.equal(result.tls?.version, 'TLSv1.3');
        assert.match(result.tls?.cipher ?? '', /^TLS_/);
        const expires = Date.parse(result.certificate!.expires);
        assert.ok(Math.abs(expires - (Date.now() + 60 * 86_400_000)) < 2 * 86_400_000, `expiry ${result.certificate!.expires} is about 60 days away`);
        assert.ok(result.certificate!.daysLeft >= 58 && result.certificate!.daysLeft <= 60);
      }
    });
  }

  for (const kind of TLS_KINDS) {
    test(`${kind.name}: a hostname the certificate does not name fails the name step`, async () => {
      const result = await probeListener(target(kind, roleRelay.ports.get(kind.name)!, { hostname: 'mail.other.test' }));
      assert.equal(failedStep(result), 'name');
      assert.match(verdict(result, 'name').message, /not for mail\.other\.test/);
      assert.equal(verdict(result, 'chain').ok, true, 'the chain still verifies');
    });

    test(`${kind.name}: without the listener's CA the chain fails against the system CAs`, async () => {
      const result = await probeListener(target(kind, roleRelay.ports.get(kind.name)!, { ca: undefined }));
      assert.equal(failedStep(result), 'chain');
      assert.match(verdict(result, 'chain').message, /system CAs: (UNABLE_TO_VERIFY_LEAF_SIGNATURE|UNABLE_TO_GET_ISSUER_CERT_LOCALLY)/);
    });
  }

  test('a listener kind probed with the wrong TLS expectation fails at the handshake, not later', async () => {
    const plaintext = KINDS.find((kind) => kind.tlsMode === 'none')!;
    const submissions = KINDS.find((kind) => kind.tlsMode === 'implicit')!;
    const result = await probeListener(target(submissions, roleRelay.ports.get(plaintext.name)!));
    assert.equal(failedStep(result), 'tls');
    assert.match(verdict(result, 'tls').message, /answers without TLS/);
  });
});

describe('endpoints that get one thing wrong', () => {
  for (const kind of KINDS) {
    test(`${kind.name}: a refused port fails the connect step and nothing after it runs`, async () => {
      const result = await probeListener(target(kind, await freePort()));
      assert.deepEqual(result.steps.map((v) => [v.step, v.ok]), [['connect', false]]);
      assert.match(result.steps[0]!.message, /connection refused/);
    });

    test(`${kind.name}: a server that never greets fails the banner step within the step timeout`, async () => {
      const started = Date.now();
      const result = await probeMisbehaving(kind, { tlsMode: kind.tlsMode, certificate: goodCertificate, silent: true }, { stepTimeoutMs: 500 });
      assert.equal(failedStep(result), 'banner');
      assert.match(verdict(result, 'banner').message, /no 220 greeting within 500 ms/);
      assert.ok(Date.now() - started < 5000);
    });
  }

  for (const kind of TLS_KINDS) {
    test(`${kind.name}: a self-signed certificate fails the chain step`, async () => {
      const selfSigned = createSelfSignedCertificate([HOSTNAME]);
      try {
        const result = await probeMisbehaving(kind, { tlsMode: kind.tlsMode, certificate: selfSigned });
        assert.equal(failedStep(result), 'chain');
        assert.match(verdict(result, 'chain').message, /DEPTH_ZERO_SELF_SIGNED_CERT \(the certificate is self-signed\)/);
        assert.equal(verdict(result, 'name').ok, true);
      } finally {
        selfSigned.cleanup();
      }
    });

    test(`${kind.name}: an expired certificate fails the expiry step, naming when it expired`, async () => {
      const expired = ca.issueBetween([HOSTNAME], '20250101000000Z', '20250201000000Z');
      const result = await probeMisbehaving(kind, { tlsMode: kind.tlsMode, certificate: expired });
      assert.equal(failedStep(result), 'expiry');
      assert.match(verdict(result, 'expiry').message, /expired at 2025-02-01T00:00:00Z/);
      assert.equal(result.certificate?.expires, '2025-02-01T00:00:00Z');
      assert.match(verdict(result, 'chain').message, /CERT_HAS_EXPIRED/);
    });

    test(`${kind.name}: a certificate expiring within 14 days passes with a warning`, async () => {
      const soon = ca.issue([HOSTNAME], { days: 5 });
      const result = await probeMisbehaving(kind, { tlsMode: kind.tlsMode, certificate: soon, authAfterTls: kind.expectAuth });
      assert.equal(result.ok, true, JSON.stringify(result.steps));
      assert.equal(result.warnings.length, 1);
      assert.match(result.warnings[0]!, /expires in [45] days/);
    });
  }

  for (const kind of STARTTLS_KINDS) {
    test(`${kind.name}: AUTH offered before STARTTLS fails the auth step`, async () => {
      const result = await probeMisbehaving(kind, { tlsMode: 'starttls', certificate: goodCertificate, authBeforeTls: true });
      assert.equal(failedStep(result), 'auth');
      assert.match(verdict(result, 'auth').message, /AUTH is offered before TLS/);
    });

    test(`${kind.name}: a server that does not offer STARTTLS fails the tls step`, async () => {
      const result = await probeMisbehaving(kind, { tlsMode: 'starttls', certificate: goodCertificate, hideStarttls: true });
      assert.equal(failedStep(result), 'tls');
      assert.match(verdict(result, 'tls').message, /STARTTLS is not offered/);
    });
  }

  test('relay-plaintext: AUTH offered on a listener without TLS fails the auth step', async () => {
    const result = await probeMisbehaving(KINDS.find((k) => k.tlsMode === 'none')!, { tlsMode: 'none', authBeforeTls: true });
    assert.equal(failedStep(result), 'auth');
  });

  for (const kind of TLS_KINDS.filter((k) => k.expectAuth)) {
    test(`${kind.name}: no AUTH after TLS on a listener that takes credentials fails the auth step`, async () => {
      const result = await probeMisbehaving(kind, { tlsMode: kind.tlsMode, certificate: goodCertificate, authAfterTls: false });
      assert.equal(failedStep(result), 'auth');
      assert.match(verdict(result, 'auth').message, /AUTH is not offered after TLS/);
    });
  }

  for (const kind of KINDS.filter((k) => k.tlsMode === 'implicit')) {
    test(`${kind.name}: plaintext SMTP where implicit TLS is expected fails the tls step with a hint`, async () => {
      const result = await probeMisbehaving(kind, { tlsMode: 'none' });
      assert.deepEqual(result.steps.map((v) => [v.step, v.ok]), [['connect', true], ['tls', false]]);
      assert.match(verdict(result, 'tls').message, /TLS handshake on connect \(implicit TLS\) failed: .*answers without TLS/);
    });
  }
});
