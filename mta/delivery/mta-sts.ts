// MTA-STS (RFC 8461): a domain publishes "_mta-sts.<domain>" TXT (v=STSv1; id=...) and a
// policy at https://mta-sts.<domain>/.well-known/mta-sts.txt. An `enforce` policy limits
// delivery to MX hosts matching its patterns, over TLS with a verified certificate; `testing`
// only reports. Policies are cached for max_age and refetched when the TXT id changes; a
// failed refresh keeps using the cached policy, and no policy at all means no constraint.
import https from 'node:https';
import { checkServerIdentity } from 'node:tls';
import type { Clock } from './clock.ts';

export interface StsPolicy {
  mode: 'enforce' | 'testing' | 'none';
  mx: string[];
  /** Seconds. */
  maxAge: number;
}

/** Parse the policy text; throws naming the bad field. */
export function parseStsPolicy(text: string): StsPolicy {
  const fields = new Map<string, string[]>();
  for (const line of text.split(/\r?\n/)) {
    const match = /^([A-Za-z0-9_]+):\s*(.*?)\s*$/.exec(line);
    if (!match) continue;
    const values = fields.get(match[1]!) ?? [];
    values.push(match[2]!);
    fields.set(match[1]!, values);
  }
  if (fields.get('version')?.[0] !== 'STSv1') throw new Error('MTA-STS policy: version must be STSv1');
  const mode = fields.get('mode')?.[0];
  if (mode !== 'enforce' && mode !== 'testing' && mode !== 'none') throw new Error(`MTA-STS policy: mode must be enforce, testing or none (got ${JSON.stringify(mode)})`);
  const maxAgeText = fields.get('max_age')?.[0] ?? '';
  if (!/^\d{1,10}$/.test(maxAgeText)) throw new Error(`MTA-STS policy: max_age must be a number of seconds (got ${JSON.stringify(maxAgeText)})`);
  const mx = (fields.get('mx') ?? []).map((pattern) => pattern.toLowerCase());
  if (mode !== 'none' && mx.length === 0) throw new Error('MTA-STS policy: at least one mx pattern is required');
  return { mode, mx, maxAge: Math.min(Number(maxAgeText), 31_557_600) };
}

/** "mail.example.com" or "*.example.com" (exactly one left-most label). */
export function mxMatchesPolicy(mxHost: string, patterns: readonly string[]): boolean {
  const host = mxHost.toLowerCase().replace(/\.$/, '');
  return patterns.some((pattern) => {
    if (!pattern.startsWith('*.')) return host === pattern;
    const suffix = pattern.slice(1);
    return host.endsWith(suffix) && !host.slice(0, -suffix.length).includes('.') && host.length > suffix.length;
  });
}

export interface MtaStsOptions {
  clock: Clock;
  /** TXT lookup: records as strings, [] when there are none. */
  resolveTxt: (name: string) => Promise<string[]>;
  /** Where to fetch policies (tests): connect here instead of resolving mta-sts.<domain>. */
  connectAddress?: string;
  port?: number;
  /** Trust anchors instead of the system roots. */
  ca?: Buffer | Buffer[];
  timeoutMs?: number;
}

interface CachedPolicy {
  id: string;
  policy: StsPolicy;
  expiresAt: number;
}

const MAX_POLICY_BYTES = 64 * 1024;

export class MtaStsResolver {
  private readonly options: MtaStsOptions;
  private readonly cache = new Map<string, CachedPolicy>();

  constructor(options: MtaStsOptions) {
    this.options = options;
  }

  /** The policy in force for a domain, or undefined when it has none. */
  async policyFor(domain: string): Promise<StsPolicy | undefined> {
    const now = this.options.clock.now();
    const cached = this.cache.get(domain);
    let id: string | undefined;
    try {
      const records = (await this.options.resolveTxt(`_mta-sts.${domain}`)).filter((record) => /^v=STSv1\b/.test(record));
      id = records.length === 1 ? /(?:^|;)\s*id=([A-Za-z0-9]{1,32})\s*(?:;|$)/.exec(records[0]!)?.[1] : undefined;
    } catch {
      // A DNS failure leaves any cached policy in force (RFC 8461 §5.1).
      return cached && cached.expiresAt > now ? cached.policy : undefined;
    }
    if (cached && cached.expiresAt > now && (id === undefined || id === cached.id)) return cached.policy;
    if (id === undefined) return cached && cached.expiresAt > now ? cached.policy : undefined;
    try {
      const policy = parseStsPolicy(await this.fetchPolicy(domain));
      this.cache.set(domain, { id, policy, expiresAt: now + policy.maxAge * 1000 });
      return policy;
    } catch {
      return cached && cached.expiresAt > now ? cached.policy : undefined;
    }
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
