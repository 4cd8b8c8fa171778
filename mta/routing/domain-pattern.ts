// Matching a domain against a configured domain pattern: "example.com" (that domain),
// "*.example.com" (its sub-domains only) or "*" (every domain). Patterns come lower-cased from
// the config schema; domains are compared lower-cased without a trailing dot.
export function matchesDomainPattern(domain: string, pattern: string): boolean {
  const normalised = domain.toLowerCase().replace(/\.$/, '');
  if (normalised === '') return false;
  if (pattern === '*') return true;
  if (pattern.startsWith('*.')) return normalised.endsWith(pattern.slice(1));
  return normalised === pattern;
}

/** Domain of an address (after the last "@"), lower-cased; '' for the null sender or an address without one. */
export function domainOf(address: string): string {
  const at = address.lastIndexOf('@');
  return at < 0 ? '' : address.slice(at + 1).toLowerCase().replace(/\.$/, '');
}
