// `BENCH_KUBECONFIG=PATH npm run bench:operator-cluster`: the same scale run as bench/operator.ts, against
// a real API server (the cluster harness's, `VMTA_CLUSTER_KEEP=1 npm run test:cluster`, or any
// cluster). The operator runs as a local process with that kubeconfig, scoped to a fresh
// namespace. Pools have replicas 0 (no node runs 2,000 relay pods), so the figure is the time
// until every pool's, listener's and policy's status is written at its generation and no pool
// is Progressing any more (all 6 objects of each pool applied and the StatefulSet controller's
// status caught up). Writes in the quiet period are the operator's field-manager entries
// (managedFields time) and the operator's Events written after it began (reportingComponent
// vmta-operator), so writes by other controllers (the disruption controller's NoPods) do not count.
// No other vmta operator may run in the cluster meanwhile (the bench checks).
// At the end it deletes the namespace with the operator running and prints how long that took.
// Env: BENCH_POOLS (1000), BENCH_QUIET_SECONDS (60), BENCH_TIMEOUT_SECONDS (1200), BENCH_DELETE_SECONDS (300).
import { execFile, spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { stringify } from 'yaml';

const kubeconfig = process.env.BENCH_KUBECONFIG ?? '';
if (!kubeconfig) {
  console.error('bench/operator-cluster.ts needs BENCH_KUBECONFIG: the admin kubeconfig of the cluster to run against (the harness writes /var/tmp/vmta-cluster/kubeconfig)');
  process.exit(2);
}
const POOLS = Number(process.env.BENCH_POOLS ?? 1000);
const VMTAS_PER_POOL = 5;
const QUIET_SECONDS = Number(process.env.BENCH_QUIET_SECONDS ?? 60);
const TIMEOUT_SECONDS = Number(process.env.BENCH_TIMEOUT_SECONDS ?? 1200);
const DELETE_SECONDS = Number(process.env.BENCH_DELETE_SECONDS ?? 300);
const NAMESPACE = `vmta-bench-${process.pid}`;
const FIELD_MANAGER = 'vmta-operator';
const exec = promisify(execFile);

async function kubectl(args: string[], input?: string): Promise<string> {
  const child = exec('kubectl', ['--kubeconfig', kubeconfig, ...args], { maxBuffer: 512 * 1024 * 1024 });
  if (input !== undefined) child.child.stdin!.end(input);
  return (await child).stdout;
}

type Json = Record<string, any>;
const list = async (kinds: string): Promise<Json[]> => (JSON.parse(await kubectl(['-n', NAMESPACE, 'get', kinds, '--show-managed-fields', '-o', 'json'])) as { items: Json[] }).items;

const RESOURCES = POOLS * 3 + 2; // pools, their two listeners, the two policies
const poolName = (i: number) => `p${String(i).padStart(4, '0')}`;
const objects: Json[] = [
  { apiVersion: 'v1', kind: 'Secret', metadata: { name: 'relay-tls' }, type: 'kubernetes.io/tls', stringData: { 'tls.crt': 'x', 'tls.key': 'x' } },
  { apiVersion: 'v1', kind: 'Secret', metadata: { name: 'relay-users' }, stringData: { alice: 'a' } },
  { apiVersion: 'vmta.dev/v1alpha1', kind: 'RelayPolicy', metadata: { name: 'bounces' }, spec: { relayDomains: ['bounces.example.com'] } },
  { apiVersion: 'vmta.dev/v1alpha1', kind: 'RelayPolicy', metadata: { name: 'submission' }, spec: { users: { secretName: 'relay-users', senders: [{ user: 'alice', allowedSenderDomains: ['example.com'] }] } } },
];
for (let i = 0; i < POOLS; i++) {
  const name = poolName(i);
  objects.push({
    apiVersion: 'vmta.dev/v1alpha1',
    kind: 'VirtualMtaPool',
    metadata: { name },
    spec: {
      hostname: `${name}.example.com`,
      replicas: 0,
      virtualMtas: Array.from({ length: VMTAS_PER_POOL }, (_, v) => ({ name: `mta${v + 1}`, hostname: `mta${v + 1}.${name}.example.com`, domains: [{ domain: '*', tlsPolicy: v % 2 === 0 ? 'required' : 'opportunistic' }] })),
    },
  });
  for (const [role, policy] of [['relay', 'bounces'], ['submission', 'submission']] as const) {
    objects.push({ apiVersion: 'vmta.dev/v1alpha1', kind: 'SmtpListener', metadata: { name: `${name}-${role}` }, spec: { role, tls: { secretName: 'relay-tls' }, relayPolicyRef: { name: policy }, poolRef: { name } } });
  }
}

// An operator already in the cluster (the chart's, cluster mode) would reconcile the bench's pools too.
const operatorPods = (JSON.parse(await kubectl(['get', 'pods', '-A', '-l', 'app.kubernetes.io/name=vmta-operator', '-o', 'json'])) as { items: Json[] }).items;
if (operatorPods.length > 0) {
  console.error(`bench/operator-cluster.ts: an operator runs in the cluster (${operatorPods.map((pod) => `${pod.metadata.namespace}/${pod.metadata.name}`).join(', ')}); scale it to 0 first (kubectl -n NS scale deployment NAME --replicas=0)`);
  process.exit(2);
}
await kubectl(['create', 'namespace', NAMESPACE]);
console.log(`applying ${objects.length} objects (${POOLS} pools x ${VMTAS_PER_POOL} VirtualMTAs x 2 listeners) to namespace ${NAMESPACE}`);
for (let from = 0; from < objects.length; from += 500) {
  await kubectl(['-n', NAMESPACE, 'apply', '--server-side', '-f', '-'], objects.slice(from, from + 500).map((object) => stringify(object)).join('---\n'));
}
const started = Date.now();
const operator = spawn(process.execPath, ['--max-semi-space-size=2', path.join(import.meta.dirname, '..', 'cli', 'vmta.ts'), 'operator', '--kubeconfig', kubeconfig, '--namespace', NAMESPACE, '--image', 'registry.example/vmta:bench', '--metrics-bind-address', '0'], {
  stdio: ['ignore', 'ignore', 'inherit'],
  env: { ...process.env, LOG_LEVEL: 'warn', POD_NAMESPACE: NAMESPACE },
});
const peakRssMb = async () => Math.round(Number((await readFile(`/proc/${operator.pid}/status`, 'utf8')).match(/VmHWM:\s+(\d+) kB/)?.[1] ?? 0) / 1024);

try {
  let written = 0;
  /** Seconds until every resource of a kind had its status at its generation. */
  const kindDone = new Map<string, number>();
  for (;;) {
    if (operator.exitCode !== null) throw new Error(`operator exited with ${operator.exitCode}`);
    if (Date.now() - started > TIMEOUT_SECONDS * 1000) throw new Error(`only ${written}/${RESOURCES} statuses written within ${TIMEOUT_SECONDS} s`);
    // every pool, listener and policy with its status at its generation
    const resources = await list('virtualmtapools,smtplisteners,relaypolicies');
    // settled: a pool also no longer Progressing (its StatefulSet's status has caught up)
    const settled = (resource: Json) => resource.status?.observedGeneration === resource.metadata.generation && !(resource.status?.conditions ?? []).some((entry: Json) => entry.type === 'Progressing' && entry.status === 'True');
    const current = resources.filter(settled);
    written = current.length;
    for (const kind of ['VirtualMtaPool', 'SmtpListener', 'RelayPolicy']) {
      if (!kindDone.has(kind) && current.filter((resource) => resource.kind === kind).length === resources.filter((resource) => resource.kind === kind).length) kindDone.set(kind, (Date.now() - started) / 1000);
    }
    if (written === RESOURCES) break;
    await new Promise((resolve) => setTimeout(resolve, 2000));
  }
  const statusSeconds = (Date.now() - started) / 1000;
  const owned = (await list('configmaps,statefulsets,services,poddisruptionbudgets')).filter((object) => object.metadata.managedFields?.some((entry: Json) => entry.manager === FIELD_MANAGER));
  console.log(`every status written after ${statusSeconds.toFixed(1)} s (${[...kindDone].map(([kind, seconds]) => `${kind} ${seconds.toFixed(1)} s`).join(', ')}); ${owned.length} objects applied (expected ${POOLS * 6})`);
  if (owned.length < POOLS * 6) {
    const sample = (await list('virtualmtapools'))[0];
    throw new Error(`the operator applied ${owned.length} of ${POOLS * 6} objects; ${sample?.metadata.name}: ${JSON.stringify(sample?.status?.conditions)}`);
  }
  const quietFrom = new Date(Date.now() + 1000);
  console.log(`quiet period: ${QUIET_SECONDS} s`);
  await new Promise((resolve) => setTimeout(resolve, QUIET_SECONDS * 1000 + 1000));
  const changedSince = (object: Json) => (object.metadata.managedFields ?? []).some((entry: Json) => entry.manager === FIELD_MANAGER && new Date(entry.time) >= quietFrom);
  const changed = (await list('configmaps,statefulsets,services,poddisruptionbudgets,virtualmtapools,smtplisteners,relaypolicies')).filter(changedSince);
  const events = (await list('events')).filter((event) => (event.reportingComponent || event.source?.component) === FIELD_MANAGER && new Date(event.lastTimestamp ?? event.eventTime ?? 0) >= quietFrom);
  const writes = changed.length + events.length;
  const byKind = new Map<string, number>();
  for (const name of [...changed.map((object) => object.kind), ...events.map((event) => `Event ${event.reason}`)]) byKind.set(name, (byKind.get(name) ?? 0) + 1);
  if (writes > 0) console.log(`writes in the quiet period: ${[...byKind].map(([name, count]) => `${name} ${count}`).join(', ')}`);
  console.log(`pools=${POOLS} objects=${owned.length} status_written_s=${statusSeconds.toFixed(1)} quiet_writes=${writes} rss_peak_mb=${await peakRssMb()}`);
} finally {
  // Persistent pools carry the drain finalizer: the operator lets them go when the namespace is
  // deleted. What it has not let go within BENCH_DELETE_SECONDS loses the finalizer here, so no
  // namespace is left Terminating.
  const deleteStarted = Date.now();
  if (operator.exitCode === null) {
    await kubectl(['delete', 'namespace', NAMESPACE, `--timeout=${DELETE_SECONDS}s`])
      .then(() => console.log(`namespace deleted with the operator running in ${((Date.now() - deleteStarted) / 1000).toFixed(1)} s`))
      .catch(() => console.log(`the namespace was not gone after ${DELETE_SECONDS} s with the operator running`));
  }
  operator.kill('SIGKILL');
  const left = await list('virtualmtapools').catch(() => []);
  for (const pool of left) await kubectl(['-n', NAMESPACE, 'patch', 'virtualmtapool', pool.metadata.name, '--type=merge', '-p', '{"metadata":{"finalizers":null}}']).catch(() => undefined);
  if (left.length > 0) console.log(`cleared the finalizer of the ${left.length} pools left`);
  await kubectl(['delete', 'namespace', NAMESPACE, '--wait=false']).catch(() => undefined);
}
