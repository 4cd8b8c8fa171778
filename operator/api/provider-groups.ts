// Provider groups of a VirtualMtaPool (PowerMTA mx-rollup by MX host, KumoMTA shaping by site):
// every recipient domain whose MX hosts match a group's patterns shares the group's connection
// limit, message rate and backoff per VirtualMTA, and takes the group's domain settings
// (docs/provider-groups.md). Validation names the
// field: a duplicate group name, a catch-all "*" pattern, a pattern listed in two groups.
import { z } from 'zod';
import { BackoffSettings, GroupDomainSettings } from './domain-settings.ts';
import { celRules, domainPattern, objectName, rate, uniqueListBy } from './fields.ts';

export const ProviderGroupSpec = z.strictObject({
  name: objectName.describe('Name of the group (logs, warm-up caps per group).'),
  mxHosts: z
    .array(domainPattern.refine((pattern) => pattern !== '*', 'a group names MX hosts: "mx.example.com" or "*.example.com", not "*"'))
    .min(1)
    .max(256)
    .meta(celRules({ rule: "self.all(p, p != '*')", message: 'a group names MX hosts: "mx.example.com" or "*.example.com", not "*"', reason: 'FieldValueInvalid' }))
    .describe('MX host names of the provider: "aspmx.l.google.com" (that host) or "*.google.com" (its sub-domains). A domain belongs to the first group one of its MX hosts matches.'),
  maxSmtpOut: z.number().int().min(1).max(10_000).optional().describe('Open connections per VirtualMTA for all the group\'s domains together (each domain\'s own maxSmtpOut holds too).'),
  maxMessageRate: rate.optional().describe('Messages per VirtualMTA for all the group\'s domains together, e.g. "600/m".'),
  backoff: BackoffSettings.optional().describe('A throttling reply on any of the group\'s domains puts the whole group in backoff for returnAfter: its maxSmtpOut and maxMessageRate then hold for the group together. Used for domains whose own domainDefaults or domains entries set no backoff (a "*" entry\'s comes after the group\'s).'),
  domainSettings: GroupDomainSettings.optional().describe('Settings each of the group\'s domains takes, as a domainDefaults entry would (TLS policy, MTA-STS, retries, bounceAfter, messages per connection): over the pool\'s "*" entry, under entries naming the domain or a suffix of it and the VirtualMTA\'s own domains. Applied from the first MX lookup of a domain on.'),
});

export const providerGroupList = uniqueListBy(z.array(ProviderGroupSpec).max(100), 'name').superRefine((groups, ctx) => {
  const owner = new Map<string, string>();
  groups.forEach((group, index) =>
    group.mxHosts.forEach((pattern, patternIndex) => {
      const key = pattern.toLowerCase();
      const first = owner.get(key);
      if (first !== undefined && first !== group.name) ctx.addIssue({ code: 'custom', path: [index, 'mxHosts', patternIndex], input: pattern, message: `"${pattern}" is already in provider group "${first}"` });
      else owner.set(key, group.name);
    }),
  );
});

export type ProviderGroupSpec = z.output<typeof ProviderGroupSpec>;
