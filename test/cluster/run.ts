// `npm run test:cluster`: brings up the local cluster (harness/up.sh, harness/images.sh), installs
// the chart with helm as a user would, runs every test/cluster/*.cluster.ts (or the files given
// as arguments) with the variables of README.md, and stops everything it started. With
// VMTA_CLUSTER_MODE=external it skips the bring-up and uses KUBECONFIG and VMTA_CLUSTER_IMAGE.
// Writes .tmp/cluster/summary.json ({status: passed|failed|skipped, ...}); .ci/run reads it.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { installHelm } from '../../scripts/install-helm.ts';
import { installChart, uninstallChart } from './support/chart.ts';

const REPO_ROOT = resolve(fileURLToPath(new URL('../..', import.meta.url)));
const HERE = join(REPO_ROOT, 'test', 'cluster');
const OUT = join(REPO_ROOT, '.tmp', 'cluster');
const SUMMARY = join(OUT, 'summary.json');
const LOCAL_IMAGE = 'localhost/vmta:cluster';
const ASSET_BINARIES = ['kube-apiserver', 'kube-controller-manager', 'kube-scheduler', 'kube-proxy', 'kubelet', 'pause'];
const HOST_COMMANDS = ['etcd', 'containerd', 'ctr', 'runc', 'buildah', 'mmdebstrap', 'iptables', 'openssl', 'kubectl', 'xz', 'python3', 'curl'];

interface Summary {
  status: 'passed' | 'failed' | 'skipped';
  reason?: string;
  mode?: string;
  suites?: string[];
  tests?: number;
  pass?: number;
  fail?: number;
  setupSeconds?: number;
  suiteSeconds?: number;
}

function finish(summary: Summary): never {
  mkdirSync(OUT, { recursive: true });
  writeFileSync(SUMMARY, `${JSON.stringify(summary, null, 2)}\n`);
  const figures = summary.status === 'skipped' ? `skipped: ${summary.reason}` : `${summary.status}: ${summary.pass}/${summary.tests} tests passed, set-up ${summary.setupSeconds}s, suites ${summary.suiteSeconds}s${summary.reason ? ` (${summary.reason})` : ''}`;
  console.log(`\ncluster suite ${figures}\nsummary: ${SUMMARY}`);
  process.exit(summary.status === 'failed' ? 1 : 0);
}

/** Why the local harness cannot run here, or undefined when it can. */
function localBlocker(assets: string | undefined): string | undefined {
  if (!assets) return 'VMTA_K8S_ASSETS is not set (a folder with bin/*.xz Kubernetes binaries, e.g. ../shared/k8s)';
  const absent = ASSET_BINARIES.filter((name) => !existsSync(join(assets, 'bin', `${name}.xz`)));
  if (absent.length > 0) return `VMTA_K8S_ASSETS=${assets} has no ${absent.map((name) => `bin/${name}.xz`).join(', ')}`;
  if (process.getuid?.() !== 0) return 'the local harness needs root (containerd, kubelet, bridge, iptables)';
  const missing = HOST_COMMANDS.filter((command) => spawnSync('sh', ['-c', `command -v ${command}`]).status !== 0);
  if (missing.length > 0) return `commands missing: ${missing.join(', ')} (.ci/run installs their Debian packages)`;
  if (!existsSync('/usr/lib/cni/bridge')) return 'CNI plugins missing (/usr/lib/cni/bridge; Debian containernetworking-plugins)';
  return undefined;
}

function run(command: string, args: string[], env: NodeJS.ProcessEnv = process.env): Promise<number> {
  return new Promise((resolvePromise) => {
    const child = spawn(command, args, { stdio: 'inherit', env, cwd: REPO_ROOT });
    child.on('exit', (code, signal) => resolvePromise(code ?? (signal ? 128 : 1)));
  });
}

function suiteFiles(args: string[]): string[] {
  if (args.length > 0) return args.map((file) => resolve(file));
  return readdirSync(HERE).filter((name) => name.endsWith('.cluster.ts')).sort().map((name) => join(HERE, name));
}

function countTests(tap: string): { tests: number; pass: number; fail: number } {
  const figure = (name: string) => Number(new RegExp(`^# ${name} (\\d+)$`, 'm').exec(tap)?.[1] ?? 0);
  return { tests: figure('tests'), pass: figure('pass'), fail: figure('fail') };
}

async function main(): Promise<void> {
  const external = process.env.VMTA_CLUSTER_MODE === 'external';
  const suites = suiteFiles(process.argv.slice(2));
  if (suites.length === 0) finish({ status: 'failed', reason: `no test/cluster/*.cluster.ts files` });
  const started = Date.now();
  const env: NodeJS.ProcessEnv = { ...process.env, VMTA_CLUSTER_OPERATOR_NAMESPACE: process.env.VMTA_CLUSTER_OPERATOR_NAMESPACE ?? 'vmta-system' };
  let stopCluster = async () => {};
  if (external) {
    const missing = ['KUBECONFIG', 'VMTA_CLUSTER_IMAGE', 'VMTA_CLUSTER_HOST_IP', 'VMTA_CLUSTER_STORAGE_CLASS'].filter((name) => !process.env[name]);
    if (missing.length > 0) finish({ status: 'failed', mode: 'external', reason: `VMTA_CLUSTER_MODE=external needs ${missing.join(', ')}` });
  } else {
    const blocker = localBlocker(process.env.VMTA_K8S_ASSETS);
    if (blocker) finish({ status: 'skipped', mode: 'local', reason: blocker });
    const work = process.env.VMTA_CLUSTER_WORK ?? '/var/tmp/vmta-cluster';
    Object.assign(env, { VMTA_CLUSTER_WORK: work, KUBECONFIG: join(work, 'kubeconfig'), VMTA_CLUSTER_IMAGE: LOCAL_IMAGE, VMTA_CLUSTER_HOST_IP: '10.77.0.1', VMTA_CLUSTER_STORAGE_CLASS: 'vmta-local' });
    let stopped = false;
    stopCluster = async () => {
      if (stopped) return;
      stopped = true;
      if (process.env.VMTA_CLUSTER_KEEP === '1') return console.log(`VMTA_CLUSTER_KEEP=1: the cluster stays up; stop it with test/cluster/harness/down.sh (KUBECONFIG=${env.KUBECONFIG})`);
      await run(join(HERE, 'harness', 'down.sh'), [], env);
    };
    for (const signal of ['SIGINT', 'SIGTERM'] as const) process.on(signal, () => void stopCluster().then(() => process.exit(130)));
    // a cluster of an earlier run killed before it could stop
    await run(join(HERE, 'harness', 'down.sh'), [], env);
    if ((await run(join(HERE, 'harness', 'up.sh'), [], env)) !== 0 || (await run(join(HERE, 'harness', 'images.sh'), [LOCAL_IMAGE], env)) !== 0) {
      await stopCluster();
      finish({ status: 'failed', mode: 'local', reason: `cluster bring-up failed (logs in ${join(String(env.VMTA_CLUSTER_WORK), 'logs')})` });
    }
  }
  let summary: Summary;
  try {
    installHelm();
    await installChart(env);
    const setupSeconds = Math.round((Date.now() - started) / 1000);
    console.log(`\ncluster ready after ${setupSeconds}s; running ${suites.map((file) => file.slice(REPO_ROOT.length + 1)).join(', ')}`);
    mkdirSync(OUT, { recursive: true });
    const tapFile = join(OUT, 'results.tap');
    const suiteStarted = Date.now();
    const code = await run(process.execPath, ['--test', '--test-concurrency=1', '--test-timeout=1200000', '--test-reporter=spec', '--test-reporter-destination=stdout', '--test-reporter=tap', `--test-reporter-destination=${tapFile}`, ...suites], env);
    const counts = countTests(existsSync(tapFile) ? readFileSync(tapFile, 'utf8') : '');
    const suiteSeconds = Math.round((Date.now() - suiteStarted) / 1000);
    const passed = code === 0 && counts.fail === 0 && counts.tests > 0;
    if (!passed) await run('kubectl', ['-n', String(env.VMTA_CLUSTER_OPERATOR_NAMESPACE), 'logs', '-l', 'app.kubernetes.io/name=vmta-operator', '--tail=60', '--prefix'], env);
    summary = { status: passed ? 'passed' : 'failed', mode: external ? 'external' : 'local', suites: suites.map((file) => file.slice(REPO_ROOT.length + 1)), ...counts, setupSeconds, suiteSeconds };
  } catch (error) {
    summary = { status: 'failed', mode: external ? 'external' : 'local', reason: error instanceof Error ? error.message : String(error) };
  }
  if (external) await uninstallChart(env).catch((error) => console.error(`helm uninstall: ${error instanceof Error ? error.message : error}`));
  await stopCluster();
  finish(summary);
}

await main();
