// The operator's Prometheus metrics, named as controller-runtime names them so the dashboards
// and alerts written for Go operators work unchanged: workqueue_* (label `name`) and
// controller_runtime_* (label `controller`), plus leader election status and the listener
// self-check (vmta_listener_*, whose `listener_namespace` leaves `namespace` to the scrape
// target). One registry per operator instance so tests can run two instances in one process.
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';

const DURATION_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

export class OperatorMetrics {
  readonly registry = new Registry();

  readonly workqueueDepth = new Gauge({ name: 'workqueue_depth', help: 'Current depth of workqueue', labelNames: ['name'] as const, registers: [this.registry] });
  readonly workqueueAdds = new Counter({ name: 'workqueue_adds_total', help: 'Total number of adds handled by workqueue', labelNames: ['name'] as const, registers: [this.registry] });
  readonly workqueueRetries = new Counter({ name: 'workqueue_retries_total', help: 'Total number of retries handled by workqueue', labelNames: ['name'] as const, registers: [this.registry] });
  readonly workqueueQueueDuration = new Histogram({
    name: 'workqueue_queue_duration_seconds',
    help: 'How long in seconds an item stays in workqueue before being requested',
    labelNames: ['name'] as const,
    buckets: DURATION_BUCKETS,
    registers: [this.registry],
  });
  readonly workqueueWorkDuration = new Histogram({
    name: 'workqueue_work_duration_seconds',
    help: 'How long in seconds processing an item from workqueue takes',
    labelNames: ['name'] as const,
    buckets: DURATION_BUCKETS,
    registers: [this.registry],
  });

  readonly reconcileTotal = new Counter({ name: 'controller_runtime_reconcile_total', help: 'Total number of reconciliations per controller', labelNames: ['controller', 'result'] as const, registers: [this.registry] });
  readonly reconcileErrors = new Counter({ name: 'controller_runtime_reconcile_errors_total', help: 'Total number of reconciliation errors per controller', labelNames: ['controller'] as const, registers: [this.registry] });
  readonly reconcileTime = new Histogram({
    name: 'controller_runtime_reconcile_time_seconds',
    help: 'Length of time per reconciliation per controller',
    labelNames: ['controller'] as const,
    buckets: DURATION_BUCKETS,
    registers: [this.registry],
  });
  readonly activeWorkers = new Gauge({ name: 'controller_runtime_active_workers', help: 'Number of currently used workers per controller', labelNames: ['controller'] as const, registers: [this.registry] });
  readonly maxConcurrentReconciles = new Gauge({ name: 'controller_runtime_max_concurrent_reconciles', help: 'Maximum number of concurrent reconciles per controller', labelNames: ['controller'] as const, registers: [this.registry] });
  readonly leaderElectionStatus = new Gauge({ name: 'leader_election_master_status', help: 'Gauge of if the reporting system is master of the relevant lease, 0 indicates backup, 1 indicates master.', labelNames: ['name'] as const, registers: [this.registry] });

  readonly listenerCheckSuccess = new Gauge({
    name: 'vmta_listener_check_success',
    help: 'Whether a step of the listener self-check passed (1) or failed (0) in its latest run; steps that did not run have no series',
    labelNames: ['listener_namespace', 'listener', 'pool', 'step'] as const,
    registers: [this.registry],
  });
  /** Expiry instants by listener, turned into seconds left at each scrape. */
  readonly certificateExpiries = new Map<string, { labels: { listener_namespace: string; listener: string; pool: string }; expiresAtMs: number }>();
  readonly listenerCertificateExpiry = new Gauge({
    name: 'vmta_listener_certificate_expiry_seconds',
    help: 'Seconds until the certificate a listener presents expires (negative once expired), as of the latest self-check',
    labelNames: ['listener_namespace', 'listener', 'pool'] as const,
    registers: [this.registry],
    collect: () => {
      this.listenerCertificateExpiry.reset();
      for (const { labels, expiresAtMs } of this.certificateExpiries.values()) this.listenerCertificateExpiry.set(labels, Math.round((expiresAtMs - Date.now()) / 1000));
    },
  });

  constructor(options: { processMetrics?: boolean } = {}) {
    if (options.processMetrics) collectDefaultMetrics({ register: this.registry });
  }
}
