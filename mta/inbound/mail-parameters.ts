// The ESMTP parameters of MAIL FROM and RCPT TO, judged on the raw command line against what
// the session advertised in EHLO (RFC 5321 §4.1.1.11 and §4.1.2, and each extension's RFC):
// a parameter whose keyword the session did not advertise is "not recognized or not
// implemented" (555 5.5.4); a malformed parameter, a repeated one, or a bad value of an
// advertised one is a syntax error in the arguments (501 5.5.4). What the relay advertises and
// so accepts: SIZE (RFC 1870), BODY=7BIT|8BITMIME (RFC 6152), SMTPUTF8 (RFC 6531), where
// AUTH is offered AUTH=<mailbox xtext> (RFC 4954 §5), and DSN (RFC 3461): RET and ENVID on MAIL
// FROM, NOTIFY and ORCPT on RCPT TO, which delivery honours (mta/delivery/dsn.ts) and passes on.
// REQUIRETLS (RFC 8689) is not advertised — the relay would not honour it onward — so it is 555
// like any unknown keyword.

export interface AdvertisedExtensions {
  /** The session opened with EHLO (after HELO no extension exists, RFC 5321 §4.1.1.1). */
  ehlo: boolean;
  /** AUTH is offered in this session, so MAIL FROM's AUTH= parameter exists. */
  auth: boolean;
}

export type ParameterVerdict = { ok: true } | { ok: false; code: 501 | 555; message: string };

/** RFC 5321 §4.1.2: esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-"). */
const KEYWORD = /^[A-Za-z0-9][A-Za-z0-9-]*$/;
/** esmtp-value = 1*(%d33-60 / %d62-126), plus UTF-8 under SMTPUTF8 (RFC 6531 §3.3). */
const VALUE = /^(?:[\x21-\x3c\x3e-\x7e]|[^\x00-\x7f])+$/;
/** RFC 3461 §4: xtext = *( xchar / hexchar ), xchar = "!".."~" except "+" and "=". */
const XTEXT = /^(?:[\x21-\x2a\x2c-\x3c\x3e-\x7e]|\+[0-9A-F]{2})*$/;
const SIZE_VALUE = /^\d{1,20}$/;
const BODY_VALUES = new Set(['7BIT', '8BITMIME']);
/** RFC 3461 §4.1: NEVER alone, or one or more of SUCCESS, FAILURE, DELAY. */
const NOTIFY_VALUE = /^(?:NEVER|(?:SUCCESS|FAILURE|DELAY)(?:,(?:SUCCESS|FAILURE|DELAY))*)$/i;
/** RFC 3461 §4.2: addr-type (an atom, e.g. rfc822 or utf-8) ";" xtext. */
const ORCPT_VALUE = /^[A-Za-z0-9!#$%&'*\/=?^_`{|}~-]+;(?:[\x21-\x2a\x2c-\x3c\x3e-\x7e]|\+[0-9A-F]{2})+$/;
/** RFC 3461 §4.4 and §4.2: ENVID at most 100 characters, ORCPT at most 500. */
const MAX_ENVID = 100;
const MAX_ORCPT = 500;

type ValueRule = (value: string | undefined) => string | null;

const needsValue = (check: (value: string) => boolean, what: string): ValueRule => (value) =>
  value === undefined ? `requires a value (${what})` : check(value) ? null : `must be ${what}`;
const noValue: ValueRule = (value) => (value === undefined ? null : 'takes no value');

type ParameterRules = Record<string, { rule: ValueRule; offered: (advertised: AdvertisedExtensions) => boolean }>;

/** The MAIL FROM parameters the relay advertises, each with the rule for its value. */
const MAIL_PARAMETERS: ParameterRules = {
  SIZE: { rule: needsValue((value) => SIZE_VALUE.test(value), '1 to 20 digits'), offered: () => true },
  BODY: { rule: needsValue((value) => BODY_VALUES.has(value.toUpperCase()), '7BIT or 8BITMIME'), offered: () => true },
  SMTPUTF8: { rule: noValue, offered: () => true },
  AUTH: { rule: needsValue((value) => value === '<>' || (value.length > 0 && XTEXT.test(value)), '<> or an xtext mailbox'), offered: (advertised) => advertised.auth },
  RET: { rule: needsValue((value) => /^(FULL|HDRS)$/i.test(value), 'FULL or HDRS'), offered: () => true },
  ENVID: { rule: needsValue((value) => value.length <= MAX_ENVID && XTEXT.test(value), `xtext of at most ${MAX_ENVID} characters`), offered: () => true },
};

/** The RCPT TO parameters (DSN's), each with the rule for its value. */
const RCPT_PARAMETERS: ParameterRules = {
  NOTIFY: { rule: needsValue((value) => NOTIFY_VALUE.test(value), 'NEVER, or SUCCESS, FAILURE and DELAY separated by commas'), offered: () => true },
  ORCPT: { rule: needsValue((value) => value.length <= MAX_ORCPT && ORCPT_VALUE.test(value), `addr-type;xtext (e.g. rfc822;user@example.com) of at most ${MAX_ORCPT} characters`), offered: () => true },
};

const syntaxError = (message: string): ParameterVerdict => ({ ok: false, code: 501, message: `5.5.4 ${message}` });
const unsupported = (keyword: string): ParameterVerdict => ({ ok: false, code: 555, message: `5.5.4 ${keyword} parameter not recognized or not implemented` });

/**
 * The parameters after the path of `MAIL FROM:<...>` / `RCPT TO:<...>`, or null when the line
 * has no well-formed path (smtp-server answers that with its own 501).
 */
export function parameterTokens(commandLine: string): string[] | null {
  const colon = commandLine.indexOf(':');
  if (colon === -1) return null;
  const [path, ...parameters] = commandLine.slice(colon + 1).trim().split(/\s+/);
  if (path === undefined || !/^<[^<>]*>$/.test(path)) return null;
  return parameters.filter((token) => token !== '');
}

export function checkParameters(command: 'MAIL' | 'RCPT', tokens: readonly string[], advertised: AdvertisedExtensions): ParameterVerdict {
  const seen = new Set<string>();
  for (const token of tokens) {
    const equals = token.indexOf('=');
    const keyword = equals === -1 ? token : token.slice(0, equals);
    const value = equals === -1 ? undefined : token.slice(equals + 1);
    if (!KEYWORD.test(keyword)) return syntaxError(`Bad parameter syntax: ${JSON.stringify(token.slice(0, 64))}`);
    if (value !== undefined && !VALUE.test(value)) return syntaxError(`Bad ${keyword.toUpperCase()} parameter value syntax`);
    const name = keyword.toUpperCase();
    if (seen.has(name)) return syntaxError(`Duplicate ${name} parameter`);
    seen.add(name);
    const known = advertised.ehlo ? (command === 'MAIL' ? MAIL_PARAMETERS : RCPT_PARAMETERS)[name] : undefined;
    if (!known || !known.offered(advertised)) return unsupported(name.slice(0, 64));
    const problem = known.rule(value);
    if (problem) return syntaxError(`${name} parameter ${problem}`);
  }
  return { ok: true };
}
