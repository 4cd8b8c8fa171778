// `npm run bench:operator`: the operator (`vmta operator`, its own process) against the loopback
// fake API server with 200 pools of 5 VirtualMTAs and 2 listeners each. Prints the time until
// every pool's objects are applied and its status says Ready at the current generation, API
// requests per reconcile, write requests during a quiet period (must be 0) and the operator's
// peak RSS. Each simulated relay pod answers `GET /config` on its own 127.77.x.y:8025 with the
// hash of the relay.yaml in its pool's ConfigMap, as a relay that loaded it would.
// BENCH_KUBECONFIG=PATH runs bench/operator-cluster.ts against a real API server instead.
// Env: BENCH_POOLS (200), BENCH_QUIET_SECONDS (60), BENCH_TIMEOUT_SECONDS (600), and
// BENCH_OPERATOR_NODE_FLAGS (default --max-semi-space-size=2, the young-generation size the
// operator's Deployment should run with: it keeps peak RSS ~100 MB lower at no cost in speed).
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { readFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { FakeKubeApi } from '../test/fixtures/fake-kube-api.ts';

const POOLS = Number(process.env.BENCH_POOLS ?? 200);
const VMTAS_PER_POOL = 5;
const REPLICAS = 2;
const QUIET_SECONDS = Number(process.env.BENCH_QUIET_SECONDS ?? 60);
const TIMEOUT_SECONDS = Number(process.env.BENCH_TIMEOUT_SECONDS ?? 600);
const NAMESPACE = 'bench';
const ADMIN_PORT = 8025;
const OBJECTS_PER_POOL = 6; // ConfigMap, StatefulSet, headless Service, 2 listener Services, PDB

if (process.env.BENCH_KUBECONFIG) {
  // the same scale run against a real API server
  await import('./operator-cluster.ts');
  process.exit(0);
}
if (process.env.KUBECONFIG) {
  console.log('note: KUBECONFIG is set, but this benchmark runs against the loopback fake API server unless BENCH_KUBECONFIG names a cluster');
}

const poolName = (i: number) => `p${String(i).padStart(3, '0')}`;
const podAddress = (pool: number, replica: number) => `127.77.${pool}.${replica + 1}`;

const api = await FakeKubeApi.start({
  bookmarkIntervalMs: 5000,
  podIP: (_namespace, podName) => {
    const match = podName.match(/^p(\d+)-(\d+)$/);
    return match ? podAddress(Number(match[1]), Number(match[2])) : '127.0.0.1';
  },
});
const kubeconfig = await api.writeKubeconfig();

// One admin endpoint per simulated relay pod.
const adminServers: Server[] = [];
for (let i = 0; i < POOLS; i++) {
  for (let r = 0; r < REPLICAS; r++) {
    const name = poolName(i);
    const server = createServer((_req, res) => {
      const text = (api.get('v1', 'ConfigMap', NAMESPACE, `${name}-config`)?.data as Record<string, string> | undefined)?.['relay.yaml'];
      if (text === undefined) res.writeHead(503).end();
      else res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ hash: createHash('sha256').update(text).digest('hex') }));
    });
    server.listen(ADMIN_PORT, podAddress(i, r));
    await once(server, 'listening');
    adminServers.push(server);
  }
}

// The resources: shared policies and Secrets, then per pool a VirtualMtaPool and two listeners.
api.put({ apiVersion: 'v1', kind: 'Secret', metadata: { name: 'relay-tls', namespace: NAMESPACE }, type: 'kubernetes.io/tls', stringData: { 'tls.crt': 'x', 'tls.key': 'x' } });
api.put({ apiVersion: 'v1', kind: 'Secret', metadata: { name: 'relay-users', namespace: NAMESPACE }, stringData: { alice: 'a', bob: 'b' } });
api.put({ apiVersion: 'vmta.dev/v1alpha1', kind: 'RelayPolicy', metadata: { name: 'bounces', namespace: NAMESPACE }, spec: { relayDomains: ['bounces.example.com'] } });
api.put({
  apiVersion: 'vmta.dev/v1alpha1',
  kind: 'RelayPolicy',
  metadata: { name: 'submission', namespace: NAMESPACE },
  spec: { users: { secretName: 'relay-users', senders: [{ user: 'alice', allowedSenderDomains: ['example.com'] }, { user: 'bob', allowedSenderDomains: ['example.org'] }] } },
});
for (let i = 0; i < POOLS; i++) {
  const name = poolName(i);
  api.put({
    apiVersion: 'vmta.dev/v1alpha1',
    kind: 'VirtualMtaPool',
    metadata: { name, namespace: NAMESPACE },
    spec: {
      hostname: `${name}.example.com`,
      replicas: REPLICAS,
      virtualMtas: Array.from({ length: VMTAS_PER_POOL }, (_, v) => ({
        name: `mta${v + 1}`,
        sourceAddress: `192.0.2.${v + 10}`,
        hostname: `mta${v + 1}.${name}.example.com`,
        domains: [{ domain: '*', tlsPolicy: v % 2 === 0 ? 'required' : 'opportunistic', retryAfter: v % 2 === 0 ? '10m' : '45m' }],
      })),
      domainDefaults: [{ domain: '*', bounceAfter: '4d', maxSmtpOut: 20 }],
    },
  });
  for (const [role, policy] of [['relay', 'bounces'], ['submission', 'submission']] as const) {
    api.put({
      apiVersion: 'vmta.dev/v1alpha1',
      kind: 'SmtpListener',
      metadata: { name: `${name}-${role}`, namespace: NAMESPACE },
      spec: { role, tls: { secretName: 'relay-tls' }, relayPolicyRef: { name: policy }, poolRef: { name } },
    });
  }
}

const nodeFlags = (process.env.BENCH_OPERATOR_NODE_FLAGS ?? '--max-semi-space-size=2').split(' ').filter(Boolean);
console.log(`operator node flags: ${nodeFlags.join(' ') || '(none)'}`);
const setupRequests = api.requests.length;
const resync = `${Math.max(5, Math.floor(QUIET_SECONDS / 3))}s`;
const started = Date.now();
const operator = spawn(
  process.execPath,
  [...nodeFlags, path.join(import.meta.dirname, '..', 'cli', 'vmta.ts'), 'operator', '--kubeconfig', kubeconfig, '--namespace', NAMESPACE, '--image', 'registry.example/vmta:bench', '--metrics-bind-address', '127.0.0.1:0', '--resync-period', resync],
  { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, LOG_LEVEL: 'info' } },
);
let metricsPort: number | undefined;
createInterface(operator.stdout!).on('line', (line) => {
  try {
    const entry = JSON.parse(line) as { msg?: string; metricsPort?: number; level?: number };
    if (entry.msg === 'operator started') metricsPort = entry.metricsPort;
    else if ((entry.level ?? 0) >= 40) console.error(line);
  } catch {
    console.error(line);
  }
});

async function peakRssMb(): Promise<number> {
  const status = await readFile(`/proc/${operator.pid}/status`, 'utf8');
  const kb = Number(status.match(/VmHWM:\s+(\d+) kB/)?.[1] ?? 0);
  return Math.round(kb / 1024);
}

async function reconcileCount(): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
  return text
    .split('\n')
    .filter((line) => line.startsWith('controller_runtime_reconcile_total{'))
    .reduce((sum, line) => sum + Number(line.split(' ').pop()), 0);
}

function converged(): boolean {
  const pools = api.list('vmta.dev/v1alpha1', 'VirtualMtaPool', NAMESPACE);
  return pools.length === POOLS && pools.every((p) => {
    const status = p.status as { observedGeneration?: number; conditions?: { type: string; status: string }[] } | undefined;
    return status?.observedGeneration === p.metadata.generation && status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True');
  });
}

const operatorRequests = (from: number) => api.requests.slice(from).filter((r) => r.verb !== 'watch' && r.resource !== 'leases');

try {
  while (!converged()) {
    if (Date.now() - started > TIMEOUT_SECONDS * 1000) throw new Error(`not converged within ${TIMEOUT_SECONDS} s`);
    if (operator.exitCode !== null) throw new Error(`operator exited with ${operator.exitCode}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  const reconcileAllSeconds = (Date.now() - started) / 1000;
  const owned = ['ConfigMap', 'Service', 'PodDisruptionBudget'].reduce((n, kind) => n + api.list(kind === 'PodDisruptionBudget' ? 'policy/v1' : 'v1', kind, NAMESPACE).length, 0) + api.list('apps/v1', 'StatefulSet', NAMESPACE).length;
  if (owned !== POOLS * OBJECTS_PER_POOL) throw new Error(`expected ${POOLS * OBJECTS_PER_POOL} objects, found ${owned}`);
  while (metricsPort === undefined) await new Promise((r) => setTimeout(r, 50));
  const reconciles = await reconcileCount();
  const convergeRequests = operatorRequests(setupRequests).length;
  const requestsPerReconcile = convergeRequests / reconciles;
  console.log(`converged: ${POOLS} pools, ${owned} objects in ${reconcileAllSeconds.toFixed(2)} s; ${convergeRequests} requests over ${reconciles} reconciles`);

  console.log(`quiet period: ${QUIET_SECONDS} s (resync every ${resync})`);
  const quietFrom = api.requests.length;
  const reconcilesBefore = reconciles;
  await new Promise((r) => setTimeout(r, QUIET_SECONDS * 1000));
  const steadyWrites = api.writes(quietFrom).filter((w) => w.resource !== 'leases').length;
  const quietReconciles = (await reconcileCount()) - reconcilesBefore;
  console.log(`quiet period: ${quietReconciles} reconciles, ${operatorRequests(quietFrom).length} requests, ${steadyWrites} writes`);
  const rss = await peakRssMb();
  console.log(`objects=${owned} reconcile_all_s=${reconcileAllSeconds.toFixed(2)} requests_per_reconcile=${requestsPerReconcile.toFixed(2)} steady_writes=${steadyWrites} rss_peak_mb=${rss}`);
} finally {
  operator.kill('SIGKILL');
  for (const server of adminServers) server.close();
  await api.close();
}
