// The suppression list's Prometheus metrics: entries in force, additions by reason and source,
// removals, recipients it stopped (refused at RCPT or bounced at once) and failed sends to peers.
// Every label value is from a bounded set (reasons, sources, actions).
import { Counter, Gauge, type Registry } from 'prom-client';

export class SuppressionMetrics {
  readonly entries: Gauge;
  readonly additions: Counter<'reason' | 'source'>;
  readonly removals: Counter<'source'>;
  readonly hits: Counter<'action'>;
  readonly peerFailures: Counter;

  constructor(registry: Registry, size: () => number) {
    this.entries = new Gauge({
      name: 'vmta_suppression_entries',
      help: 'Addresses on the pool\'s suppression list of this relay.',
      registers: [registry],
      collect() {
        this.set(size());
      },
    });
    this.additions = new Counter({ name: 'vmta_suppression_additions_total', help: 'Addresses added to the suppression list, by reason (bounce category or operator) and source (delivery, admin, peer).', labelNames: ['reason', 'source'] as const, registers: [registry] });
    this.removals = new Counter({ name: 'vmta_suppression_removals_total', help: 'Addresses removed from the suppression list, by source (admin, peer).', labelNames: ['source'] as const, registers: [registry] });
    this.hits = new Counter({ name: 'vmta_suppression_hits_total', help: 'Recipients stopped by the suppression list: refused at RCPT TO or bounced at once.', labelNames: ['action'] as const, registers: [registry] });
    this.peerFailures = new Counter({ name: 'vmta_suppression_peer_failures_total', help: 'Failed sends of suppression changes to a peer pod (each is retried).', registers: [registry] });
  }
}
