// How the pods of a pool share one suppression list although each has its own spool volume:
// every change made on a pod (a hard bounce it saw, an admin call to it) is pushed to each peer's
// admin API (POST /api/v1/suppressions/sync, with the pool's admin token), retried with backoff
// until the peer takes it; a peer applies it without pushing it on. At start a pod reads every
// peer's records (GET /api/v1/suppressions/records) and merges them, so what it missed while it
// was down comes back (both with the pool's admin token). Records carry their time and the latest one per address wins, so the
// order changes arrive in does not matter. Peers are "host:port" admin addresses from the
// runtime config (the operator renders the pool's pod DNS names).
import type { Logger } from 'pino';
import { parseSuppressionRecord, type SuppressionRecord } from './suppression-list.ts';

export const SYNC_PATH = '/api/v1/suppressions/sync';
export const RECORDS_PATH = '/api/v1/suppressions/records';
const REQUEST_TIMEOUT_MS = 10_000;
const FIRST_RETRY_MS = 1_000;
const MAX_RETRY_MS = 60_000;
/** Records held for one unreachable peer; past this the oldest go (the peer gets them by reading this pod's records when it starts). */
const MAX_PENDING = 100_000;
/** Records sent in one request. */
const BATCH = 1_000;

export interface SuppressionPeersOptions {
  logger: Logger;
  /** The admin bearer token in force (peers share the pool's token). */
  token: () => string | undefined;
  onFailure: () => void;
}

interface PeerOutbox {
  pending: SuppressionRecord[];
  timer?: NodeJS.Timeout;
  sending: boolean;
  delayMs: number;
}

function peerUrl(peer: string, route: string): string {
  return `http://${peer}${route}`;
}

export class SuppressionPeers {
  readonly #options: SuppressionPeersOptions;
  readonly #outboxes = new Map<string, PeerOutbox>();
  #closed = false;

  constructor(options: SuppressionPeersOptions) {
    this.#options = options;
  }

  /** Take a new peer list (config reload); records pending for a peer no longer listed are dropped. */
  setPeers(peers: readonly string[]): void {
    for (const [peer, outbox] of this.#outboxes) {
      if (peers.includes(peer)) continue;
      clearTimeout(outbox.timer);
      this.#outboxes.delete(peer);
    }
    for (const peer of peers) if (!this.#outboxes.has(peer)) this.#outboxes.set(peer, { pending: [], sending: false, delayMs: FIRST_RETRY_MS });
  }

  get peers(): string[] {
    return [...this.#outboxes.keys()];
  }

  /** Records waiting for a peer that has not taken them yet. */
  get pending(): number {
    let count = 0;
    for (const outbox of this.#outboxes.values()) count += outbox.pending.length;
    return count;
  }

  /** Queue local changes for every peer and send them now. */
  push(records: readonly SuppressionRecord[]): void {
    if (records.length === 0) return;
    for (const [peer, outbox] of this.#outboxes) {
      for (const record of records) outbox.pending.push(record);
      if (outbox.pending.length > MAX_PENDING) outbox.pending.splice(0, outbox.pending.length - MAX_PENDING);
      if (!outbox.timer) void this.#send(peer, outbox);
    }
  }

  /** Every peer's records (peers that do not answer are logged and left out). */
  async pull(): Promise<SuppressionRecord[]> {
    const all: SuppressionRecord[] = [];
    await Promise.all(
      this.peers.map(async (peer) => {
        try {
          const token = this.#options.token();
          const response = await fetch(peerUrl(peer, RECORDS_PATH), { headers: token ? { authorization: `Bearer ${token}` } : {}, signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) });
          if (!response.ok) throw new Error(`HTTP ${response.status}`);
          const body = (await response.json()) as { records?: unknown };
          const records = Array.isArray(body.records) ? body.records.map(parseSuppressionRecord) : [];
          for (const record of records) if (record) all.push(record);
        } catch (error) {
          this.#options.onFailure();
          this.#options.logger.warn({ peer, err: (error as Error).message }, 'could not read the suppression list of a peer; it will push its changes here');
        }
      }),
    );
    return all;
  }

  close(): void {
    this.#closed = true;
    for (const outbox of this.#outboxes.values()) clearTimeout(outbox.timer);
  }

  async #send(peer: string, outbox: PeerOutbox): Promise<void> {
    if (outbox.sending || this.#closed) return;
    outbox.sending = true;
    outbox.timer = undefined;
    try {
      while (outbox.pending.length > 0 && this.#outboxes.get(peer) === outbox && !this.#closed) {
        const batch = outbox.pending.slice(0, BATCH);
        const token = this.#options.token();
        const response = await fetch(peerUrl(peer, SYNC_PATH), {
          method: 'POST',
          headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
          body: JSON.stringify({ records: batch }),
          signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
        });
        if (!response.ok) throw new Error(`HTTP ${response.status}: ${(await response.text()).slice(0, 200)}`);
        outbox.pending.splice(0, batch.length);
        outbox.delayMs = FIRST_RETRY_MS;
      }
    } catch (error) {
      this.#options.onFailure();
      this.#options.logger.warn({ peer, pending: outbox.pending.length, retryInMs: outbox.delayMs, err: (error as Error).message }, 'could not send suppression changes to a peer; retrying');
      if (!this.#closed && this.#outboxes.get(peer) === outbox) {
        outbox.timer = setTimeout(() => void this.#send(peer, outbox), outbox.delayMs);
        outbox.timer.unref();
        outbox.delayMs = Math.min(outbox.delayMs * 2, MAX_RETRY_MS);
      }
    } finally {
      outbox.sending = false;
    }
  }
}
