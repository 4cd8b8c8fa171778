// What the relay knows of each VirtualMTA's SOCKS5 egress proxies: whether the last connection
// through each went through (from the VirtualMTA's source address), the error when not, and when.
// A proxy that failed is passed over until `delivery.proxyRecheckAfter` has gone by, then the next
// connection tries it again (the re-probe). Kept per VirtualMTA and proxy, because a proxy
// reached at one address can send from it while failing at another. Feeds the
// vmta_egress_proxy_* metrics and the admin API's GET /egress-proxies (the operator puts it in
// the VirtualMtaPool status).
import type { VirtualMtaConfig } from '../config/schema.ts';
import type { DeliveryMetrics } from '../observe/delivery-metrics.ts';
import type { Clock } from './clock.ts';

export type EgressProxyConfig = VirtualMtaConfig['proxies'][number];

/** One VirtualMTA's view of one proxy, as the admin API reports it. */
export interface EgressProxyState {
  virtualMta: string;
  /** The proxy's "host:port". */
  proxy: string;
  /** Unknown until a connection has tried it. */
  healthy: boolean | undefined;
  lastError?: string;
  /** ISO time of the last connection through it. */
  lastCheckedAt?: string;
  /** Failures in a row. */
  consecutiveFailures: number;
}

interface Entry {
  healthy: boolean | undefined;
  lastError?: string;
  checkedAt?: number;
  consecutiveFailures: number;
}

export class EgressProxyHealth {
  readonly #clock: Clock;
  readonly #metrics: DeliveryMetrics;
  /** VirtualMTA name -> proxy server -> state; the order of a VirtualMTA's map is its config order. */
  #entries = new Map<string, Map<string, Entry>>();

  constructor(clock: Clock, metrics: DeliveryMetrics) {
    this.#clock = clock;
    this.#metrics = metrics;
  }

  /** Keep the state of proxies still configured, start the new ones as unknown, forget the rest (at start and reload). */
  apply(virtualMtas: Iterable<VirtualMtaConfig>): void {
    const next = new Map<string, Map<string, Entry>>();
    for (const vmta of virtualMtas) {
      if (vmta.proxies.length === 0) continue;
      const known = this.#entries.get(vmta.name);
      next.set(vmta.name, new Map(vmta.proxies.map((proxy) => [proxy.server, known?.get(proxy.server) ?? { healthy: undefined, consecutiveFailures: 0 }])));
    }
    for (const [vmta, proxies] of this.#entries) {
      for (const server of proxies.keys()) {
        if (next.get(vmta)?.has(server)) continue;
        this.#metrics.egressProxyUp.remove({ virtual_mta: vmta, proxy: server });
        this.#metrics.egressProxyFailures.remove({ virtual_mta: vmta, proxy: server });
      }
    }
    this.#entries = next;
  }

  /** The proxies a connection should try now, in config order: all but those that failed less than `recheckAfterMs` ago. */
  due(vmta: VirtualMtaConfig, recheckAfterMs: number): EgressProxyConfig[] {
    const now = this.#clock.now();
    return vmta.proxies.filter((proxy) => {
      const entry = this.#entry(vmta.name, proxy.server);
      return entry.healthy !== false || entry.checkedAt === undefined || now - entry.checkedAt >= recheckAfterMs;
    });
  }

  succeeded(vmta: string, server: string): void {
    const entry = this.#entry(vmta, server);
    entry.healthy = true;
    delete entry.lastError;
    entry.checkedAt = this.#clock.now();
    entry.consecutiveFailures = 0;
    this.#metrics.egressProxyUp.set({ virtual_mta: vmta, proxy: server }, 1);
  }

  failed(vmta: string, server: string, reason: string): void {
    const entry = this.#entry(vmta, server);
    entry.healthy = false;
    entry.lastError = reason;
    entry.checkedAt = this.#clock.now();
    entry.consecutiveFailures += 1;
    this.#metrics.egressProxyUp.set({ virtual_mta: vmta, proxy: server }, 0);
    this.#metrics.egressProxyFailures.inc({ virtual_mta: vmta, proxy: server });
  }

  /** "host:port (last error)" of each proxy of the VirtualMTA, for a deferral reason. */
  describe(vmta: VirtualMtaConfig): string {
    return vmta.proxies.map((proxy) => {
      const entry = this.#entry(vmta.name, proxy.server);
      return entry.lastError ? `${proxy.server} (${entry.lastError})` : proxy.server;
    }).join('; ');
  }

  list(): EgressProxyState[] {
    return [...this.#entries].flatMap(([virtualMta, proxies]) =>
      [...proxies].map(([proxy, entry]) => ({
        virtualMta,
        proxy,
        healthy: entry.healthy,
        ...(entry.lastError ? { lastError: entry.lastError } : {}),
        ...(entry.checkedAt !== undefined ? { lastCheckedAt: new Date(entry.checkedAt).toISOString() } : {}),
        consecutiveFailures: entry.consecutiveFailures,
      })),
    );
  }

  #entry(vmta: string, server: string): Entry {
    let proxies = this.#entries.get(vmta);
    if (!proxies) this.#entries.set(vmta, (proxies = new Map()));
    let entry = proxies.get(server);
    if (!entry) proxies.set(server, (entry = { healthy: undefined, consecutiveFailures: 0 }));
    return entry;
  }
}
