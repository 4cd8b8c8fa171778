// RelayPolicy: who may relay through the listeners that apply it, and how their mail is routed.
// Relaying is granted only to authenticated users (from a Secret), to `alwaysAllowRelaying`
// CIDRs, or for `relayDomains` / `relayAddresses` recipients (PowerMTA words). A CIDR wider
// than any one network owns (0.0.0.0/0, ::/0, 0.0.0.0/1, in any notation), a relay domain "*"
// or a relay address regex that matches every address would make every unauthenticated
// listener an open relay, so they are refused unless `acknowledgeOpenRelay: true` says that is
// really meant: by the relay's own rules (mta/config/open-relay.ts) in zod, and by CEL as far as
// CEL can tell (ranges, "*", "*.tld", regexes without a literal); the rest is the operator's.
import { z } from 'zod';
import { checkRelayAddress, refineWith } from '../../mta/config/field-checks.ts';
import { openRelayProblems } from '../../mta/config/open-relay.ts';
import { OPEN_DOMAIN_PATTERN_SOURCE, OPEN_REGEX_ENTRY_SOURCE } from '../../mta/config/relay-patterns.ts';
import { API_GROUP_VERSION, celRules, cidr, conditions, domainPattern, BROAD_CIDR_CEL, objectName, ObjectMeta } from './fields.ts';

/** "bounces@example.com" or "/^bounce-.*@example\\.com$/i". */
const relayAddress = z
  .string()
  .min(1)
  .max(512)
  .superRefine(refineWith(checkRelayAddress));

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
    acknowledgeOpenRelay: z.boolean().default(false).describe('Says that an open relay on unauthenticated listeners is meant: a CIDR wider than a /8 (IPv4) or /16 (IPv6) in alwaysAllowRelaying, a relayDomains entry such as "*" or a relayAddresses pattern matching addresses at any domain.'),
    relayDomains: z.array(domainPattern).max(10_000).optional().describe('Unauthenticated mail is accepted for recipients in these domains (PowerMTA `relay-domain`).'),
    // 5,000 (the relay takes 10,000) keeps the open-pattern CEL rule inside the API server's cost budget.
    relayAddresses: z.array(relayAddress).max(5000).optional().describe('Unauthenticated mail is accepted for these recipients: exact addresses or /regex/ (PowerMTA `relay-address`).'),
    users: PolicyUsers.optional().describe('Users who may AUTH and then relay anywhere (PowerMTA `<smtp-user>`): their passwords in a Secret, and the sender domains each may use in MAIL FROM.'),
    routing: Routing.optional().describe('Which VirtualMTA of the pool gets a message: the X-Virtual-MTA header (if honoured), the first matching rule, the default, or the pool\'s selection.'),
  })
  .superRefine((spec, ctx) => {
    const problems = openRelayProblems({ cidrs: spec.alwaysAllowRelaying ?? [], relayDomains: spec.relayDomains ?? [], relayAddresses: spec.relayAddresses ?? [], acknowledgeOpenRelay: spec.acknowledgeOpenRelay });
    for (const problem of problems) {
      ctx.addIssue({ code: 'custom', path: [problem.field === 'cidrs' ? 'alwaysAllowRelaying' : problem.field, problem.index], input: problem.value, message: problem.message });
    }
  })
  .meta(
    celRules(
      {
        rule: `!has(self.alwaysAllowRelaying) || self.acknowledgeOpenRelay || self.alwaysAllowRelaying.all(c, !${BROAD_CIDR_CEL})`,
        message: 'alwaysAllowRelaying with a CIDR wider than a /8 (IPv4) or /16 (IPv6) makes an open relay: list your networks, or set acknowledgeOpenRelay: true if this is really meant',
        fieldPath: '.alwaysAllowRelaying',
        reason: 'FieldValueForbidden',
      },
      {
        rule: `!has(self.relayDomains) || self.acknowledgeOpenRelay || !self.relayDomains.exists(d, d.matches('${OPEN_DOMAIN_PATTERN_SOURCE}'))`,
        message: 'relayDomains "*" or "*.<top-level domain>" accepts mail for domains nobody configured, an open relay on port 25: list your domains, or set acknowledgeOpenRelay: true if this is really meant',
        fieldPath: '.relayDomains',
        reason: 'FieldValueForbidden',
      },
      {
        rule: `!has(self.relayAddresses) || self.acknowledgeOpenRelay || !self.relayAddresses.exists(a, a.matches('${OPEN_REGEX_ENTRY_SOURCE.replaceAll('\\', '\\\\')}'))`,
        message: 'a relayAddresses pattern without a literal (such as /.*/) matches every address, an open relay on port 25: name your addresses, or set acknowledgeOpenRelay: true if this is really meant',
        fieldPath: '.relayAddresses',
        reason: 'FieldValueForbidden',
      },
    ),
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
