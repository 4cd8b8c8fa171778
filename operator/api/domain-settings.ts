// Per-destination-domain delivery settings, PowerMTA's `<domain>` block in camelCase:
// `use-starttls`/`require-starttls` become `tlsPolicy`, `retry-after` stays `retryAfter` (one
// wait, as in PowerMTA) with `retrySchedule` (a list) and `retryBackoff` (exponential) as the
// richer forms, `bounce-after`, `max-smtp-out`, `max-msg-per-connection`, `max-msg-rate`,
// `backoff-*`. Used both pool-wide (`domainDefaults`) and per VirtualMTA.
import { z } from 'zod';
import { checkReplyPattern, refineWith } from '../../mta/config/field-checks.ts';
import { celRules, domainPattern, duration, hostPort, rate, uniqueListBy } from './fields.ts';

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

const ONE_RETRY_FORM = '(has(self.retryAfter) ? 1 : 0) + (has(self.retrySchedule) ? 1 : 0) + (has(self.retryBackoff) ? 1 : 0) <= 1';

export const DomainSettings = z
  .strictObject({
    domain: domainPattern.describe('"example.com", "*.example.com" or "*"; PowerMTA `<domain example.com>`.'),
    tlsPolicy: z.enum(['none', 'opportunistic', 'required', 'verify', 'dane', 'dane-only']).optional().describe('none: never STARTTLS; opportunistic: `use-starttls`; required: `require-starttls`; verify: required with a valid certificate; dane: MX hosts with DNSSEC-validated TLSA records are authenticated by them (RFC 7672), the others get opportunistic TLS (or MTA-STS); dane-only: only MX hosts with validated TLSA records are used. DANE needs the pool\'s dnssecResolvers.'),
    mtaSts: z.boolean().optional().describe('Apply the destination\'s MTA-STS policy (RFC 8461).'),
    retryAfter: duration.optional().describe('Wait between attempts (PowerMTA `retry-after`).'),
    retrySchedule: z.array(duration).min(1).max(64).optional().describe('Waits between successive attempts; the last one repeats.'),
    retryBackoff: RetryBackoff.optional().describe('Exponential waits: initial, multiplied by factor, capped at max.'),
    bounceAfter: duration.optional(),
    maxSmtpOut: z.number().int().min(1).max(10_000).optional(),
    maxMessagesPerConnection: z.number().int().min(1).max(1_000_000).optional(),
    maxMessageRate: rate.optional(),
    smtpHost: hostPort.optional().describe('Deliver to this host:port instead of resolving MX (a smarthost).'),
    backoff: BackoffSettings.optional().describe('Slow down on throttling replies, return to normal automatically.'),
  })
  .superRefine((settings, ctx) => {
    const forms = ['retryAfter', 'retrySchedule', 'retryBackoff'] as const;
    const set = forms.filter((form) => settings[form] !== undefined);
    if (set.length > 1) {
      ctx.addIssue({ code: 'custom', path: [set[1] ?? 'retryAfter'], input: settings[set[1] ?? 'retryAfter'], message: `set at most one of retryAfter, retrySchedule and retryBackoff (got ${set.join(' and ')})` });
    }
  })
  .meta(celRules({ rule: ONE_RETRY_FORM, message: 'set at most one of retryAfter, retrySchedule and retryBackoff', reason: 'FieldValueForbidden' }));

export type DomainSettings = z.output<typeof DomainSettings>;

/** Domain lists are keyed by `domain`: the API server refuses two entries for one domain. */
export const domainSettingsList = uniqueListBy(z.array(DomainSettings).max(1000), 'domain');
