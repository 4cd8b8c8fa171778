// The field types of the runtime config (schema.ts): durations and rates as PowerMTA writes
// them (parsed to milliseconds here), names, ports, addresses and ranges in canonical form, host
// names, domain patterns and host:port pairs. The operator's resource fields are
// operator/api/fields.ts.
import { z } from 'zod';
import { DURATION_HINT, DURATION_PATTERN, parseDuration, RATE_HINT, RATE_PATTERN } from './duration.ts';
import { checkAddressRange, checkHostPort, checkIpAddress, refineWith } from './field-checks.ts';

export const duration = z.string().regex(DURATION_PATTERN, DURATION_HINT).transform(parseDuration);
export const rate = z.string().regex(RATE_PATTERN, RATE_HINT);
export const name = z
  .string()
  .regex(/^[a-z0-9]([-a-z0-9.]{0,61}[a-z0-9])?$/, 'a lower-case name of letters, digits, "-" and "." (at most 63)');
export const port = z.number().int().min(1).max(65535);
/** Addresses and ranges in canonical form only (see address-range.ts for why). */
export const ipAddress = z.string().superRefine(refineWith(checkIpAddress));
export const cidr = z.string().superRefine(refineWith(checkAddressRange));
export const hostname = z
  .string()
  .regex(/^(?=.{1,253}$)[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?(\.[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?)*$/, 'a DNS host name');
/** "example.com", "*.example.com" (sub-domains only) or "*" (every domain). */
export const domainPattern = z
  .string()
  .regex(/^(\*|(\*\.)?[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?(\.[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?)*)$/, 'a domain, "*.domain" or "*"')
  .transform((value) => value.toLowerCase());
export const hostPort = z.string().superRefine(refineWith(checkHostPort));
export const filePath = z.string().min(1);
