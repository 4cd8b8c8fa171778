// Envelope addresses as the relay policy sees them: a strict RFC 5321 Mailbox parser and the
// normalisation every relay decision uses. Decisions about forms that have fooled relays:
// - source routes (`<@a,@b:user@c>`): RFC 5321 says accept and ignore the route; smtp-server
//   strips it before we see the address, and `parseMailbox` strips it too, so only the final
//   mailbox is ever judged;
// - several `@` outside a quoted local part (`user@allowed@evil`): refused (501);
// - quoted local parts: allowed; the domain is what follows the last `@` after the quoted
//   string, so `"user@evil"@allowed` has domain `allowed` and `"x"@evil` has domain `evil`;
// - `%`, `!` and `@` in the local part (`user%other@allowed`, `host!user@allowed`,
//   `"user@evil"@allowed`: sendmail-style routing that a next hop may still honour): parsed,
//   but flagged `hasRoutingCharacters` so the relay policy refuses them where relaying is
//   granted only by recipient domain or address. The flag looks at what the local part means,
//   not how it is written: quoted or not, backslash-escaped or not (`"a\%b"`), and after NFKC
//   folding, so the full-width and small forms (`％`, `﹪`, `！`, `＠`) that a normalising next
//   hop would turn into routing characters count too;
// - a trailing dot (`user@allowed.`) names the same domain and is removed; letter case of the
//   domain is folded; IDN domains are normalised to punycode with node:url domainToASCII;
// - a non-ASCII local part needs SMTPUTF8 (the caller checks `asciiLocalPart`).
import { domainToASCII } from 'node:url';

export interface Mailbox {
  /** Local part as received (quotes kept); never case-folded (RFC 5321 leaves it to the target host). */
  localPart: string;
  /** Lower-case ASCII (punycode) domain without a trailing dot, or an address literal like "[192.0.2.1]". */
  domain: string;
  /** `localPart@domain`, the normalised form handed to the spool. */
  address: string;
  /** `%`, `!` or `@` in what the local part means (quotes and escapes removed, NFKC-folded): routing syntax. */
  hasRoutingCharacters: boolean;
  asciiLocalPart: boolean;
}

export type MailboxResult = { ok: true; mailbox: Mailbox } | { ok: false; error: string };

const ATEXT = /^[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~\u0080-\uFFFF]+$/u;
const QUOTED_CONTENT = /^(?:[\x20\x21\x23-\x5b\x5d-\x7e\u0080-\uFFFF]|\\[\x20-\x7e])*$/u;
const SOURCE_ROUTE = /^@[^\s,:@]+(?:,@[^\s,:@]+)*:/;
const MAX_LOCAL_PART = 64;
const MAX_PATH = 254;

/** Parses a Mailbox (the text between `<` and `>`), stripping a source route. */
export function parseMailbox(raw: string): MailboxResult {
  const text = raw.replace(SOURCE_ROUTE, '');
  if (text.length === 0) return { ok: false, error: 'empty address' };
  if (text.length > MAX_PATH) return { ok: false, error: 'address too long' };
  let localPart: string;
  let rest: string;
  if (text.startsWith('"')) {
    const end = findClosingQuote(text);
    if (end < 0) return { ok: false, error: 'unterminated quoted local part' };
    localPart = text.slice(0, end + 1);
    if (!QUOTED_CONTENT.test(localPart.slice(1, -1))) return { ok: false, error: 'invalid character in quoted local part' };
    rest = text.slice(end + 1);
    if (!rest.startsWith('@')) return { ok: false, error: 'expected "@" after the quoted local part' };
    rest = rest.slice(1);
  } else {
    const at = text.indexOf('@');
    if (at < 0) return { ok: false, error: 'missing "@"' };
    localPart = text.slice(0, at);
    rest = text.slice(at + 1);
    if (localPart.split('.').some((atom) => !ATEXT.test(atom))) return { ok: false, error: 'invalid local part' };
  }
  if (rest.includes('@')) return { ok: false, error: 'more than one "@"' };
  if (localPart.length === 0 || Buffer.byteLength(localPart) > MAX_LOCAL_PART) return { ok: false, error: 'invalid local part length' };
  const domain = normaliseDomain(rest);
  if (domain === null) return { ok: false, error: 'invalid domain' };
  return {
    ok: true,
    mailbox: {
      localPart,
      domain,
      address: `${localPart}@${domain}`,
      hasRoutingCharacters: ROUTING_CHARACTERS.test(localPartContent(localPart).normalize('NFKC')),
      // eslint-disable-next-line no-control-regex
      asciiLocalPart: /^[\x00-\x7f]*$/.test(localPart),
    },
  };
}

/** Lower-case ASCII form of a domain (IDN to punycode, trailing dot removed), or null when it is not a domain. */
export function normaliseDomain(raw: string): string | null {
  if (raw.startsWith('[') && raw.endsWith(']')) return raw.toLowerCase();
  const withoutDot = raw.endsWith('.') ? raw.slice(0, -1) : raw;
  if (withoutDot.length === 0 || withoutDot.length > 253) return null;
  const ascii = domainToASCII(withoutDot);
  if (ascii === '') return null;
  const labels = ascii.split('.');
  if (!labels.every((label) => /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/.test(label))) return null;
  return ascii;
}

const ROUTING_CHARACTERS = /[%!@]/;

/** The local part as its owner reads it: a quoted string without its quotes and backslash escapes. */
export function localPartContent(localPart: string): string {
  return localPart.startsWith('"') ? localPart.slice(1, -1).replace(/\\(.)/gsu, '$1') : localPart;
}

function findClosingQuote(text: string): number {
  for (let index = 1; index < text.length; index++) {
    const char = text[index];
    if (char === '\\') index++;
    else if (char === '"') return index;
  }
  return -1;
}
