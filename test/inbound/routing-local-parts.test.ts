// Local parts that would route elsewhere (`%`, `!`, `@` and their NFKC look-alikes; quoted,
// escaped, behind source routes, in any domain spelling) are never accepted under a
// relay-domain or relay-address rule: as a pure function over the whole generated class, and
// through a real relay process with a raw SMTP client and Python's smtplib. The controls (the
// same shapes without a routing character) are accepted, so the class test can fail both ways.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { RelayPolicy, type RuntimeConfigInput } from '../../mta/config/schema.ts';
import { parseMailbox } from '../../mta/inbound/address.ts';
import { compileRelayPolicy, decideRecipient } from '../../mta/inbound/relay-policy.ts';
import { controlForms, routingForms, type AddressForm } from '../fixtures/address-forms.ts';
import { baseRelayConfig, freePort, startRelayProcess, temporaryDirectory, writeRelayConfig, type RelayProcess } from '../fixtures/relay-process.ts';
import { RawSmtpClient, run } from '../fixtures/smtp-clients.ts';

const POLICY_INPUT = {
  name: 'inbound',
  relayDomains: ['allowed.example', 'xn--bcher-kva.example'],
  relayAddresses: ['/fbl-.*@feedback\\.example/i'],
};
const policy = compileRelayPolicy(RelayPolicy.parse(POLICY_INPUT));

/** Forms under each rule: a relay domain, an IDN relay domain (also written as its U-label), a relay-address regex that any local part after "fbl-" satisfies. */
const RULES: Array<{ rule: string; routing: AddressForm[]; controls: AddressForm[] }> = [
  { rule: 'relayDomains allowed.example', routing: routingForms('allowed.example'), controls: controlForms('allowed.example') },
  { rule: 'relayDomains xn--bcher-kva.example', routing: routingForms('xn--bcher-kva.example', { unicode: 'bücher.example' }), controls: controlForms('xn--bcher-kva.example', { unicode: 'bücher.example' }) },
  { rule: 'relayAddresses /fbl-.*@feedback\\.example/i', routing: routingForms('feedback.example', { prefix: 'fbl-' }), controls: controlForms('feedback.example', { prefix: 'fbl-' }).filter((form) => !form.mailbox.replace(/^@[^:]*:/, '').startsWith('"')) },
];

function decide(form: AddressForm): 'accepted' | 'refused' | 'unparsable' {
  const parsed = parseMailbox(form.mailbox);
  if (!parsed.ok) return 'unparsable';
  return decideRecipient({ policy, user: undefined, clientAddress: '203.0.113.9', recipient: parsed.mailbox, smtpUtf8: true }).ok ? 'accepted' : 'refused';
}

describe('routing characters in local parts, as a pure function', () => {
  for (const { rule, routing, controls } of RULES) {
    test(`${rule}: none of ${routing.length} routing forms is accepted`, () => {
      const accepted = routing.filter((form) => decide(form) === 'accepted');
      assert.deepEqual(accepted.map((form) => `${form.mailbox} (${form.how})`), []);
      // The class is not empty of parsable forms: most are refused by the policy, not by the parser.
      assert.ok(routing.filter((form) => decide(form) === 'refused').length > routing.length / 2);
    });
    test(`${rule}: every one of ${controls.length} controls without a routing character is accepted`, () => {
      const refused = controls.filter((form) => decide(form) !== 'accepted');
      assert.deepEqual(refused.map((form) => `${form.mailbox} (${form.how})`), []);
    });
  }

  test('the flag reads what the local part means: quoted, escaped and NFKC look-alikes are routing characters', () => {
    for (const mailbox of ['"user%other"@allowed.example', '"a\\%b"@allowed.example', '"user@evil"@allowed.example', '"user!evil"@allowed.example', 'user%evil@allowed.example', 'user\uFF05evil@allowed.example', '"\\u\\s\\e\\r\\@\\e\\v\\i\\l"@ALLOWED.example.']) {
      const parsed = parseMailbox(mailbox);
      assert.ok(parsed.ok, mailbox);
      assert.equal(parsed.mailbox.hasRoutingCharacters, true, mailbox);
    }
    for (const mailbox of ['"user.name"@allowed.example', '"a\\"b"@allowed.example', 'user+tag@allowed.example']) {
      const parsed = parseMailbox(mailbox);
      assert.ok(parsed.ok, mailbox);
      assert.equal(parsed.mailbox.hasRoutingCharacters, false, mailbox);
    }
  });
});

/** RCPT replies from a raw client, a fresh transaction every 50 recipients and a fresh session every 400 (the error limit). */
async function rcptReplies(port: number, forms: AddressForm[]): Promise<number[]> {
  const codes: number[] = [];
  for (let start = 0; start < forms.length; start += 400) {
    const client = await RawSmtpClient.connect(port);
    try {
      assert.equal((await client.read()).code, 220);
      assert.equal((await client.command('EHLO client.test')).code, 250);
      const batch = forms.slice(start, start + 400);
      for (let index = 0; index < batch.length; index++) {
        if (index % 50 === 0) {
          await client.command('RSET');
          assert.equal((await client.command('MAIL FROM:<sender@client.example> SMTPUTF8')).code, 250);
        }
        codes.push((await client.command(`RCPT TO:<${batch[index]!.mailbox}>`)).code);
      }
      await client.command('QUIT');
    } finally {
      client.close();
    }
  }
  return codes;
}

const SMTPLIB_RCPT = `
import json, smtplib, sys
o = json.loads(sys.stdin.read())
codes = []
for index, mailbox in enumerate(o['mailboxes']):
    if index % 400 == 0:
        if index: s.quit()
        s = smtplib.SMTP('127.0.0.1', o['port'], timeout=30)
        s.command_encoding = 'utf-8'
        s.ehlo('client.test')
    if index % 50 == 0:
        s.rset()
        s.mail('sender@client.example', ['SMTPUTF8'])
    codes.append(s.docmd('RCPT', 'TO:<%s>' % mailbox)[0])
s.quit()
print(json.dumps(codes))
`;

describe('routing characters in local parts, through a relay process', () => {
  let relay: RelayProcess;
  let port: number;
  let directory: Awaited<ReturnType<typeof temporaryDirectory>>;
  before(async () => {
    directory = await temporaryDirectory('vmta-routing-');
    port = await freePort();
    const config: RuntimeConfigInput = baseRelayConfig({
      listeners: [{ name: 'relay', address: '127.0.0.1', port, relayPolicy: 'inbound', auth: { mechanisms: [] }, limits: { maxErrors: 1000 } }],
      relayPolicies: [POLICY_INPUT],
      admin: { address: '127.0.0.1', port: await freePort() },
    });
    await writeRelayConfig(directory.path, config);
    relay = await startRelayProcess({ configDir: directory.path, adminPort: config.admin!.port! });
  });
  after(async () => {
    await relay?.kill();
    await directory?.remove();
  });

  for (const { rule, routing, controls } of RULES) {
    test(`${rule}: the relay answers every routing form with 550 5.7.1 or 501, never 250 (raw client)`, async () => {
      const codes = await rcptReplies(port, routing);
      const accepted = routing.filter((_, index) => codes[index] === 250 || codes[index] === 251);
      assert.deepEqual(accepted.map((form) => `${form.mailbox} (${form.how})`), []);
      assert.ok(codes.every((code) => code === 550 || code === 501 || code === 553), `unexpected replies: ${[...new Set(codes)].join(', ')}`);
      assert.ok(codes.filter((code) => code === 550).length > 0, 'no form reached the relay policy');
    });
    test(`${rule}: the relay accepts the controls the address parser of smtp-server takes (raw client)`, async () => {
      const codes = await rcptReplies(port, controls);
      const refusedByPolicy = controls.filter((_, index) => codes[index] === 550);
      assert.deepEqual(refusedByPolicy.map((form) => `${form.mailbox} (${form.how})`), []);
      assert.ok(codes.filter((code) => code === 250).length > controls.length / 2, `only ${codes.filter((code) => code === 250).length} of ${controls.length} controls accepted`);
    });
  }

  test('Python smtplib: the issue\'s forms and every routing form under allowed.example are refused, the controls accepted', async () => {
    const routing = [
      '"user%other.example"@allowed.example', '"user!other.example"@allowed.example', '"a\\%b"@allowed.example', '"user@evil"@allowed.example', 'user%evil@allowed.example', '"user!evil"@ALLOWED.EXAMPLE',
      ...RULES[0]!.routing.map((form) => form.mailbox),
    ];
    const result = await run('python3', ['-c', SMTPLIB_RCPT], JSON.stringify({ port, mailboxes: routing }));
    assert.equal(result.code, 0, result.stderr);
    const codes = JSON.parse(result.stdout) as number[];
    assert.equal(codes.length, routing.length);
    assert.deepEqual(routing.filter((_, index) => codes[index] === 250), []);
    const controls = ['user.other@allowed.example', '"user.other"@allowed.example', 'fbl-7@feedback.example'];
    const controlResult = await run('python3', ['-c', SMTPLIB_RCPT], JSON.stringify({ port, mailboxes: controls }));
    assert.deepEqual(JSON.parse(controlResult.stdout), [250, 250, 250]);
  });
});
