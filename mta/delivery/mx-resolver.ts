// Where mail for a domain goes: MX lookup through a configurable resolver (node:dns with
// explicit servers), preference order (equal preferences shuffled, RFC 5321 §5.1), implicit MX
// to the domain's own A/AAAA, null MX (RFC 7505) and NXDOMAIN as permanent failures, any other
// DNS failure as temporary. Answers are cached; node:dns does not expose MX TTLs, so a domain's
// route lives for the shortest TTL of its host addresses (at most MAX_CACHE_MS).
import { Resolver } from 'node:dns/promises';
import net from 'node:net';
import type { Clock } from './clock.ts';

export interface MxHost {
  /** Host name (the MX exchange, or the domain itself for an implicit MX). */
  name: string;
  preference: number;
  addresses: string[];
}

export type DnsFailureKind = 'null-mx' | 'no-such-domain' | 'dns-temporary';

export class DnsFailure extends Error {
  readonly kind: DnsFailureKind;
  constructor(kind: DnsFailureKind, message: string) {
    super(message);
    this.name = 'DnsFailure';
    this.kind = kind;
  }
  get permanent(): boolean {
    return this.kind !== 'dns-temporary';
  }
}

const MAX_CACHE_MS = 3_600_000;
const PERMANENT_FAILURE_CACHE_MS = 300_000;
const TEMPORARY_FAILURE_CACHE_MS = 30_000;

interface CacheEntry {
  expiresAt: number;
  hosts?: MxHost[];
  failure?: DnsFailure;
}

interface AddressAnswer {
  addresses: string[];
  ttlMs: number;
}

export class MxResolver {
  private readonly resolver: Resolver;
  private readonly clock: Clock;
  private readonly cache = new Map<string, CacheEntry>();
  private readonly inFlight = new Map<string, Promise<MxHost[]>>();

  constructor(options: { servers: readonly string[]; clock: Clock; timeoutMs?: number }) {
    this.resolver = new Resolver({ timeout: options.timeoutMs ?? 5_000, tries: 2 });
    if (options.servers.length > 0) this.resolver.setServers([...options.servers]);
    this.clock = options.clock;
  }

  /** MX hosts in the order to try them; throws DnsFailure. */
  async resolveMx(domain: string): Promise<MxHost[]> {
    const key = domain.toLowerCase();
    const cached = this.cache.get(key);
    if (cached && cached.expiresAt > this.clock.now()) {
      if (cached.failure) throw cached.failure;
      return shuffleEqualPreferences(cached.hosts ?? []);
    }
    let pending = this.inFlight.get(key);
    if (!pending) {
      pending = this.lookup(key).finally(() => this.inFlight.delete(key));
      this.inFlight.set(key, pending);
    }
    return shuffleEqualPreferences(await pending);
  }

  /** Addresses of a smarthost given by name or address. */
  async resolveHost(host: string): Promise<string[]> {
    if (net.isIP(host)) return [host];
    const answer = await this.addresses(host);
    if (answer.addresses.length === 0) throw new DnsFailure('dns-temporary', `no address for ${host}`);
    return answer.addresses;
  }

  /** TXT records of a name, each joined into one string; [] when there are none. Throws DnsFailure on other errors. */
  async resolveTxt(name: string): Promise<string[]> {
    try {
      return (await this.resolver.resolveTxt(name)).map((chunks) => chunks.join(''));
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === 'ENODATA' || code === 'ENOTFOUND') return [];
      throw new DnsFailure('dns-temporary', `TXT lookup for ${name} failed: ${code ?? (error as Error).message}`);
    }
  }

  private async lookup(domain: string): Promise<MxHost[]> {
    try {
      const hosts = await this.lookupUncached(domain);
      return hosts;
    } catch (error) {
      const failure = error instanceof DnsFailure ? error : new DnsFailure('dns-temporary', `DNS lookup for ${domain} failed: ${(error as Error).message}`);
      this.cache.set(domain, { failure, expiresAt: this.clock.now() + (failure.permanent ? PERMANENT_FAILURE_CACHE_MS : TEMPORARY_FAILURE_CACHE_MS) });
      throw failure;
    }
  }

  private async lookupUncached(domain: string): Promise<MxHost[]> {
    let records: { exchange: string; priority: number }[];
    try {
      records = await this.resolver.resolveMx(domain);
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === 'ENOTFOUND') throw new DnsFailure('no-such-domain', `${domain}: no such domain (NXDOMAIN)`);
      if (code !== 'ENODATA') throw new DnsFailure('dns-temporary', `MX lookup for ${domain} failed: ${code ?? (error as Error).message}`);
      records = [];
    }
    if (records.some((record) => record.exchange === '' || record.exchange === '.')) {
      throw new DnsFailure('null-mx', `${domain} does not accept mail (null MX, RFC 7505)`);
    }
    const targets = records.length > 0 ? records.map((record) => ({ name: record.exchange.toLowerCase(), preference: record.priority })) : [{ name: domain, preference: 0 }];
    const answers = await Promise.all(targets.map(async (target) => ({ target, answer: await this.addresses(target.name) })));
    const hosts = answers
      .filter(({ answer }) => answer.addresses.length > 0)
      .map(({ target, answer }) => ({ ...target, addresses: answer.addresses }))
      .sort((a, b) => a.preference - b.preference);
    if (hosts.length === 0) {
      if (records.length === 0) throw new DnsFailure('no-such-domain', `${domain} has no MX and no address records`);
      throw new DnsFailure('dns-temporary', `no address for any MX host of ${domain}`);
    }
    const ttlMs = answers.reduce((shortest, { answer }) => Math.min(shortest, answer.ttlMs), MAX_CACHE_MS);
    this.cache.set(domain, { hosts, expiresAt: this.clock.now() + ttlMs });
    return hosts;
  }

  private async addresses(host: string): Promise<AddressAnswer> {
    const lookups = await Promise.allSettled([this.resolver.resolve4(host, { ttl: true }), this.resolver.resolve6(host, { ttl: true })]);
    const records = lookups.flatMap((lookup) => (lookup.status === 'fulfilled' ? lookup.value : []));
    const hardFailure = lookups.find((lookup) => lookup.status === 'rejected' && !['ENODATA', 'ENOTFOUND'].includes((lookup.reason as NodeJS.ErrnoException).code ?? ''));
    if (records.length === 0 && hardFailure?.status === 'rejected') {
      throw new DnsFailure('dns-temporary', `address lookup for ${host} failed: ${(hardFailure.reason as NodeJS.ErrnoException).code ?? String(hardFailure.reason)}`);
    }
    return { addresses: records.map((record) => record.address), ttlMs: records.reduce((shortest, record) => Math.min(shortest, record.ttl * 1000), MAX_CACHE_MS) };
  }
}

function shuffleEqualPreferences(hosts: readonly MxHost[]): MxHost[] {
  const result = [...hosts];
  for (let start = 0; start < result.length; ) {
    let end = start;
    while (end < result.length && result[end]!.preference === result[start]!.preference) end += 1;
    for (let index = end - 1; index > start; index -= 1) {
      const swap = start + Math.floor(Math.random() * (index - start + 1));
      [result[index], result[swap]] = [result[swap]!, result[index]!];
    }
    start = end;
  }
  return result;
}
