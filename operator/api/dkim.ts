// DKIM signing in a VirtualMtaPool (PowerMTA `domain-key selector,domain,keyfile`, pool-wide or
// inside a `<virtual-mta>`): keys from Secrets (one PEM per key), the signing defaults, and the
// status of each key's DNS record. The relay's contract for the same fields is mta/config/schema.ts.
import { z } from 'zod';
import { DEFAULT_DKIM_HEADERS, DEFAULT_DKIM_OVERSIGNED, DKIM_ALGORITHMS, DKIM_CANONICALIZATIONS } from '../../mta/config/schema.ts';
import { duration, hostname } from './fields.ts';

/** The Secret key a DKIM key's PEM is read from when `secretKey` is not set. */
export const DEFAULT_DKIM_SECRET_KEY = 'private.pem';

const selector = z
  .string()
  .max(253)
  .regex(/^[A-Za-z0-9_]([-A-Za-z0-9_]{0,61}[A-Za-z0-9_])?(\.[A-Za-z0-9_]([-A-Za-z0-9_]{0,61}[A-Za-z0-9_])?)*$/, 'a selector of letters, digits, "-" and "_" in dot-separated labels');
const headerName = z.string().max(64).regex(/^[!-9;-~]{1,64}$/, 'a header field name such as Subject');

export const DkimKeySpec = z.strictObject({
  domain: hostname.describe('Signing domain (d=). Mail whose From domain is this domain is signed; with organizationalDomain also its sub-domains that have no key of their own.'),
  selector: selector.describe('Selector (s=): the public key is published as TXT at <selector>._domainkey.<domain>.'),
  algorithm: z.enum(DKIM_ALGORITHMS).default('rsa-sha256').describe('rsa-sha256 (RSA, 2048 bits or more) or ed25519-sha256 (RFC 8463). Two keys of one domain with different algorithms sign every message twice.'),
  secretName: z.string().max(253).describe('Secret holding the PEM private key; a rotated Secret is picked up without a restart.'),
  secretKey: z.string().max(253).regex(/^[-._a-zA-Z0-9]+$/, 'a Secret key name').default(DEFAULT_DKIM_SECRET_KEY).describe(`Key of the Secret holding the PEM (default "${DEFAULT_DKIM_SECRET_KEY}").`),
  canonicalization: z.enum(DKIM_CANONICALIZATIONS).optional().describe('header/body canonicalization of this key; defaults to the pool\'s dkim.canonicalization.'),
});
export type DkimKeySpec = z.output<typeof DkimKeySpec>;

export const dkimKeyList = z.array(DkimKeySpec).max(1000);

export const DkimSpec = z.strictObject({
  keys: dkimKeyList.optional().describe('Keys of the whole pool; a VirtualMTA\'s own dkimKeys for a domain take precedence.'),
  canonicalization: z.enum(DKIM_CANONICALIZATIONS).default('relaxed/relaxed').describe('header/body canonicalization (RFC 6376 §3.4).'),
  headers: z.array(headerName).min(1).max(64).optional().describe(`Header fields signed when present; must include From. Default: ${DEFAULT_DKIM_HEADERS.join(', ')}.`),
  oversignHeaders: z.array(headerName).max(64).optional().describe(`Fields listed once more than present so none can be added (default: ${DEFAULT_DKIM_OVERSIGNED.join(', ')}).`),
  expireAfter: duration.optional().describe('Signature lifetime: x= is the signing time plus this. Omitted: no x=.'),
  organizationalDomain: z.boolean().default(true).describe('Sign a From sub-domain without a key of its own with the key of its organizational domain (public suffix list).'),
  dnsCheck: z
    .strictObject({
      enabled: z.boolean().default(true).describe('The operator looks up each key\'s TXT record and reports it in status.dkimKeys and the DkimPublished condition.'),
      resolvers: z.array(z.string().max(64).regex(/^(\[[0-9A-Fa-f:.]+\]|[0-9A-Fa-f:.]+)(:[0-9]{1,5})?$/, 'an address, optionally with :port')).max(8).optional().describe('DNS servers for the check; empty uses the operator pod\'s resolvers.'),
    })
    .prefault({}),
});

/** Whether the DNS record of one key publishes its public key. */
export const DkimKeyStatus = z.strictObject({
  domain: z.string().max(253),
  selector: z.string().max(253),
  algorithm: z.string().max(32),
  virtualMta: z.string().max(63).optional().describe('Set for a VirtualMTA\'s own key.'),
  state: z.enum(['Published', 'Mismatch', 'NotPublished', 'InvalidKey', 'Unknown']).describe('Published: the TXT record carries this key; Mismatch: DKIM records exist, none with this key (or revoked); NotPublished: no DKIM record; InvalidKey: the Secret holds no usable key; Unknown: the lookup failed.'),
  message: z.string().max(1024).optional(),
});
