// RelayPolicy: who may relay through the listeners that apply it, and how their mail is routed.
// Relaying is granted only to authenticated users (from a Secret), to `alwaysAllowRelaying`
// CIDRs, or for `relayDomains` / `relayAddresses` recipients (PowerMTA words). A CIDR covering
// every address (0.0.0.0/0, ::/0) would make any unauthenticated listener an open relay, so it
// is refused unless `acknowledgeOpenRelay: true` says that is really meant.
import { z } from 'zod';
import { API_GROUP_VERSION, celRules, cidr, conditions, domainPattern, isWholeInternet, objectName, ObjectMeta } from './fields.ts';

/** "bounces@example.com" or "/^bounce-.*@example\\.com$/i". */
const relayAddress = z
  .string()
  .min(1)
  .max(512)
  .refine((value) => {
    const regex = /^\/(.*)\/([imsu]*)$/.exec(value);
    if (!regex) return value.includes('@');
    try {
      new RegExp(regex[1] ?? '', regex[2]);
      return true;
    } catch {
      return false;
    }
  }, 'an address such as bounces@example.com or a /regular expression/');

const userName = z.string().min(1).max(253).regex(/^[-._a-zA-Z0-9@+]+$/, 'a user name of letters, digits and . _ - @ + (a Secret key)');

const PolicyUsers = z.strictObject({
  /** Secret with one key per user: key = user name, value = password (or a hash the relay understands). */
  secretName: z.string().max(253),
  /** Sender domains each user may use in MAIL FROM. */
  senders: z
    .array(z.strictObject({ user: userName, allowedSenderDomains: z.array(domainPattern).max(256) }))
    .max(1000)
    .optional(),
  /** For users without an entry in `senders`; empty means such users may send from no domain. */
  defaultAllowedSenderDomains: z.array(domainPattern).max(256).optional(),
});

const RoutingRule = z
  .strictObject({
    senderDomain: domainPattern.optional(),
    user: userName.optional(),
    recipientDomain: domainPattern.optional(),
    /** VirtualMTA of the listener's pool that gets the matching mail. */
    virtualMta: objectName,
  })
  .superRefine((rule, ctx) => {
    if (!rule.senderDomain && !rule.user && !rule.recipientDomain) ctx.addIssue({ code: 'custom', path: [], input: rule, message: 'a rule needs senderDomain, user or recipientDomain' });
  })
  .meta(celRules({ rule: 'has(self.senderDomain) || has(self.user) || has(self.recipientDomain)', message: 'a rule needs senderDomain, user or recipientDomain', reason: 'FieldValueRequired' }));

const Routing = z.strictObject({
  /** Honour (then remove) an X-Virtual-MTA header naming a VirtualMTA of the pool. */
  honorVirtualMtaHeader: z.boolean().default(false),
  /** First matching rule wins. */
  rules: z.array(RoutingRule).max(1000).optional(),
  /** When no rule matches; otherwise the pool's selection picks. */
  defaultVirtualMta: objectName.optional(),
});

export const RelayPolicySpec = z
  .strictObject({
    /** Credentials are read only on an encrypted session (530 5.7.0 before TLS). */
    requireTlsForAuth: z.boolean().default(true),
    /** Clients in these CIDRs may relay anywhere without AUTH (PowerMTA `always-allow-relaying`). */
    alwaysAllowRelaying: z.array(cidr).max(1024).optional(),
    /** Says that a CIDR covering every address in alwaysAllowRelaying is meant (an open relay on unauthenticated listeners). */
    acknowledgeOpenRelay: z.boolean().default(false),
    /** Unauthenticated mail is accepted for recipients in these domains (PowerMTA `relay-domain`). */
    relayDomains: z.array(domainPattern).max(10_000).optional(),
    /** Unauthenticated mail is accepted for these recipients: exact addresses or /regex/ (PowerMTA `relay-address`). */
    relayAddresses: z.array(relayAddress).max(10_000).optional(),
    users: PolicyUsers.optional(),
    routing: Routing.optional(),
  })
  .superRefine((spec, ctx) => {
    if (spec.acknowledgeOpenRelay) return;
    spec.alwaysAllowRelaying?.forEach((range, index) => {
      if (isWholeInternet(range)) {
        ctx.addIssue({ code: 'custom', path: ['alwaysAllowRelaying', index], input: range, message: `"${range}" lets every address on the internet relay: an open relay. List your networks, or set acknowledgeOpenRelay: true if this is really meant` });
      }
    });
  })
  .meta(
    celRules({
      rule: "!has(self.alwaysAllowRelaying) || self.acknowledgeOpenRelay || self.alwaysAllowRelaying.all(c, !c.endsWith('/0'))",
      message: 'alwaysAllowRelaying with a CIDR covering every address makes an open relay: list your networks, or set acknowledgeOpenRelay: true if this is really meant',
      fieldPath: '.alwaysAllowRelaying',
      reason: 'FieldValueForbidden',
    }),
  );

export type RelayPolicySpec = z.output<typeof RelayPolicySpec>;

export const RelayPolicyStatus = z.strictObject({
  observedGeneration: z.number().int().min(0).optional(),
  conditions: conditions.optional(),
});

export const RelayPolicy = z.strictObject({
  apiVersion: z.literal(API_GROUP_VERSION),
  kind: z.literal('RelayPolicy'),
  metadata: ObjectMeta,
  spec: RelayPolicySpec,
  status: RelayPolicyStatus.optional(),
});
export type RelayPolicy = z.output<typeof RelayPolicy>;
