// MTA-STS (RFC 8461): a domain publishes "_mta-sts.<domain>" TXT (v=STSv1; id=...) and a
// policy at https://mta-sts.<domain>/.well-known/mta-sts.txt. An `enforce` policy limits
// delivery to MX hosts matching its patterns, over TLS with a verified certificate; `testing`
// only reports. The TXT record, the policy text and MX matching are read with mailauth's MTA-STS
// module (its RFC 8461 grammar is stricter than this relay's earlier parser: mx pattern syntax,
// max_age bounds, multiple TXT records); the fetch is this module's, so the relay's clock, trust
// anchors and test addresses apply. Policies are cached for max_age in a file on the spool volume
// (§5.1: a persistent cache, so a downgrade after a restart is still detected), refreshed in the
// background before they expire, and the TXT record is looked up at most once per TXT_CACHE_MS.
// Why the last fetch of a domain's policy failed (unreachable, invalid, untrusted certificate) is
// kept for TLS-RPT until a fetch succeeds.
import https from 'node:https';
import { checkServerIdentity } from 'node:tls';
import { parsePolicy, resolvePolicy, validateMx } from 'mailauth/lib/mta-sts.js';
import type { Clock } from './clock.ts';
import type { PolicyCacheFile } from './mta-sts-cache.ts';

export interface StsPolicy {
  mode: 'enforce' | 'testing' | 'none';
  mx: string[];
  /** Seconds. */
  maxAge: number;
}

/** Parse the policy text (mailauth, lax mode); throws naming the bad field. */
export function parseStsPolicy(text: string): StsPolicy {
  try {
    const policy = parsePolicy(text);
    return { mode: policy.mode, mx: policy.mx ?? [], maxAge: policy.maxAge ?? 0 };
  } catch (error) {
    throw new Error(`MTA-STS policy: ${(error as Error).message} (${(error as { code?: string }).code ?? 'invalid'})`);
  }
}

/** "mail.example.com" or "*.example.com" (exactly one left-most label). */
export function mxMatchesPolicy(mxHost: string, patterns: readonly string[]): boolean {
  return validateMx(mxHost.replace(/\.$/, ''), { mode: 'enforce', mx: [...patterns] }).valid;
}

export interface MtaStsOptions {
  clock: Clock;
  /** TXT lookup: records as strings, [] when there are none. */
  resolveTxt: (name: string) => Promise<string[]>;
  /** Where cached policies are kept across restarts; none keeps them in memory only. */
  cacheFile?: PolicyCacheFile;
  /** Where to fetch policies (tests): connect here instead of resolving mta-sts.<domain>. */
  connectAddress?: string;
  port?: number;
  /** Trust anchors instead of the system roots. */
  ca?: Buffer | Buffer[];
  timeoutMs?: number;
}

export interface CachedPolicy {
  id: string;
  policy: StsPolicy;
  /** The policy text as fetched (TLS-RPT reports quote it). */
  text: string;
  fetchedAt: number;
  expiresAt: number;
}

/** Why a policy could not be had: fetch (HTTP, network), invalid (the text), webpki (the certificate). */
export interface StsFetchFailure {
  kind: 'fetch' | 'invalid' | 'webpki';
  message: string;
}

function fetchFailureOf(error: Error): StsFetchFailure {
  const code = (error as NodeJS.ErrnoException).code ?? '';
  if (/CERT|SELF_SIGNED|UNABLE_TO_VERIFY|ALTNAME/.test(code)) return { kind: 'webpki', message: error.message };
  if (/^MTA-STS policy: |not text\/plain|too large/.test(error.message)) return { kind: 'invalid', message: error.message };
  return { kind: 'fetch', message: error.message };
}

/** Which policy applied to a domain, for the admin API and logs. */
export interface AppliedStsPolicy extends CachedPolicy {
  domain: string;
}

const MAX_POLICY_BYTES = 64 * 1024;
const TXT_CACHE_MS = 5 * 60_000;
/** Refresh a cached policy in the background once this share of max_age (at most a day) has passed. */
const REFRESH_AFTER_SHARE = 0.5;
const REFRESH_AFTER_MAX_MS = 86_400_000;

export class MtaStsResolver {
  private readonly options: MtaStsOptions;
  private readonly cache: Map<string, CachedPolicy>;
  private readonly txt = new Map<string, { id: string | undefined; until: number }>();
  private readonly refreshing = new Map<string, Promise<void>>();
  private readonly failures = new Map<string, StsFetchFailure>();

  constructor(options: MtaStsOptions) {
    this.options = options;
    this.cache = options.cacheFile?.load() ?? new Map();
  }

  /** The policy in force for a domain, or undefined when it has none. */
  async policyFor(domain: string): Promise<StsPolicy | undefined> {
    return (await this.appliedFor(domain))?.policy;
  }

  /** The cached policy entry in force for a domain (with its id and text), or undefined. */
  async appliedFor(domain: string): Promise<CachedPolicy | undefined> {
    const now = this.options.clock.now();
    const id = await this.policyId(domain);
    const cached = this.cache.get(domain);
    const valid = cached && cached.expiresAt > now ? cached : undefined;
    // No TXT record or a DNS failure leaves a cached policy in force until it expires (§5.1).
    if (valid && (id === undefined || id === valid.id)) {
      if (id !== undefined && now - valid.fetchedAt >= Math.min(REFRESH_AFTER_MAX_MS, valid.policy.maxAge * 1000 * REFRESH_AFTER_SHARE)) this.refreshInBackground(domain, id);
      return valid;
    }
    if (id === undefined) {
      this.failures.delete(domain);
      return undefined;
    }
    await this.fetchAndStore(domain, id);
    const fresh = this.cache.get(domain);
    return fresh && fresh.expiresAt > now ? fresh : undefined;
  }

  /** Why the last fetch of the domain's policy failed, while no fetch has succeeded since. */
  fetchFailure(domain: string): StsFetchFailure | undefined {
    return this.failures.get(domain);
  }

  /** Every domain with a cached policy still in force. */
  list(): AppliedStsPolicy[] {
    const now = this.options.clock.now();
    return [...this.cache].filter(([, entry]) => entry.expiresAt > now).map(([domain, entry]) => ({ domain, ...entry })).sort((a, b) => a.domain.localeCompare(b.domain));
  }

  /** Refetch behind a delivery that goes on with the cached policy (proactive refresh, §5.1). */
  private refreshInBackground(domain: string, id: string): void {
    if (this.refreshing.has(domain)) return;
    const running = this.fetchAndStore(domain, id).finally(() => this.refreshing.delete(domain));
    this.refreshing.set(domain, running);
  }

  /** A failed fetch or a bad policy keeps whatever is cached. */
  private async fetchAndStore(domain: string, id: string): Promise<void> {
    try {
      const text = await this.fetchPolicy(domain);
      const policy = parseStsPolicy(text);
      const now = this.options.clock.now();
      this.store(domain, { id, policy, text, fetchedAt: now, expiresAt: now + policy.maxAge * 1000 });
      this.failures.delete(domain);
    } catch (error) {
      // the cached policy, if any, stays in force until it expires
      this.failures.set(domain, fetchFailureOf(error as Error));
    }
  }

  private store(domain: string, entry: CachedPolicy): void {
    this.cache.set(domain, entry);
    this.options.cacheFile?.save(this.cache);
  }

  private async policyId(domain: string): Promise<string | undefined> {
    const now = this.options.clock.now();
    const known = this.txt.get(domain);
    if (known && known.until > now) return known.id;
    let id: string | undefined;
    try {
      id = (await resolvePolicy(domain, { resolver: async (name: string) => (await this.options.resolveTxt(name)).map((record) => [record]) })) || undefined;
    } catch {
      id = undefined;
    }
    this.txt.set(domain, { id, until: now + TXT_CACHE_MS });
    return id;
  }

  private fetchPolicy(domain: string): Promise<string> {
    const host = `mta-sts.${domain}`;
    return new Promise((resolve, reject) => {
      const request = https.get(
        {
          host: this.options.connectAddress ?? host,
          servername: host,
          port: this.options.port ?? 443,
          path: '/.well-known/mta-sts.txt',
          headers: { host },
          timeout: this.options.timeoutMs ?? 10_000,
          agent: false,
          ...(this.options.ca ? { ca: this.options.ca } : {}),
          // The certificate must be valid for mta-sts.<domain> even when connecting by address.
          checkServerIdentity: (_hostname, cert) => checkServerIdentity(host, cert),
        },
        (response) => {
          if (response.statusCode !== 200) {
            response.resume();
            return reject(new Error(`MTA-STS policy fetch for ${domain}: HTTP ${response.statusCode}`));
          }
          if (!/^text\/plain\b/i.test(response.headers['content-type'] ?? '')) {
            response.resume();
            return reject(new Error(`MTA-STS policy for ${domain} is not text/plain`));
          }
          let body = '';
          response.setEncoding('utf8');
          response.on('data', (chunk: string) => {
            body += chunk;
            if (body.length > MAX_POLICY_BYTES) request.destroy(new Error('MTA-STS policy too large'));
          });
          response.on('end', () => resolve(body));
          response.on('error', reject);
        },
      );
      request.on('timeout', () => request.destroy(new Error('MTA-STS policy fetch timed out')));
      request.on('error', reject);
    });
  }
}
