// Field types shared by the vmta.dev custom resources. Every pattern here is RE2-compatible
// (the API server checks CRD patterns with Go's regexp: no look-ahead), every string carries a
// maxLength and every list a maxItems so the API server's CEL cost estimator accepts the rules.
// Values that need more than a pattern (CIDRs, IP addresses, ports) get the relay's own checks
// (mta/config/field-checks.ts) in zod and, as far as CEL can say it, a CEL rule with Kubernetes'
// IP/CIDR library (1.31+): `isIP`, `ip.isCanonical`, `isCIDR`, `cidr(...).masked()`. That library
// refuses IPv4-mapped IPv6, leading zeros and zone ids, as the relay's parser does, so a range
// means the same to the API server, the operator and the relay.
import { z } from 'zod';
import { DURATION_HINT, DURATION_PATTERN, RATE_HINT, RATE_PATTERN } from '../../mta/config/duration.ts';
import { rangesHoldingIpv4 } from '../../mta/config/address-range.ts';
import { checkAddressRange, checkHostPort, checkIpAddress, checkResolver, PORT_PATTERN_SOURCE, refineWith } from '../../mta/config/field-checks.ts';

export const API_GROUP = 'vmta.dev';
export const API_VERSION = 'v1alpha1';
export const API_GROUP_VERSION = `${API_GROUP}/${API_VERSION}`;

/** A CEL rule for the CRD (`x-kubernetes-validations`); the zod schema enforces the same rule in TypeScript. */
export interface CelRule {
  rule: string;
  message: string;
  /** JSONPath relative to the node carrying the rule, e.g. ".tls.mode". */
  fieldPath?: string;
  reason?: 'FieldValueInvalid' | 'FieldValueForbidden' | 'FieldValueRequired' | 'FieldValueDuplicate';
}

/** Metadata that carries CEL rules into the generated CRD (zod passes `.meta()` keys through to JSON Schema). */
export function celRules(...rules: CelRule[]): { 'x-kubernetes-validations': CelRule[] } {
  return { 'x-kubernetes-validations': rules };
}

/**
 * A list keyed by one field (`x-kubernetes-list-type: map`): the API server refuses two items
 * with the same key, and so does the zod side.
 */
export function uniqueListBy<Item extends Record<string, unknown>>(list: z.ZodArray<z.ZodType<Item>>, key: keyof Item & string) {
  return list
    .superRefine((items, ctx) => {
      const seen = new Set<unknown>();
      items.forEach((item, index) => {
        if (seen.has(item[key])) ctx.addIssue({ code: 'custom', path: [index, key], input: item[key], message: `duplicate ${key} "${String(item[key])}"` });
        seen.add(item[key]);
      });
    })
    .meta({ 'x-kubernetes-list-type': 'map', 'x-kubernetes-list-map-keys': [key] });
}

export const duration = z.string().max(16).regex(DURATION_PATTERN, DURATION_HINT);
export const rate = z.string().max(24).regex(RATE_PATTERN, RATE_HINT);

/** Name of another object in the same namespace (RFC 1123 label, as the relay's config needs). */
export const objectName = z
  .string()
  .max(63)
  .regex(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/, 'a lower-case name of letters, digits and "-" (at most 63)');

/** A reference to another object in the same namespace. */
export const localRef = z.strictObject({ name: objectName });

export const port = z.number().int().min(1).max(65535);

/** CEL: `v` is an address in canonical form. */
const CANONICAL_IP_CEL = (v: string) => `(isIP(${v}) && ip.isCanonical(${v}))`;
/** CEL: `v` is a canonical address or a canonical CIDR (host bits zero). */
const CANONICAL_RANGE_CEL = (v: string) => `(${CANONICAL_IP_CEL(v)} || (isCIDR(${v}) && string(cidr(${v}).masked()) == ${v}))`;
const CANONICAL_HINT = 'canonical form: IPv4 without leading zeros, IPv6 as RFC 5952 (lower case, "::" for the longest zero run), IPv4-mapped IPv6 written as IPv4, no host bits, no zone';

export const ipAddress = z
  .string()
  .max(45)
  .regex(/^[0-9A-Fa-f:.]+$/, 'an IPv4 or IPv6 address')
  .superRefine(refineWith(checkIpAddress))
  .meta(celRules({ rule: CANONICAL_IP_CEL('self'), message: `an IPv4 or IPv6 address in ${CANONICAL_HINT}`, reason: 'FieldValueInvalid' }));

export const cidr = z
  .string()
  .max(49)
  .regex(/^[0-9A-Fa-f:.]+(\/[0-9]{1,3})?$/, 'a CIDR such as 10.0.0.0/8 or 2001:db8::/32, or a single address')
  .superRefine(refineWith(checkAddressRange))
  .meta(celRules({ rule: CANONICAL_RANGE_CEL('self'), message: `a CIDR such as 10.0.0.0/8 or 2001:db8::/32, or a single address, in ${CANONICAL_HINT}`, reason: 'FieldValueInvalid' }));

/**
 * CEL on a canonical range `c` (the field's own rule guarantees it): true when it is wider than
 * one network owns, as mta/config/address-range.ts `isOverlyBroad` says: IPv4 shorter than /8,
 * IPv6 shorter than /16, or an IPv6 range that holds all of ::ffff:0:0/96 (every IPv4 client).
 */
export const BROAD_CIDR_CEL = `(isCIDR(c) && (cidr(c).prefixLength() < (cidr(c).ip().family() == 4 ? 8 : 16) || c in [${rangesHoldingIpv4().map((range) => `'${range}'`).join(', ')}] || (c.startsWith('::/') && cidr(c).prefixLength() <= 80)))`;

/** 1-65535, as a pattern the API server checks too. */
const PORT_SUFFIX = `:${PORT_PATTERN_SOURCE}$`;

/** A canonical IPv4 address as an RE2 / JavaScript pattern (no leading zeros, octets 0-255). */
const IPV4_CANONICAL_SOURCE = '((25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])[.]){3}(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])';

/**
 * "host:port" for a smarthost: a DNS name, a canonical IPv4 address or a [canonical IPv6]
 * address. A pattern, not CEL: domain lists of every VirtualMTA carry it, and a CEL rule there
 * would exceed the API server's cost budget. The pattern cannot tell a canonical IPv6 form
 * (zod does); it does keep out IPv4 look-alikes such as 10.0.0.300 and ports over 65535.
 */
export const hostPort = z
  .string()
  .max(260)
  .regex(new RegExp(`^(\\[[0-9a-f:]+\\]|${IPV4_CANONICAL_SOURCE}|[0-9.]*[A-Za-z-][A-Za-z0-9.-]*)${PORT_SUFFIX}`), 'host:port with a port 1-65535, e.g. smarthost.example.net:587, 192.0.2.25:25 or [2001:db8::25]:25')
  .superRefine(refineWith(checkHostPort));

/** A DNS server: "10.0.0.10", "10.0.0.10:5353", "2001:db8::53" or "[2001:db8::53]:5353". */
export const resolver = z
  .string()
  .max(64)
  .regex(new RegExp(`^(\\[[0-9A-Fa-f:.]+\\]${PORT_SUFFIX}|[0-9.]+(${PORT_SUFFIX}|$)|[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*$)`), 'an address, optionally with :port (1-65535); IPv6 with a port as [address]:port')
  .superRefine(refineWith(checkResolver))
  .meta(
    celRules({
      rule: `self.startsWith('[') ? ${CANONICAL_IP_CEL("self.substring(1, self.indexOf(']'))")} && self.substring(1, self.indexOf(']')).contains(':') : (self.split(':').size() == 2 ? ${CANONICAL_IP_CEL("self.split(':')[0]")} : ${CANONICAL_IP_CEL('self')})`,
      message: `a DNS server address in ${CANONICAL_HINT}, optionally with :port`,
      reason: 'FieldValueInvalid',
    }),
  );

export const hostname = z
  .string()
  .max(253)
  .regex(/^[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?(\.[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?)*$/, 'a DNS host name');

/** "example.com", "*.example.com" (sub-domains only) or "*" (every domain). */
export const domainPattern = z
  .string()
  .max(253)
  .regex(/^(\*|(\*\.)?[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?(\.[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?)*)$/, 'a domain, "*.domain" or "*"');

/** A Kubernetes resource quantity such as "10Gi", "500m" or "2". */
export const quantity = z
  .string()
  .max(32)
  .regex(/^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$/, 'a quantity such as 10Gi, 512Mi, 500m or 2');

export const labelKey = z.string().min(1).max(317);
export const labelValue = z.string().max(63);
export const annotationValue = z.string().max(65536);

/** metav1.Condition. */
export const Condition = z.strictObject({
  type: z.string().max(316),
  status: z.enum(['True', 'False', 'Unknown']),
  observedGeneration: z.number().int().min(0).optional(),
  lastTransitionTime: z.string().max(64),
  reason: z.string().min(1).max(1024).regex(/^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$/, 'a CamelCase reason'),
  message: z.string().max(32768),
});
export type Condition = z.output<typeof Condition>;

export const conditions = uniqueListBy(z.array(Condition).max(16), 'type');

/** The part of ObjectMeta that the schemas look at; everything else passes through untouched. */
export const ObjectMeta = z.looseObject({
  name: objectName,
  namespace: z.string().max(63).optional(),
  uid: z.string().max(64).optional(),
  generation: z.number().int().optional(),
  resourceVersion: z.string().optional(),
  labels: z.record(z.string(), z.string()).optional(),
  annotations: z.record(z.string(), z.string()).optional(),
});
