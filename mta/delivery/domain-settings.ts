// Per-destination-domain delivery settings, PowerMTA `<domain>` style: for a VirtualMTA and a
// recipient domain, each field comes from the most specific block that sets it — the
// VirtualMTA's own `domains` over the pool's `domainDefaults` over built-in defaults, and
// within each list an exact domain over the longest matching "*.suffix" over "*". A domain in a
// provider group takes the group's domainSettings right above the pool's "*" blocks.
import { parseRate, type Rate } from '../config/duration.ts';
import type { DomainSettingsConfig, ProviderGroupConfig, SmarthostConfig, VirtualMtaConfig } from '../config/schema.ts';
import { REPLY_PATTERN_FLAGS } from '../config/field-checks.ts';

/** dane: DANE where TLSA records are validated, else opportunistic; dane-only: DANE or nothing (tls-route.ts). */
export type TlsPolicy = 'none' | 'opportunistic' | 'required' | 'verify' | 'dane' | 'dane-only';
export type RetrySchedule = number[] | { initial: number; factor: number; max: number };

export interface BackoffPolicy {
  replyPatterns: RegExp[];
  maxSmtpOut: number;
  maxMessageRate?: Rate;
  retryAfter: number;
  returnAfter: number;
}

export interface ResolvedDomainSettings {
  tlsPolicy: TlsPolicy;
  mtaSts: boolean;
  retryAfter: RetrySchedule;
  bounceAfter: number;
  maxSmtpOut: number;
  maxMessagesPerConnection: number;
  maxMessageRate?: Rate;
  /** Smarthost replacing MX resolution. */
  smtpHost?: { host: string; port: number };
  /** Authenticated submission server replacing MX resolution (smarthost-session.ts). */
  smarthost?: SmarthostConfig;
  backoff?: BackoffPolicy;
  /** The backoff came from a catch-all "*" block (a pool default): a provider group's backoff goes before it (group-backoff.ts). */
  backoffFromCatchAll?: boolean;
}

/** PowerMTA-like defaults when nothing is configured. */
export const BUILT_IN_DOMAIN_SETTINGS: ResolvedDomainSettings = {
  tlsPolicy: 'opportunistic',
  mtaSts: false,
  retryAfter: [10 * 60_000],
  bounceAfter: 4 * 86_400_000,
  maxSmtpOut: 20,
  maxMessagesPerConnection: 100,
};

/** How specific a pattern is for a domain: -1 no match, 0 "*", 1+ "*.suffix" by length, Infinity exact. */
export function matchSpecificity(pattern: string, domain: string): number {
  if (pattern === '*') return 0;
  if (pattern.startsWith('*.')) {
    const suffix = pattern.slice(1);
    return domain.endsWith(suffix) && domain.length > suffix.length ? suffix.length : -1;
  }
  return pattern === domain ? Number.POSITIVE_INFINITY : -1;
}

/** Blocks of one list that match the domain, least specific first (so later ones override). */
function matchingBlocks(blocks: readonly DomainSettingsConfig[], domain: string): DomainSettingsConfig[] {
  return blocks
    .map((block) => ({ block, rank: matchSpecificity(block.match, domain) }))
    .filter(({ rank }) => rank >= 0)
    .sort((a, b) => a.rank - b.rank)
    .map(({ block }) => block);
}

export function resolveDomainSettings(
  domain: string,
  virtualMta: Pick<VirtualMtaConfig, 'domains'>,
  poolDefaults: readonly DomainSettingsConfig[],
  providerGroup?: Pick<ProviderGroupConfig, 'domainSettings'>,
): ResolvedDomainSettings {
  const settings: ResolvedDomainSettings = { ...BUILT_IN_DOMAIN_SETTINGS };
  const lowered = domain.toLowerCase();
  const pool = matchingBlocks(poolDefaults, lowered);
  const catchAll = pool.filter((block) => block.match === '*').length;
  const group: DomainSettingsConfig[] = providerGroup?.domainSettings ? [{ match: lowered, ...providerGroup.domainSettings }] : [];
  for (const block of [...pool.slice(0, catchAll), ...group, ...pool.slice(catchAll), ...matchingBlocks(virtualMta.domains, lowered)]) {
    if (block.tlsPolicy !== undefined) settings.tlsPolicy = block.tlsPolicy;
    if (block.mtaSts !== undefined) settings.mtaSts = block.mtaSts;
    if (block.retryAfter !== undefined) settings.retryAfter = block.retryAfter;
    if (block.bounceAfter !== undefined) settings.bounceAfter = block.bounceAfter;
    if (block.maxSmtpOut !== undefined) settings.maxSmtpOut = block.maxSmtpOut;
    if (block.maxMessagesPerConnection !== undefined) settings.maxMessagesPerConnection = block.maxMessagesPerConnection;
    if (block.maxMessageRate !== undefined) settings.maxMessageRate = parseRate(block.maxMessageRate);
    // smtpHost and smarthost are one route: the more specific block's replaces the other's.
    if (block.smtpHost !== undefined) {
      settings.smtpHost = parseHostPort(block.smtpHost);
      delete settings.smarthost;
    }
    if (block.smarthost !== undefined) {
      settings.smarthost = block.smarthost;
      delete settings.smtpHost;
    }
    if (block.backoff !== undefined) {
      settings.backoff = toBackoffPolicy(block.backoff);
      if (block.match === '*') settings.backoffFromCatchAll = true;
      else delete settings.backoffFromCatchAll;
    }
  }
  return settings;
}

/** A backoff block of the config as the scheduler applies it (compiled reply patterns). */
export function toBackoffPolicy(config: NonNullable<DomainSettingsConfig['backoff']>): BackoffPolicy {
  return {
    replyPatterns: config.replyPatterns.map((pattern) => new RegExp(pattern, REPLY_PATTERN_FLAGS)),
    maxSmtpOut: config.maxSmtpOut,
    retryAfter: config.retryAfter,
    returnAfter: config.returnAfter,
    ...(config.maxMessageRate ? { maxMessageRate: parseRate(config.maxMessageRate) } : {}),
  };
}

/** "host:port" or "[v6]:port" as validated by the schema. */
export function parseHostPort(text: string): { host: string; port: number } {
  const separator = text.lastIndexOf(':');
  const host = text.slice(0, separator).replace(/^\[(.*)\]$/, '$1');
  return { host, port: Number(text.slice(separator + 1)) };
}
