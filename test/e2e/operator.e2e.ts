// End to end against the cluster KUBECONFIG names (kind, k3d, a real one): applies crds/, starts
// `vmta operator` scoped to a fresh namespace, applies examples/, waits for the objects and the
// status, changes a hot and a cold field, checks that the API server's CEL rules refuse bad
// resources, deletes the pool and checks that its objects go. Needs `kubectl` on PATH.
// VMTA_E2E_IMAGE: a relay image the cluster can pull; with it the test also waits for Ready
// (which needs the operator to reach the pods' admin port, e.g. when it runs in the cluster
// network). Without it pods cannot start and the test stops at the objects and conditions.
import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { test } from 'node:test';
import { promisify } from 'node:util';

const run = promisify(execFile);
const ROOT = path.join(import.meta.dirname, '..', '..');
const NAMESPACE = `vmta-e2e-${process.pid}`;
const IMAGE = process.env.VMTA_E2E_IMAGE;

async function kubectl(...args: string[]): Promise<string> {
  const { stdout } = await run('kubectl', args, { cwd: ROOT, maxBuffer: 16 * 1024 * 1024 });
  return stdout;
}

async function kubectlFails(args: string[], input: string): Promise<string> {
  const child = spawn('kubectl', args, { cwd: ROOT, stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  child.stdin.end(input);
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  assert.notEqual(code, 0, `kubectl ${args.join(' ')} should have been refused`);
  return stderr;
}

async function getJson(kind: string, name: string): Promise<Record<string, unknown> | undefined> {
  try {
    return JSON.parse(await kubectl('get', '-n', NAMESPACE, kind, name, '-o', 'json')) as Record<string, unknown>;
  } catch {
    return undefined;
  }
}

async function eventually<T>(what: string, probe: () => Promise<T | undefined | false>, timeoutMs = 180_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 1000));
  }
}

function condition(object: Record<string, unknown> | undefined, type: string): { status: string; reason: string } | undefined {
  return ((object?.status as { conditions?: { type: string; status: string; reason: string }[] } | undefined)?.conditions ?? []).find((c) => c.type === type);
}

function templateHash(statefulSet: Record<string, unknown> | undefined): string | undefined {
  return (statefulSet?.spec as { template?: { metadata?: { annotations?: Record<string, string> } } } | undefined)?.template?.metadata?.annotations?.['vmta.dev/pod-template-hash'];
}

test('operator end to end on the cluster of KUBECONFIG', { timeout: 900_000 }, async (t) => {
  if (!process.env.KUBECONFIG) {
    t.skip('KUBECONFIG not set: the end-to-end suite needs a cluster (e.g. `kind create cluster` then KUBECONFIG=~/.kube/config npm run test:e2e)');
    return;
  }
  let operator: ChildProcess | undefined;
  try {
    await kubectl('apply', '-f', 'crds/');
    for (const crd of ['smtplisteners', 'relaypolicies', 'virtualmtapools']) await kubectl('wait', '--for=condition=Established', `crd/${crd}.vmta.dev`, '--timeout=60s');
    await kubectl('create', 'namespace', NAMESPACE);

    operator = spawn(process.execPath, [path.join(ROOT, 'cli', 'vmta.ts'), 'operator', '--namespace', NAMESPACE, '--image', IMAGE ?? 'registry.invalid/vmta:e2e', '--metrics-bind-address', '127.0.0.1:0'], {
      stdio: ['ignore', 'ignore', 'inherit'],
      env: { ...process.env, LOG_LEVEL: 'warn' },
    });

    await kubectl('apply', '-n', NAMESPACE, '-f', 'examples/');
    await t.test('the example pool gets its objects and a status', async () => {
      for (const [kind, name] of [['configmap', 'outbound-config'], ['statefulset', 'outbound'], ['service', 'outbound-headless'], ['service', 'outbound-mx'], ['service', 'outbound-submission'], ['pdb', 'outbound']] as const) {
        await eventually(`${kind}/${name}`, () => getJson(kind, name));
      }
      const pool = await eventually('pool status', async () => {
        const p = await getJson('virtualmtapool', 'outbound');
        return condition(p, 'Ready') ? p : undefined;
      });
      assert.equal((pool.status as { observedGeneration: number }).observedGeneration, (pool.metadata as { generation: number }).generation);
      const listener = await eventually('listener Ready', async () => (condition(await getJson('smtplistener', 'submission'), 'Ready')?.status === 'True' ? true : undefined));
      assert.ok(listener);
      if (IMAGE) await eventually('pool Ready', async () => condition(await getJson('virtualmtapool', 'outbound'), 'Ready')?.status === 'True');
      else t.diagnostic('VMTA_E2E_IMAGE not set: not waiting for pods to become Ready');
    });

    await t.test('a hot change updates the ConfigMap and leaves the pod template alone', async () => {
      const before = await getJson('configmap', 'outbound-config');
      const hashBefore = templateHash(await getJson('statefulset', 'outbound'));
      await kubectl('patch', '-n', NAMESPACE, 'relaypolicy', 'bounces', '--type=merge', '-p', JSON.stringify({ spec: { relayDomains: ['bounces.example.com', 'returns.example.com'] } }));
      await eventually('new relay.yaml', async () => JSON.stringify((await getJson('configmap', 'outbound-config'))?.data) !== JSON.stringify(before?.data));
      assert.equal(templateHash(await getJson('statefulset', 'outbound')), hashBefore);
    });

    await t.test('a cold change changes the pod template hash', async () => {
      const hashBefore = templateHash(await getJson('statefulset', 'outbound'));
      await kubectl('patch', '-n', NAMESPACE, 'virtualmtapool', 'outbound', '--type=merge', '-p', JSON.stringify({ spec: { pod: { resources: { limits: { memory: '640Mi' } } } } }));
      await eventually('new pod template hash', async () => templateHash(await getJson('statefulset', 'outbound')) !== hashBefore);
    });

    await t.test('the API server refuses open-relay and insecure shapes with the field named', async () => {
      const openRelay = await kubectlFails(['apply', '-n', NAMESPACE, '-f', '-'], JSON.stringify({ apiVersion: 'vmta.dev/v1alpha1', kind: 'RelayPolicy', metadata: { name: 'open' }, spec: { alwaysAllowRelaying: ['0.0.0.0/0'] } }));
      assert.match(openRelay, /alwaysAllowRelaying/);
      const plainSubmission = await kubectlFails(
        ['apply', '-n', NAMESPACE, '-f', '-'],
        JSON.stringify({ apiVersion: 'vmta.dev/v1alpha1', kind: 'SmtpListener', metadata: { name: 'plain' }, spec: { role: 'submission', tls: { mode: 'none' }, relayPolicyRef: { name: 'submission' }, poolRef: { name: 'outbound' } } }),
      );
      assert.match(plainSubmission, /tls/);
      const optionalTls = await kubectlFails(
        ['apply', '-n', NAMESPACE, '-f', '-'],
        JSON.stringify({ apiVersion: 'vmta.dev/v1alpha1', kind: 'SmtpListener', metadata: { name: 'optional' }, spec: { role: 'submission', tls: { secretName: 'relay-tls', required: false }, relayPolicyRef: { name: 'submission' }, poolRef: { name: 'outbound' } } }),
      );
      assert.match(optionalTls, /tls/);
    });

    await t.test('deleting the pool removes what it owned', async () => {
      await kubectl('delete', '-n', NAMESPACE, 'virtualmtapool', 'outbound', '--wait=true');
      await eventually('owned objects gone', async () => {
        const left = await kubectl('get', '-n', NAMESPACE, 'configmap,statefulset,service,pdb', '-l', 'vmta.dev/pool=outbound', '-o', 'name');
        return left.trim() === '';
      });
    });
  } finally {
    operator?.kill('SIGTERM');
    await kubectl('delete', 'namespace', NAMESPACE, '--wait=false').catch(() => undefined);
  }
});
