// Per-destination-domain delivery settings, PowerMTA's `<domain>` block in camelCase:
// `use-starttls`/`require-starttls` become `tlsPolicy`, `retry-after` stays `retryAfter` (one
// wait, as in PowerMTA) with `retrySchedule` (a list) and `retryBackoff` (exponential) as the
// richer forms, `bounce-after`, `max-smtp-out`, `max-msg-per-connection`, `max-msg-rate`,
// `backoff-*`. Used both pool-wide (`domainDefaults`) and per VirtualMTA. `smarthost` relays
// through an authenticated submission server (an ESP) instead (docs/smarthost.md).
import { z } from 'zod';
import { checkReplyPattern, refineWith } from '../../mta/config/field-checks.ts';
import { celRules, domainPattern, duration, hostname, hostPort, port, rate, uniqueListBy } from './fields.ts';

export const BackoffSettings = z.strictObject({
  replyPatterns: z.array(z.string().min(1).max(256).superRefine(refineWith(checkReplyPattern))).min(1).max(64).describe('Regular expressions matched against the whole reply ("^421", "4\\\\.7\\\\.[0-9]+"); PowerMTA `backoff-reply`.'),
  maxSmtpOut: z.number().int().min(1).max(1000).default(1),
  maxMessageRate: rate.optional(),
  retryAfter: duration.default('30m'),
  returnAfter: duration.default('1h').describe('Back to normal this long after entering backoff (a successful delivery returns at once); PowerMTA `backoff-to-normal-after`.'),
});

export const RetryBackoff = z.strictObject({
  initial: duration,
  factor: z.number().min(1).max(10),
  max: duration,
});

const secretName = z.string().max(253).regex(/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/, 'a Secret name (lower-case letters, digits, "-" and ".")');

export const Smarthost = z.strictObject({
  hosts: z.array(hostname).min(1).max(16).describe('Host names (or IPv4 addresses) of the submission server, tried in order on each port, e.g. smtp.sendgrid.net.'),
  ports: z
    .array(z.strictObject({ port, tls: z.enum(['starttls', 'implicit']).describe('starttls: upgrade after EHLO (587, 2525); implicit: TLS from the first byte (465).') }))
    .min(1)
    .max(8)
    .optional()
    .describe('Tried in order; a port that refuses, stays silent past connectTimeout, refuses the greeting or cannot set up TLS falls through to the next, and the one that worked is used until reprobeAfter. Default 587 starttls, 2525 starttls, 465 implicit.'),
  tlsPolicy: z.enum(['required', 'verify']).optional().describe('Never plain text. verify (default): the certificate must chain to a trusted CA and name the host; required: encrypted, certificate not checked.'),
  caSecretName: secretName.optional().describe('Secret whose key "ca.crt" is the CA bundle trusted for verify instead of the system roots (a private relay).'),
  auth: z
    .strictObject({
      secretName: secretName.describe('Secret with the keys "username" and "password" (type kubernetes.io/basic-auth), mounted into the relay pods and reread at every session; never copied into the ConfigMap.'),
      mechanism: z.enum(['PLAIN', 'LOGIN', 'auto']).optional().describe('auto (default): PLAIN when offered, else LOGIN. Sent only once the session is encrypted.'),
    })
    .optional()
    .describe('AUTH towards the smarthost. A refused login (535) defers the queue (4.7.8) without trying other ports and is not offered again until reprobeAfter or a change of the Secret.'),
  connectTimeout: duration.optional().describe('How long a port may take to connect and greet before the next is tried (default 15s).'),
  reprobeAfter: duration.optional().describe('How long the port that worked after a fallback is used before the list is tried from its start again, and how long a refused login is held (default 30m).'),
});

const ONE_ROUTE_MESSAGE = 'set smtpHost or smarthost, not both';
const ONE_RETRY_FORM = '(has(self.retryAfter) ? 1 : 0) + (has(self.retrySchedule) ? 1 : 0) + (has(self.retryBackoff) ? 1 : 0) <= 1';

/** The fields of a domain entry that a provider group can set for all its domains (ProviderGroupSpec.domainSettings), with maxMessagesPerConnection (apart: relay.yaml lists a domain entry's maxSmtpOut before it, and its order is the config hash's). */
const sessionSettingFields = {
  tlsPolicy: z.enum(['none', 'opportunistic', 'required', 'verify', 'dane', 'dane-only']).optional().describe('none: never STARTTLS; opportunistic: `use-starttls`; required: `require-starttls`; verify: required with a valid certificate; dane: MX hosts with DNSSEC-validated TLSA records are authenticated by them (RFC 7672), the others get opportunistic TLS (or MTA-STS); dane-only: only MX hosts with validated TLSA records are used. DANE needs the pool\'s dnssecResolvers.'),
  mtaSts: z.boolean().optional().describe('Apply the destination\'s MTA-STS policy (RFC 8461).'),
  retryAfter: duration.optional().describe('Wait between attempts (PowerMTA `retry-after`).'),
  retrySchedule: z.array(duration).min(1).max(64).optional().describe('Waits between successive attempts; the last one repeats.'),
  retryBackoff: RetryBackoff.optional().describe('Exponential waits: initial, multiplied by factor, capped at max.'),
  bounceAfter: duration.optional(),
};
const maxMessagesPerConnection = z.number().int().min(1).max(1_000_000).optional();

/** At most one retry form: the refinement of every object with sessionSettingFields (and its CEL rule). */
function oneRetryForm(settings: { retryAfter?: unknown; retrySchedule?: unknown; retryBackoff?: unknown }, ctx: z.RefinementCtx): void {
  const forms = ['retryAfter', 'retrySchedule', 'retryBackoff'] as const;
  const set = forms.filter((form) => settings[form] !== undefined);
  if (set.length > 1) {
    ctx.addIssue({ code: 'custom', path: [set[1] ?? 'retryAfter'], input: settings[set[1] ?? 'retryAfter'], message: `set at most one of retryAfter, retrySchedule and retryBackoff (got ${set.join(' and ')})` });
  }
}
const ONE_RETRY_RULE = { rule: ONE_RETRY_FORM, message: 'set at most one of retryAfter, retrySchedule and retryBackoff', reason: 'FieldValueForbidden' } as const;

export const GroupDomainSettings = z.strictObject({ ...sessionSettingFields, maxMessagesPerConnection }).superRefine(oneRetryForm).meta(celRules(ONE_RETRY_RULE));

export const DomainSettings = z
  .strictObject({
    domain: domainPattern.describe('"example.com", "*.example.com" or "*"; PowerMTA `<domain example.com>`.'),
    ...sessionSettingFields,
    maxSmtpOut: z.number().int().min(1).max(10_000).optional().describe('Open connections to the destination per VirtualMTA for the whole pool: in a StatefulSet pool each ready pod takes its share (docs/fleet-limits.md); PowerMTA `max-smtp-out`.'),
    maxMessagesPerConnection,
    maxMessageRate: rate.optional().describe('Messages to the destination per VirtualMTA for the whole pool ("10/s", "600/m"), shared like maxSmtpOut; PowerMTA `max-msg-rate`.'),
    smtpHost: hostPort.optional().describe('Deliver to this host:port instead of resolving MX (a plain smarthost, TLS as tlsPolicy says, no AUTH).'),
    smarthost: Smarthost.optional().describe('Relay through an authenticated submission server (an ESP) instead of resolving MX: TLS always, AUTH from a Secret, a port fallback list (docs/smarthost.md). tlsPolicy, mtaSts and DANE do not apply to it.'),
    backoff: BackoffSettings.optional().describe('Slow down on throttling replies, return to normal automatically.'),
  })
  .superRefine((settings, ctx) => {
    oneRetryForm(settings, ctx);
    if (settings.smtpHost !== undefined && settings.smarthost !== undefined) ctx.addIssue({ code: 'custom', path: ['smarthost'], input: settings.smarthost, message: ONE_ROUTE_MESSAGE });
  })
  .meta(celRules(ONE_RETRY_RULE, { rule: '!(has(self.smtpHost) && has(self.smarthost))', message: ONE_ROUTE_MESSAGE, fieldPath: '.smarthost', reason: 'FieldValueForbidden' }));

export type DomainSettings = z.output<typeof DomainSettings>;

/** Domain lists are keyed by `domain`: the API server refuses two entries for one domain. */
export const domainSettingsList = uniqueListBy(z.array(DomainSettings).max(1000), 'domain');
