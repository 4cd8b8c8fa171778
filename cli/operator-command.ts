// `vmta operator`: runs the Kubernetes operator in the foreground until SIGTERM, SIGINT or SIGHUP, then
// releases its leader Lease and exits 0. Cluster access comes from --kubeconfig, KUBECONFIG,
// ~/.kube/config or the pod's service account (in-cluster), in that order.
import { hostname } from 'node:os';
import { parseArgs } from 'node:util';
import { parseDuration } from '../mta/config/duration.ts';
import { createLogger } from '../mta/observe/log.ts';
import { KubeClient, loadKubeConfig } from '../operator/kube/client.ts';
import { httpConfigHashReader } from '../operator/controller/config-hash-reader.ts';
import { VmtaOperator } from '../operator/controller/operator.ts';
import { OperatorMetrics } from '../operator/observe/metrics.ts';
import { STOP_SIGNALS } from './exit-codes.ts';

const USAGE = `usage: vmta operator [options]

Reconciles SmtpListener, RelayPolicy and VirtualMtaPool resources (vmta.dev/v1alpha1) into
ConfigMaps, StatefulSets or Deployments, Services and PodDisruptionBudgets.

options:
  --kubeconfig PATH                  kubeconfig file (default: KUBECONFIG, ~/.kube/config, or in-cluster)
  --namespace NS[,NS...]             watch only these namespaces (default: all namespaces)
  --image IMAGE                      relay image for pools without spec.image (default: $VMTA_IMAGE)
  --leader-elect                     elect a leader on a Lease so only one replica reconciles
  --leader-elect-namespace NS        namespace of the Lease (default: $POD_NAMESPACE, the operator's own,
                                     else the one --namespace, else "default")
  --leader-elect-id NAME             name of the Lease (default vmta-operator-leader)
  --leader-elect-lease-duration D    how long a Lease lasts without renewal (default 15s)
  --leader-elect-renew-deadline D    a leader that cannot renew for this long stops leading (default 10s)
  --leader-elect-retry-period D      how often candidates try and leaders renew (default 2s)
  --metrics-bind-address ADDR        host:port of /metrics, /healthz and /readyz (default :8080; "0" disables)
  --max-concurrent-reconciles N      reconciles run at once (default 4)
  --resync-period D                  replay every cached object this often (default 10m)
  -h, --help                         show this help`;

class UsageError extends Error {}

interface OperatorCommandOptions {
  kubeconfig: string | undefined;
  /** Watched namespaces; undefined watches all. */
  namespaces: string[] | undefined;
  image: string;
  leaderElect: boolean;
  leaseNamespace: string;
  leaseName: string;
  leaseDurationMs: number;
  renewDeadlineMs: number;
  retryPeriodMs: number;
  metrics: { host: string; port: number } | undefined;
  concurrency: number;
  resyncPeriodMs: number;
}

function duration(name: string, value: string | undefined, fallback: string): number {
  try {
    return parseDuration(value ?? fallback);
  } catch (error) {
    throw new UsageError(`--${name}: ${(error as Error).message}`);
  }
}

const NAMESPACE_NAME = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

/** "a,b" -> ["a", "b"]: each a namespace name (RFC 1123 label), none twice. */
function namespaceList(value: string | undefined): string[] | undefined {
  if (value === undefined) return undefined;
  const names = value.split(',').map((name) => name.trim());
  for (const name of names) {
    if (!NAMESPACE_NAME.test(name)) throw new UsageError(`--namespace: "${name}" is not a namespace name (lowercase letters, digits and '-', at most 63) in "${value}"`);
  }
  const twice = names.find((name, index) => names.indexOf(name) !== index);
  if (twice) throw new UsageError(`--namespace: "${twice}" is listed twice in "${value}"`);
  return names;
}

function bindAddress(value: string): { host: string; port: number } | undefined {
  if (value === '0') return undefined;
  const match = value.match(/^(.*):(\d{1,5})$/);
  if (!match || Number(match[2]) > 65535) throw new UsageError(`--metrics-bind-address: expected host:port, :port or 0 (got "${value}")`);
  return { host: match[1] === '' ? '0.0.0.0' : match[1]!.replace(/^\[|\]$/g, ''), port: Number(match[2]) };
}

export function parseOperatorOptions(argv: string[], env: NodeJS.ProcessEnv = process.env): OperatorCommandOptions | undefined {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    options: {
      kubeconfig: { type: 'string' },
      namespace: { type: 'string' },
      image: { type: 'string' },
      'leader-elect': { type: 'boolean' },
      'leader-elect-namespace': { type: 'string' },
      'leader-elect-id': { type: 'string' },
      'leader-elect-lease-duration': { type: 'string' },
      'leader-elect-renew-deadline': { type: 'string' },
      'leader-elect-retry-period': { type: 'string' },
      'metrics-bind-address': { type: 'string' },
      'max-concurrent-reconciles': { type: 'string' },
      'resync-period': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) return undefined;
  const image = values.image ?? env.VMTA_IMAGE;
  if (!image) throw new UsageError('--image: required (or set VMTA_IMAGE): the relay image pools run when they do not set spec.image');
  const concurrency = Number(values['max-concurrent-reconciles'] ?? '4');
  if (!Number.isInteger(concurrency) || concurrency < 1) throw new UsageError(`--max-concurrent-reconciles: expected a positive integer (got "${values['max-concurrent-reconciles']}")`);
  const namespaces = namespaceList(values.namespace);
  const options: OperatorCommandOptions = {
    kubeconfig: values.kubeconfig,
    namespaces,
    image,
    leaderElect: values['leader-elect'] ?? false,
    // The Lease lives with the operator (its Role is in the release namespace), not in a watched one.
    leaseNamespace: values['leader-elect-namespace'] ?? env.POD_NAMESPACE ?? (namespaces?.length === 1 ? namespaces[0]! : 'default'),
    leaseName: values['leader-elect-id'] ?? 'vmta-operator-leader',
    leaseDurationMs: duration('leader-elect-lease-duration', values['leader-elect-lease-duration'], '15s'),
    renewDeadlineMs: duration('leader-elect-renew-deadline', values['leader-elect-renew-deadline'], '10s'),
    retryPeriodMs: duration('leader-elect-retry-period', values['leader-elect-retry-period'], '2s'),
    metrics: bindAddress(values['metrics-bind-address'] ?? ':8080'),
    concurrency,
    resyncPeriodMs: duration('resync-period', values['resync-period'], '10m'),
  };
  if (options.renewDeadlineMs >= options.leaseDurationMs) throw new UsageError('--leader-elect-renew-deadline: must be shorter than --leader-elect-lease-duration');
  return options;
}

export async function runOperatorCommand(argv: string[]): Promise<void> {
  let options: OperatorCommandOptions | undefined;
  try {
    options = parseOperatorOptions(argv);
  } catch (error) {
    console.error(`vmta operator: ${(error as Error).message}\n\n${USAGE}`);
    process.exitCode = 2;
    return;
  }
  if (!options) {
    console.log(USAGE);
    return;
  }
  const logger = createLogger('operator');
  const identity = `${hostname()}_${process.pid}`;
  let kubeConfig;
  try {
    kubeConfig = loadKubeConfig(options.kubeconfig);
  } catch (error) {
    console.error(`vmta operator: ${(error as Error).message}`);
    process.exitCode = 2;
    return;
  }
  const operator = new VmtaOperator({
    client: new KubeClient(kubeConfig, { userAgent: `vmta-operator/${identity}` }),
    logger,
    image: options.image,
    namespaces: options.namespaces,
    configHashReader: httpConfigHashReader(),
    leaderElection: options.leaderElect
      ? { namespace: options.leaseNamespace, name: options.leaseName, identity, leaseDurationMs: options.leaseDurationMs, renewDeadlineMs: options.renewDeadlineMs, retryPeriodMs: options.retryPeriodMs }
      : undefined,
    healthPort: options.metrics?.port,
    healthHost: options.metrics?.host,
    concurrency: options.concurrency,
    resyncPeriodMs: options.resyncPeriodMs,
    metrics: new OperatorMetrics({ processMetrics: true }),
  });
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'stopping');
    operator.stop().then(
      () => process.exit(0),
      (error: unknown) => {
        logger.error({ err: error }, 'stop failed');
        process.exit(1);
      },
    );
  };
  for (const signal of STOP_SIGNALS) process.on(signal, () => stop(signal));
  await operator.start();
  logger.info({ identity, namespaces: options.namespaces ?? '(all)', metricsPort: operator.healthPort, leaderElect: options.leaderElect }, 'operator started');
}
