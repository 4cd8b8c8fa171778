// The operator-side DKIM check: for each key of a pool, does the TXT record at
// <selector>._domainkey.<domain> publish the public half of the private key in its Secret?
// Published (a record carries this key), Mismatch (DKIM records exist, none with this key, or a
// revoked empty p=), NotPublished (no DKIM record at the name), InvalidKey (the Secret holds no
// usable key for the algorithm) or Unknown (the lookup failed). The result becomes
// status.dkimKeys, the DkimPublished condition and an Event per key whose state changed, so a
// wrong record is seen before receivers start failing DMARC. Lookups go to the configured
// resolvers (the operator pod's own when none) and are cached for `cacheMs`.
import { Resolver } from 'node:dns/promises';
import type { DkimKeySpec } from '../api/dkim.ts';
import type { VirtualMtaPool } from '../api/virtual-mta-pool.ts';
import { dkimKeyProblem, dkimRecordName, parseDkimRecord, type PublicKeySummary } from '../../mta/signing/dkim-keys.ts';
import type { DkimAlgorithm } from '../../mta/config/schema.ts';
import type { ConditionInput } from './conditions.ts';

export type DkimKeyState = 'Published' | 'Mismatch' | 'NotPublished' | 'InvalidKey' | 'Unknown';

export interface DkimKeyStatus {
  domain: string;
  selector: string;
  algorithm: string;
  virtualMta?: string;
  state: DkimKeyState;
  message?: string;
}

export interface DkimCheckResult {
  keys: DkimKeyStatus[];
  condition: ConditionInput;
  /** Keys whose state differs from `previous`: each gets an Event (Normal when Published, else Warning). */
  changed: DkimKeyStatus[];
}

type TxtLookup = { records: string[] } | { missing: true } | { error: string };

/** A cached TXT lookup per resolver set. */
export class DkimDnsChecker {
  readonly #cacheMs: number;
  readonly #cache = new Map<string, { at: number; result: TxtLookup }>();
  readonly #now: () => number;

  constructor(options: { cacheMs?: number; now?: () => number } = {}) {
    this.#cacheMs = options.cacheMs ?? 60_000;
    this.#now = options.now ?? Date.now;
  }

  async #lookup(name: string, servers: readonly string[]): Promise<TxtLookup> {
    const cacheKey = `${servers.join(',')} ${name}`;
    const cached = this.#cache.get(cacheKey);
    if (cached && this.#now() - cached.at < this.#cacheMs) return cached.result;
    const resolver = new Resolver({ timeout: 3000, tries: 2 });
    if (servers.length > 0) resolver.setServers([...servers]);
    let result: TxtLookup;
    try {
      result = { records: (await resolver.resolveTxt(name)).map((strings) => strings.join('')) };
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      result = code === 'ENOTFOUND' || code === 'ENODATA' ? { missing: true } : { error: `${code ?? 'error'}: ${(error as Error).message}` };
    }
    this.#cache.set(cacheKey, { at: this.#now(), result });
    return result;
  }

  /**
   * Checks every key of the pool; `publicKey(secretName, key)` gives what the Secret cache kept
   * of the private key. Undefined when the pool has no keys or the check is off.
   */
  async check(pool: VirtualMtaPool, publicKey: (secretName: string, key: string) => PublicKeySummary | undefined, previous: readonly DkimKeyStatus[] | undefined): Promise<DkimCheckResult | undefined> {
    const dkim = pool.spec.dkim;
    const entries: { key: DkimKeySpec; virtualMta?: string }[] = [
      ...(dkim?.keys ?? []).map((key) => ({ key })),
      ...pool.spec.virtualMtas.flatMap((vmta) => (vmta.dkimKeys ?? []).map((key) => ({ key, virtualMta: vmta.name }))),
    ];
    if (entries.length === 0 || dkim?.dnsCheck.enabled === false) return undefined;
    const servers = dkim?.dnsCheck.resolvers ?? [];
    const keys = await Promise.all(entries.map(({ key, virtualMta }) => this.#checkKey(key, virtualMta, publicKey(key.secretName, key.secretKey), servers)));
    const identity = (status: DkimKeyStatus) => `${status.virtualMta ?? ''}/${status.domain}/${status.selector}/${status.algorithm}`;
    const before = new Map((previous ?? []).map((status) => [identity(status), status.state]));
    const changed = keys.filter((status) => before.get(identity(status)) !== status.state);
    return { keys, condition: conditionOf(keys), changed };
  }

  async #checkKey(key: DkimKeySpec, virtualMta: string | undefined, summary: PublicKeySummary | undefined, servers: readonly string[]): Promise<DkimKeyStatus> {
    const name = dkimRecordName(key.selector, key.domain);
    const base = { domain: key.domain, selector: key.selector, algorithm: key.algorithm, ...(virtualMta ? { virtualMta } : {}) };
    if (!summary) return { ...base, state: 'InvalidKey', message: `Secret "${key.secretName}" key "${key.secretKey}" holds no PEM private key` };
    const problem = dkimKeyProblem(summary, key.algorithm as DkimAlgorithm);
    if (problem) return { ...base, state: 'InvalidKey', message: `Secret "${key.secretName}" key "${key.secretKey}": ${problem}` };
    const lookup = await this.#lookup(name, servers);
    if ('error' in lookup) return { ...base, state: 'Unknown', message: `TXT lookup of ${name} failed: ${lookup.error}` };
    const records = 'missing' in lookup ? [] : lookup.records.map(parseDkimRecord).filter((tags) => tags.has('p') && (!tags.has('v') || tags.get('v') === 'DKIM1'));
    if (records.length === 0) return { ...base, state: 'NotPublished', message: `no DKIM record at ${name}; publish TXT "v=DKIM1; k=${summary.type}; p=${summary.publicKey}"` };
    const keyType = key.algorithm === 'ed25519-sha256' ? 'ed25519' : 'rsa';
    if (records.some((tags) => tags.get('p') === summary.publicKey && (tags.get('k') ?? 'rsa') === keyType)) return { ...base, state: 'Published', message: `${name} publishes this key` };
    const revoked = records.every((tags) => tags.get('p') === '');
    return { ...base, state: 'Mismatch', message: revoked ? `${name} revokes the key (empty p=)` : `${name} publishes another key than Secret "${key.secretName}" key "${key.secretKey}" holds` };
  }
}

/** DkimPublished: True when every key is published, else the worst state's reason with the keys it concerns. */
function conditionOf(keys: DkimKeyStatus[]): ConditionInput {
  const order: DkimKeyState[] = ['Mismatch', 'InvalidKey', 'NotPublished', 'Unknown'];
  for (const state of order) {
    const affected = keys.filter((status) => status.state === state);
    if (affected.length === 0) continue;
    const names = affected.map((status) => `${status.selector}._domainkey.${status.domain}`).join(', ');
    return { type: 'DkimPublished', status: state === 'Unknown' ? 'Unknown' : 'False', reason: state === 'Unknown' ? 'LookupFailed' : state, message: `${affected.length} of ${keys.length} DKIM key(s) ${state}: ${names}; ${affected[0]!.message ?? ''}`.slice(0, 4000) };
  }
  return { type: 'DkimPublished', status: 'True', reason: 'Published', message: `all ${keys.length} DKIM key(s) are published in DNS` };
}
