// Field types shared by the vmta.dev custom resources. Every pattern here is RE2-compatible
// (the API server checks CRD patterns with Go's regexp: no look-ahead), every string carries a
// maxLength and every list a maxItems so the API server's CEL cost estimator accepts the rules.
// Values that need more than a pattern (CIDRs, IP addresses) get a zod refinement as well:
// the API server checks the pattern, zod (local mode, the operator) checks the value exactly.
import net from 'node:net';
import { z } from 'zod';
import { DURATION_HINT, DURATION_PATTERN, RATE_HINT, RATE_PATTERN } from '../../mta/config/duration.ts';
import { isCidr } from '../../mta/config/schema.ts';

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

export const ipAddress = z
  .string()
  .max(45)
  .regex(/^[0-9A-Fa-f:.]+$/, 'an IPv4 or IPv6 address')
  .refine((value) => net.isIP(value) !== 0, 'an IPv4 or IPv6 address');

export const cidr = z
  .string()
  .max(49)
  .regex(/^[0-9A-Fa-f:.]+(\/[0-9]{1,3})?$/, 'a CIDR such as 10.0.0.0/8 or 2001:db8::/32, or a single address')
  .refine(isCidr, 'a CIDR such as 10.0.0.0/8 or 2001:db8::/32, or a single address');


/**
 * True for a range wider than any one network owns: an IPv4 prefix shorter than /8 or an IPv6
 * prefix shorter than /16. 0.0.0.0/0 is the obvious case; 0.0.0.0/1 + 128.0.0.0/1 is the same
 * open door in two pieces. `BROAD_CIDR_CEL` is the same test for the CRDs, on a variable `c`.
 */
export function isOverlyBroad(value: string): boolean {
  const bits = value.split('/')[1];
  if (bits === undefined) return false;
  return Number(bits) < (value.includes(':') ? 16 : 8);
}

export const BROAD_CIDR_CEL = "(c.contains(':') ? c.matches('/([0-9]|1[0-5])$') : c.matches('/[0-7]$'))";

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
