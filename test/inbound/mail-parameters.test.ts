// MAIL FROM / RCPT TO parameters over real sockets, as RFC 5321 §4.1.1.11 and the extension
// RFCs say: the relay advertises SIZE, 8BITMIME, SMTPUTF8, DSN (and AUTH once it is offered),
// not REQUIRETLS or CHUNKING. A generated class of parameter strings: each advertised keyword
// (DSN's RET and ENVID on MAIL FROM, NOTIFY and ORCPT on RCPT TO) with valid and invalid values
// in any letter case, unadvertised and unknown keywords with values valid under their own RFC,
// malformed tokens, duplicates and combinations. Expected: 250 (or the library's 552 for an
// announced SIZE over the limit), 555 5.5.4 for what was not advertised, 501 5.5.4 for bad syntax.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { RawSmtpClient } from '../fixtures/smtp-clients.ts';
import { expectCode, openSession, startHarness, type Harness } from './harness.ts';

interface Case {
  parameters: string;
  code: number;
}

/** A keyword in upper, lower and mixed case. */
const casings = (keyword: string): string[] => [...new Set([keyword.toUpperCase(), keyword.toLowerCase(), keyword[0]!.toUpperCase() + keyword.slice(1).toLowerCase()])];
const param = (keyword: string, value: string | null): string => (value === null ? keyword : `${keyword}=${value}`);

/** Advertised MAIL FROM keywords: valid values (null: no value) and invalid ones. */
const ADVERTISED: Record<string, { valid: (string | null)[]; invalid: (string | null)[] }> = {
  SIZE: { valid: ['0', '1000', '00000000000000001000'], invalid: [null, '', 'abc', '-1', '1.5', '1'.repeat(21), '+31+30'] },
  BODY: { valid: ['7BIT', '8BITMIME', '8bitmime', '7bit'], invalid: [null, '', '9BIT', '8BIT', 'BINARYMIME', '7BIT,8BITMIME'] },
  SMTPUTF8: { valid: [null], invalid: ['yes', 'true'] },
  RET: { valid: ['FULL', 'HDRS', 'full', 'Hdrs'], invalid: [null, '', 'FOO', 'FULL,HDRS'] },
  ENVID: { valid: ['QQ314159', 'a+2Bb', 'x'.repeat(100), '<id+40example.com>'], invalid: [null, '', 'x'.repeat(101), 'a+ZZ', 'a+2b', 'a+'] },
};

/** Advertised RCPT TO keywords (DSN, RFC 3461 §4.1 and §4.2). */
const RCPT_ADVERTISED: Record<string, { valid: (string | null)[]; invalid: (string | null)[] }> = {
  NOTIFY: { valid: ['NEVER', 'SUCCESS', 'FAILURE', 'DELAY', 'SUCCESS,FAILURE,DELAY', 'delay,failure', 'Never'], invalid: [null, '', 'NEVER,SUCCESS', 'FAILURE,NEVER', 'FOO', 'SUCCESS,', ',DELAY', 'SUCCESS;FAILURE'] },
  ORCPT: { valid: ['rfc822;a@b.example', 'rfc822;a+2Bb@b.example', 'utf-8;user@example.net', `rfc822;${'o'.repeat(480)}@b.example`], invalid: [null, '', 'nosemicolon', 'rfc822;', ';a@b.example', 'rfc822;a+zz@b.example', `rfc822;${'o'.repeat(2000)}@b.example`] },
};

/** Keywords the relay does not advertise, each with values valid under its own RFC. */
const UNADVERTISED: Record<string, (string | null)[]> = {
  REQUIRETLS: [null],
  'MT-PRIORITY': ['3'],
  FOO: ['bar', null],
  'X-VENDOR-1': ['on'],
};

/** Not a parameter at all (RFC 5321 §4.1.2 esmtp-param): 501 whatever the keyword. */
const MALFORMED = ['=bar', '-FOO=1', 'FO_O=1', 'FOO=a=b', 'FOO=', 'F\u00d6O=1', '=', 'SIZE==1', 'BODY=7BIT='];

function* mailCases(): Generator<Case> {
  for (const [keyword, { valid, invalid }] of Object.entries(ADVERTISED)) {
    for (const name of casings(keyword)) {
      for (const value of valid) yield { parameters: param(name, value), code: 250 };
      for (const value of invalid) yield { parameters: param(name, value), code: 501 };
      // A parameter may appear once, whatever the case of its keyword (RFC 5321 §4.1.2).
      yield { parameters: `${param(keyword, valid[0]!)} ${param(name, valid[0]!)}`, code: 501 };
    }
  }
  yield { parameters: 'SIZE=99999999999999999999', code: 552 };
  yield { parameters: 'SIZE=1000 BODY=8BITMIME SMTPUTF8', code: 250 };
  yield { parameters: 'RET=HDRS ENVID=QQ314159 SIZE=10', code: 250 };
  // RCPT TO's parameters are not MAIL FROM's.
  for (const [keyword, { valid }] of Object.entries(RCPT_ADVERTISED)) yield { parameters: param(keyword, valid[0]!), code: 555 };
  for (const [keyword, values] of Object.entries(UNADVERTISED)) {
    for (const name of casings(keyword)) {
      for (const value of values) {
        yield { parameters: param(name, value), code: 555 };
        yield { parameters: `SIZE=10 ${param(name, value)}`, code: 555 };
      }
    }
  }
  yield { parameters: 'AUTH=<>', code: 555 };
  for (const token of MALFORMED) {
    yield { parameters: token, code: 501 };
    yield { parameters: `BODY=8BITMIME ${token}`, code: 501 };
  }
}

function* rcptCases(): Generator<Case> {
  for (const [keyword, { valid, invalid }] of Object.entries(RCPT_ADVERTISED)) {
    for (const name of casings(keyword)) {
      for (const value of valid) yield { parameters: param(name, value), code: 250 };
      for (const value of invalid) yield { parameters: param(name, value), code: 501 };
      yield { parameters: `${param(keyword, valid[0]!)} ${param(name, valid[0]!)}`, code: 501 };
    }
  }
  yield { parameters: 'NOTIFY=SUCCESS,DELAY ORCPT=rfc822;rcpt@allowed.example', code: 250 };
  // MAIL FROM's parameters are not RCPT TO's.
  const keywords: Record<string, (string | null)[]> = { ...UNADVERTISED, SIZE: ['1'], BODY: ['8BITMIME'], SMTPUTF8: [null], AUTH: ['<>'], RET: ['FULL'], ENVID: ['QQ314159'] };
  for (const [keyword, values] of Object.entries(keywords)) {
    for (const name of casings(keyword)) for (const value of values) yield { parameters: param(name, value), code: 555 };
  }
  for (const token of MALFORMED) yield { parameters: token, code: 501 };
}

function assertReply(text: string, code: number, what: string): void {
  assert.equal(Number(text.slice(0, 3)), code, `${what}: ${text}`);
  if (code === 555 || code === 501) assert.match(text, /^5\d\d 5\.5\.4 /, what);
}

describe('MAIL FROM and RCPT TO parameters', () => {
  let harness: Harness;
  before(async () => {
    harness = await startHarness({ mutate: (input) => void (input.listeners[0]!.limits = { maxErrors: 1000 }) });
  });
  after(() => harness.close());

  test('EHLO advertises SIZE, 8BITMIME, SMTPUTF8 and DSN, not REQUIRETLS or CHUNKING (also after STARTTLS)', async () => {
    for (const starttls of [false, true]) {
      const client = await openSession(harness, 'relay', { starttls });
      try {
        const keywords = (await client.command('EHLO client.test')).lines.slice(1).map((line) => line.slice(4).split(' ')[0]);
        for (const present of ['SIZE', '8BITMIME', 'SMTPUTF8', 'PIPELINING', 'ENHANCEDSTATUSCODES', 'DSN']) assert.ok(keywords.includes(present), `${present} in ${keywords.join(',')}`);
        for (const absent of ['REQUIRETLS', 'CHUNKING', 'BINARYMIME']) assert.ok(!keywords.includes(absent), `${absent} in ${keywords.join(',')}`);
      } finally {
        client.close();
      }
    }
  });

  test('the class of MAIL FROM parameters gets 250, 552, 555 or 501 as advertised', async () => {
    const client = await openSession(harness, 'relay');
    let cases = 0;
    try {
      for (const { parameters, code } of mailCases()) {
        assertReply((await client.command(`MAIL FROM:<sender@outside.example> ${parameters}`)).text, code, parameters);
        // A refused MAIL FROM opens no transaction.
        expectCode(await client.command('RCPT TO:<rcpt@allowed.example>'), code === 250 ? 250 : 503);
        expectCode(await client.command('RSET'), 250);
        cases++;
      }
    } finally {
      client.close();
    }
    assert.ok(cases > 150, `${cases} cases`);
    assert.match(await harness.metric('vmta_inbound_rejections_total'), /reason="unsupported_parameter"\} [1-9]/);
  });

  test('the class of RCPT TO parameters gets 250 for DSN\'s NOTIFY and ORCPT, 555 or 501 otherwise', async () => {
    const client = await openSession(harness, 'relay');
    let cases = 0;
    try {
      for (const { parameters, code } of rcptCases()) {
        expectCode(await client.command('MAIL FROM:<sender@outside.example>'), 250);
        assertReply((await client.command(`RCPT TO:<rcpt@allowed.example> ${parameters}`)).text, code, parameters);
        // A refused RCPT TO adds no recipient.
        if (code !== 250) assert.equal((await client.command('DATA')).code, 503, parameters);
        expectCode(await client.command('RSET'), 250);
        cases++;
      }
    } finally {
      client.close();
    }
    assert.ok(cases > 80, `${cases} cases`);
  });

  test('AUTH= exists once AUTH is offered (after STARTTLS): <> and xtext accepted, bad xtext 501', async () => {
    const client = await openSession(harness, 'relay', { starttls: true });
    try {
      for (const [parameters, code] of [['AUTH=<>', 250], ['AUTH=alice+40alice.example', 250], ['AUTH=a+zz', 501], ['AUTH=', 501], ['AUTH', 501], ['auth=<> AUTH=<>', 501]] as const) {
        assertReply((await client.command(`MAIL FROM:<sender@outside.example> ${parameters}`)).text, code, parameters);
        expectCode(await client.command('RSET'), 250);
      }
    } finally {
      client.close();
    }
  });

  test('after HELO no extension exists: any parameter is 555', async () => {
    const client = await RawSmtpClient.connect(harness.port('relay'));
    try {
      expectCode(await client.read(), 220);
      expectCode(await client.command('HELO client.test'), 250);
      for (const parameters of ['SIZE=10', 'BODY=8BITMIME', 'SMTPUTF8']) {
        assertReply((await client.command(`MAIL FROM:<sender@outside.example> ${parameters}`)).text, 555, parameters);
      }
      expectCode(await client.command('MAIL FROM:<sender@outside.example>'), 250);
    } finally {
      client.close();
    }
  });
});
