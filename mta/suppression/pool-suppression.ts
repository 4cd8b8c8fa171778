// The suppression list as the relay uses it: what the listeners ask at RCPT TO (is this
// recipient suppressed, and in which mode), what delivery reports (a hard bounce of a category
// the config names adds the recipient), what the admin API changes, and the sharing with the
// pool's other pods (suppression-peers.ts). The config block `suppression` switches enforcement
// and bounce capture on; without it the list is kept and editable but stops nothing.
import os from 'node:os';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import type { SuppressionConfig } from '../config/schema.ts';
import type { Classification } from '../delivery/reply-classification.ts';
import { SuppressionList, type SuppressionEntry, type SuppressionReason, type SuppressionRecord, type SuppressionSource } from './suppression-list.ts';
import { SuppressionMetrics } from './suppression-metrics.ts';
import { SuppressionPeers } from './suppression-peers.ts';

export interface PoolSuppressionOptions {
  /** The spool volume's state/ folder. */
  stateDir: string;
  registry: Registry;
  logger: Logger;
  /** This relay's hostname: the `origin` of entries made here. */
  hostname: string;
  config: SuppressionConfig | undefined;
  token: () => string | undefined;
  now?: () => number;
}

export interface Addition {
  address: string;
  reason: SuppressionReason;
  status?: string;
  detail?: string;
}

export class PoolSuppression {
  readonly list: SuppressionList;
  readonly metrics: SuppressionMetrics;
  readonly #peers: SuppressionPeers;
  readonly #logger: Logger;
  readonly #hostname: string;
  readonly #now: () => number;
  #config: SuppressionConfig | undefined;

  private constructor(list: SuppressionList, options: PoolSuppressionOptions) {
    this.list = list;
    this.metrics = new SuppressionMetrics(options.registry, () => list.size);
    this.#logger = options.logger;
    this.#hostname = options.hostname;
    this.#now = options.now ?? Date.now;
    this.#peers = new SuppressionPeers({ logger: options.logger, token: options.token, onFailure: () => this.metrics.peerFailures.inc() });
    this.reload(options.config);
  }

  /** Open the list and merge what the peers hold. */
  static async open(options: PoolSuppressionOptions): Promise<PoolSuppression> {
    const suppression = new PoolSuppression(await SuppressionList.open(options.stateDir), options);
    await suppression.merge(await suppression.#peers.pull());
    return suppression;
  }

  reload(config: SuppressionConfig | undefined): void {
    this.#config = config;
    // The operator lists every pod of the pool; a pod is not its own peer.
    const self = process.env.POD_NAME ?? os.hostname();
    this.#peers.setPeers((config?.peers ?? []).filter((peer) => peer.split(/[.:]/)[0] !== self));
  }

  /** refuse or bounce when the list is enforced; undefined when the config has no `suppression` block. */
  get mode(): SuppressionConfig['mode'] | undefined {
    return this.#config?.mode;
  }

  /** The entry that stops mail to `address`, when the list is enforced. */
  stops(address: string): SuppressionEntry | undefined {
    return this.#config ? this.list.lookup(address) : undefined;
  }

  /** The 550 reply for a recipient refused at RCPT TO (mode refuse), or undefined when it may be sent to. */
  refusal(address: string): { code: 550; message: string } | undefined {
    if (this.#config?.mode !== 'refuse') return undefined;
    const entry = this.stops(address);
    if (!entry) return undefined;
    this.stopped('refused');
    return { code: 550, message: `${suppressionStatus(entry)} <${address}>: ${describeEntry(entry)}; not sent` };
  }

  /** Count a recipient the list stopped. */
  stopped(action: 'refused' | 'bounced'): void {
    this.metrics.hits.inc({ action });
  }

  /** Delivery's report of a final failure: a 5xx of a hard-bounce category adds the recipient. */
  async recordBounce(address: string, classification: Classification): Promise<void> {
    const config = this.#config;
    if (!config || classification.result !== 'bounced' || !classification.category || !classification.status.startsWith('5.')) return;
    if (!config.hardBounceCategories.includes(classification.category)) return;
    try {
      await this.add([{ address, reason: classification.category, status: classification.status, detail: classification.diagnostic.slice(0, 1000) }], 'delivery');
    } catch (error) {
      this.#logger.error({ recipient: address, err: error }, 'could not add a hard-bounced address to the suppression list');
    }
  }

  /** Add addresses made here (delivery or admin); already-suppressed ones keep their entry. Returns the new entries. */
  async add(additions: readonly Addition[], source: SuppressionSource): Promise<SuppressionEntry[]> {
    const addedAt = this.#now();
    const records: SuppressionRecord[] = additions
      .filter((addition) => this.list.lookup(addition.address) === undefined)
      .map((addition) => ({ op: 'add', ...addition, source, addedAt, origin: this.#hostname }));
    const changed = await this.#applyLocal(records);
    return changed.flatMap((record) => (record.op === 'add' ? [this.list.lookup(record.address)!] : []));
  }

  /** Remove addresses (admin); returns those that were on the list. */
  async remove(addresses: readonly string[]): Promise<string[]> {
    const at = this.#now();
    const records: SuppressionRecord[] = addresses.filter((address) => this.list.lookup(address) !== undefined).map((address) => ({ op: 'remove', address, at, source: 'admin', origin: this.#hostname }));
    return (await this.#applyLocal(records)).map((record) => record.address);
  }

  /** A peer's records: applied without being pushed on. */
  async merge(records: readonly SuppressionRecord[]): Promise<number> {
    const changed = await this.list.apply(records);
    this.#count(changed, 'peer');
    return changed.length;
  }

  get peerStatus(): { peers: string[]; pending: number } {
    return { peers: this.#peers.peers, pending: this.#peers.pending };
  }

  async close(): Promise<void> {
    this.#peers.close();
    await this.list.close();
  }

  async #applyLocal(records: SuppressionRecord[]): Promise<SuppressionRecord[]> {
    const changed = await this.list.apply(records);
    this.#count(changed, 'local');
    for (const record of changed) this.#logger.info({ recipient: record.address, ...(record.op === 'add' ? { reason: record.reason } : {}), source: record.source }, record.op === 'add' ? 'address suppressed' : 'address removed from the suppression list');
    this.#peers.push(changed);
    return changed;
  }

  #count(changed: readonly SuppressionRecord[], from: 'local' | 'peer'): void {
    for (const record of changed) {
      const source = from === 'peer' ? 'peer' : record.source;
      if (record.op === 'add') this.metrics.additions.inc({ reason: record.reason, source });
      else this.metrics.removals.inc({ source });
    }
  }
}

/** The RFC 3463 status a suppressed recipient is refused or bounced with: the hard bounce's own 5.1.x, otherwise 5.7.1 (delivery not authorized). */
export function suppressionStatus(entry: SuppressionEntry): string {
  return entry.status?.startsWith('5.1.') ? entry.status : '5.7.1';
}

/** Why an address is suppressed, for SMTP replies and DSNs. */
export function describeEntry(entry: SuppressionEntry): string {
  const when = new Date(entry.addedAt).toISOString();
  return entry.reason === 'operator'
    ? `recipient is on this pool's suppression list (added by an operator on ${when})`
    : `recipient is on this pool's suppression list (hard bounce ${entry.reason}${entry.status ? ` ${entry.status}` : ''} on ${when})`;
}
