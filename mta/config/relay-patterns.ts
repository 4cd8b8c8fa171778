// Relay patterns: the `relayAddresses` entries (an exact address, or "/regex/flags" matched
// against the whole address) compiled one way for both the config schema and the relay's
// policy, and the test that says whether a list of relay domains or relay addresses is an open
// relay: it grants relaying for some address that no operator owns.
//
// "Open" is decided by probing, because no syntactic rule recognises every regex that matches
// everything (`.*`, `.+`, `[^@]+@.+`, `(?:x|.*)`, `.*@.*\.com`...): a fixed set of addresses at
// randomly generated domains under common top-level domains (see OPEN_RELAY_PROBES) is matched
// against the patterns, and a list that matches any probe is open. A legitimate pattern names
// the operator's own domains, which no probe is under; `*`, `*.com`, `/.*/` or `/.*@.*\.com/`
// match probes. The probes are generated from a fixed seed, so the same config is always
// judged the same way. The probe is a guard against carelessness, not a proof: a pattern built
// to avoid exactly these probes passes, and patterns wider than one's own domains that avoid
// every probe (`.*@(gmail|yahoo)\.com`) are still the author's responsibility.
import { matchesDomainPattern } from '../routing/domain-pattern.ts';
import { seededRandom } from './seeded-random.ts';

export type RelayAddressMatcher = { kind: 'exact'; address: string } | { kind: 'regex'; regex: RegExp };

const REGEX_ENTRY = /^\/(.*)\/([imsu]*)$/s;

/** Compiles one relayAddresses entry as the relay matches it, or returns why it cannot be. */
export function compileRelayAddress(entry: string): { ok: true; matcher: RelayAddressMatcher } | { ok: false; error: string } {
  const regex = REGEX_ENTRY.exec(entry);
  if (!regex) {
    return entry.includes('@') ? { ok: true, matcher: { kind: 'exact', address: entry.toLowerCase() } } : { ok: false, error: 'an address such as bounces@example.com or a /regular expression/ with flags from i, m, s, u' };
  }
  try {
    // Anchored to the whole address, so "/bounces@example\.com/" cannot match "bounces@example.com.evil".
    return { ok: true, matcher: { kind: 'regex', regex: new RegExp(`^(?:${regex[1] ?? ''})$`, regex[2]) } };
  } catch (error) {
    return { ok: false, error: `not a valid regular expression: ${(error as Error).message}` };
  }
}

/** True when the (normalised: lower-case ASCII domain) address matches the compiled entry. */
export function relayAddressMatches(matcher: RelayAddressMatcher, address: string): boolean {
  return matcher.kind === 'exact' ? matcher.address === address.toLowerCase() : matcher.regex.test(address);
}

const PROBE_TLDS = ['com', 'net', 'org', 'io', 'de', 'co.uk', 'com.au', 'fr', 'info', 'xyz', 'xn--p1ai', 'example', 'test', 'invalid'];
const PROBE_COUNT = 96;


function generateProbes(): Array<{ address: string; domain: string }> {
  const random = seededRandom(0x5eed_0025);
  const pick = (alphabet: string, min: number, max: number) => {
    const length = min + Math.floor(random() * (max - min + 1));
    let text = '';
    for (let index = 0; index < length; index++) text += alphabet[Math.floor(random() * alphabet.length)];
    return text;
  };
  const letters = 'abcdefghijklmnopqrstuvwxyz';
  const label = () => pick(letters, 1, 1) + pick(`${letters}0123456789`, 2, 14);
  const localForms = [() => pick(letters, 1, 10), () => `${pick(letters, 1, 6)}.${pick(letters, 1, 6)}`, () => `${pick(letters, 1, 6)}+${pick(`${letters}0123456789`, 1, 6)}`, () => pick('0123456789', 1, 8), () => `${pick(letters, 1, 5)}-${pick(letters, 1, 5)}_${pick('0123456789', 1, 3)}`];
  const probes: Array<{ address: string; domain: string }> = [];
  for (let index = 0; index < PROBE_COUNT; index++) {
    const labels = Array.from({ length: 1 + Math.floor(random() * 3) }, label);
    const domain = `${labels.join('.')}.${PROBE_TLDS[index % PROBE_TLDS.length]}`;
    const local = localForms[Math.floor(random() * localForms.length)]!();
    probes.push({ address: `${local}@${domain}`, domain });
  }
  return probes;
}

/** Addresses at domains no operator owns (fixed seed). */
export const OPEN_RELAY_PROBES: ReadonlyArray<{ address: string; domain: string }> = generateProbes();

/**
 * Patterns open on their face, refused by the CRD's CEL rules as well (the strings are read by
 * RE2 and JavaScript alike): a domain pattern "*" or "*.<one label>" (a whole top-level domain),
 * and a regex entry made only of operators, with no literal that could name a domain ("/.*\/",
 * "/.+@.+/", "/^(?:.*)$/").
 */
export const OPEN_DOMAIN_PATTERN_SOURCE = '^[*]([.][^.]+)?$';
export const OPEN_REGEX_ENTRY_SOURCE = '^/[\\^$().*+?:@]*/[imsu]*$';
const OPEN_DOMAIN_PATTERN = new RegExp(OPEN_DOMAIN_PATTERN_SOURCE);
const OPEN_REGEX_ENTRY = new RegExp(OPEN_REGEX_ENTRY_SOURCE);

/** The first probe domain one of the relay-domain patterns matches, or undefined. */
export function openRelayDomain(patterns: readonly string[]): { pattern: string; probe: string } | undefined {
  for (const pattern of patterns) {
    if (OPEN_DOMAIN_PATTERN.test(pattern)) return { pattern, probe: pattern === '*' ? 'every domain' : `every domain under ${pattern.slice(2)}` };
    const probe = OPEN_RELAY_PROBES.find((candidate) => matchesDomainPattern(candidate.domain, pattern.toLowerCase()));
    if (probe) return { pattern, probe: probe.domain };
  }
  return undefined;
}

/** The first probe address one of the relayAddresses entries matches, or undefined. Invalid entries are skipped (reported on their own). */
export function openRelayAddress(entries: readonly string[]): { pattern: string; probe: string } | undefined {
  for (const entry of entries) {
    if (OPEN_REGEX_ENTRY.test(entry)) return { pattern: entry, probe: 'every address' };
    const compiled = compileRelayAddress(entry);
    if (!compiled.ok) continue;
    const probe = OPEN_RELAY_PROBES.find((candidate) => relayAddressMatches(compiled.matcher, candidate.address));
    if (probe) return { pattern: entry, probe: probe.address };
  }
  return undefined;
}
