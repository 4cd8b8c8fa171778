// What every part of the delivery engine shares: the runtime config in force (replaced on
// reload, so parts read it at use time), the spool, metrics, logger, clock, the VirtualMTAs of
// the pool with their usability, the warm-up counts and the health of their egress proxies. Owned by the engine facade (delivery-engine.ts),
// which builds it once and hands the same object to the scheduler, the connection runner,
// the outcome recorder and the queue view.
import type { Logger } from 'pino';
import type { RuntimeConfig, VirtualMtaConfig } from '../config/schema.ts';
import type { DeliveryMetrics } from '../observe/delivery-metrics.ts';
import type { RelayMetrics } from '../observe/metrics.ts';
import type { Spool } from '../spool/types.ts';
import type { Clock } from './clock.ts';
import type { DestinationDeferrals } from './deferral-record.ts';
import type { EgressProxyHealth } from './egress-proxy-health.ts';
import { probeSourceAddress } from './source-address.ts';
import type { WarmupLedger } from './warmup-ledger.ts';

export interface DeliveryContext {
  config: RuntimeConfig;
  readonly spool: Spool;
  readonly relayMetrics: RelayMetrics;
  readonly metrics: DeliveryMetrics;
  readonly logger: Logger;
  readonly clock: Clock;
  readonly virtualMtas: VirtualMtaRegistry;
  /** Warm-up caps and counts of VirtualMTAs with new source addresses. */
  readonly warmup: WarmupLedger;
  /** Queue-wide deferrals, durable per destination (deferral-record.ts). */
  readonly deferrals: DestinationDeferrals;
  readonly egressProxies: EgressProxyHealth;
}

/** The pool's VirtualMTAs by name, and why a VirtualMTA cannot send (its source address is not on this host). */
export class VirtualMtaRegistry {
  #byName = new Map<string, VirtualMtaConfig>();
  readonly #unusable = new Map<string, string>();
  readonly #logger: Logger;

  constructor(logger: Logger) {
    this.#logger = logger;
  }

  /** Take the config's VirtualMTAs, probing each source address. */
  async apply(config: RuntimeConfig): Promise<void> {
    // A VirtualMTA with egress proxies sends from the proxies' hosts: its address is not on this one.
    const problems = await Promise.all(config.pool.virtualMtas.map(async (vmta) => [vmta, vmta.sourceAddress && vmta.proxies.length === 0 ? await probeSourceAddress(vmta.sourceAddress) : undefined] as const));
    this.#byName = new Map(config.pool.virtualMtas.map((vmta) => [vmta.name, vmta]));
    this.#unusable.clear();
    for (const [vmta, problem] of problems) {
      if (!problem) continue;
      this.#unusable.set(vmta.name, problem);
      this.#logger.error({ virtualMta: vmta.name, sourceAddress: vmta.sourceAddress }, `VirtualMTA unusable: ${problem}`);
    }
  }

  get(name: string): VirtualMtaConfig | undefined {
    return this.#byName.get(name);
  }

  has(name: string): boolean {
    return this.#byName.has(name);
  }

  all(): IterableIterator<VirtualMtaConfig> {
    return this.#byName.values();
  }

  names(): IterableIterator<string> {
    return this.#byName.keys();
  }

  /** Why the VirtualMTA cannot send, or undefined when it can. */
  unusableReason(name: string): string | undefined {
    return this.#unusable.get(name);
  }
}
