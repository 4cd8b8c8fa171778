// RelayPolicy: who may relay through the listeners that apply it, and how their mail is routed.
// Relaying is granted only to authenticated users (from a Secret), to `alwaysAllowRelaying`
// CIDRs, or for `relayDomains` / `relayAddresses` recipients (PowerMTA words). A CIDR wider
// than any one network owns (0.0.0.0/0, ::/0, or 0.0.0.0/1 + 128.0.0.0/1) would make every
// unauthenticated listener an open relay, so it is refused unless `acknowledgeOpenRelay: true`
// says that is really meant.
import { z } from 'zod';
import { isRelayAddressPattern, RELAY_ADDRESS_HINT } from '../../mta/config/schema.ts';
import { API_GROUP_VERSION, celRules, cidr, conditions, domainPattern, BROAD_CIDR_CEL, isOverlyBroad, objectName, ObjectMeta } from './fields.ts';

/** "bounces@example.com" or "/^bounce-.*@example\\.com$/i". */
const relayAddress = z
  .string()
  .min(1)
  .max(512)
  .refine(isRelayAddressPattern, RELAY_ADDRESS_HINT);

const userName = z.string().min(1).max(253).regex(/^[-._a-zA-Z0-9@+]+$/, 'a user name of letters, digits and . _ - @ + (a Secret key)');

const PolicyUsers = z.strictObject({
  secretName: z.string().max(253).describe('Secret with one key per user: key = user name, value = password (or a hash the relay understands).'),
  senders: z
    .array(z.strictObject({ user: userName, allowedSenderDomains: z.array(domainPattern).max(256) }))
    .max(1000)
    .optional()
    .describe('Sender domains each user may use in MAIL FROM ("example.com", "*.example.com", "*").'),
  defaultAllowedSenderDomains: z.array(domainPattern).max(256).optional().describe('For users without an entry in `senders`; empty means such users may send from no domain.'),
});

const RoutingRule = z
  .strictObject({
    senderDomain: domainPattern.optional(),
    user: userName.optional(),
    recipientDomain: domainPattern.optional(),
    virtualMta: objectName.describe('VirtualMTA of the listener\'s pool that gets the matching mail.'),
  })
  .superRefine((rule, ctx) => {
    if (!rule.senderDomain && !rule.user && !rule.recipientDomain) ctx.addIssue({ code: 'custom', path: [], input: rule, message: 'a rule needs senderDomain, user or recipientDomain' });
  })
  .meta(celRules({ rule: 'has(self.senderDomain) || has(self.user) || has(self.recipientDomain)', message: 'a rule needs senderDomain, user or recipientDomain', reason: 'FieldValueRequired' }));

const Routing = z.strictObject({
  honorVirtualMtaHeader: z.boolean().default(false).describe('Honour (then remove) an X-Virtual-MTA header naming a VirtualMTA of the pool.'),
  rules: z.array(RoutingRule).max(1000).optional().describe('First matching rule wins.'),
  defaultVirtualMta: objectName.optional().describe('When no rule matches; otherwise the pool\'s selection picks.'),
});

export const RelayPolicySpec = z
  .strictObject({
    requireTlsForAuth: z.boolean().default(true).describe('Credentials are read only on an encrypted session (530 5.7.0 before TLS).'),
    alwaysAllowRelaying: z.array(cidr).max(1024).optional().describe('Clients in these CIDRs may relay anywhere without AUTH (PowerMTA `always-allow-relaying`).'),
    acknowledgeOpenRelay: z.boolean().default(false).describe('Says that a CIDR wider than a /8 (IPv4) or /16 (IPv6) in alwaysAllowRelaying is meant: an open relay on unauthenticated listeners.'),
    relayDomains: z.array(domainPattern).max(10_000).optional().describe('Unauthenticated mail is accepted for recipients in these domains (PowerMTA `relay-domain`).'),
    relayAddresses: z.array(relayAddress).max(10_000).optional().describe('Unauthenticated mail is accepted for these recipients: exact addresses or /regex/ (PowerMTA `relay-address`).'),
    users: PolicyUsers.optional(),
    routing: Routing.optional(),
  })
  .superRefine((spec, ctx) => {
    if (spec.acknowledgeOpenRelay) return;
    spec.alwaysAllowRelaying?.forEach((range, index) => {
      if (isOverlyBroad(range)) {
        ctx.addIssue({ code: 'custom', path: ['alwaysAllowRelaying', index], input: range, message: `"${range}" is wider than a /8 (IPv4) or /16 (IPv6): that lets a large part of the internet relay, an open relay. List your networks, or set acknowledgeOpenRelay: true if this is really meant` });
      }
    });
  })
  .meta(
    celRules({
      rule: `!has(self.alwaysAllowRelaying) || self.acknowledgeOpenRelay || self.alwaysAllowRelaying.all(c, !${BROAD_CIDR_CEL})`,
      message: 'alwaysAllowRelaying with a CIDR wider than a /8 (IPv4) or /16 (IPv6) makes an open relay: list your networks, or set acknowledgeOpenRelay: true if this is really meant',
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
