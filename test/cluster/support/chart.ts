// The chart installed the way users do (`helm install`, CRDs from the chart), with the image the
// nodes have or can pull. The runner installs release `vmta` (cluster mode) before the suites; suites that need
// another mode install their own release with installRelease().
import { execFile } from 'node:child_process';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { installHelm } from '../../../scripts/install-helm.ts';

export const REPO_ROOT = resolve(fileURLToPath(new URL('../../..', import.meta.url)));
export const CHART_DIR = join(REPO_ROOT, 'charts', 'vmta-operator');
export const RELEASE = 'vmta';

export function helm(args: string[], env: NodeJS.ProcessEnv = process.env): Promise<string> {
  return new Promise((resolvePromise, reject) => {
    execFile(installHelm(), args, { encoding: 'utf8', env, timeout: 600_000, maxBuffer: 32 * 1024 * 1024 }, (error, stdout, stderr) => {
      if (error) reject(new Error(`helm ${args.join(' ')} failed: ${stderr.trim() || error.message}`));
      else resolvePromise(stdout);
    });
  });
}

/** `--set` values that point the chart at an image ref ("registry/name:tag" or "name@sha256:..."). */
export function imageValues(image: string): string[] {
  const digest = image.indexOf('@');
  if (digest >= 0) return [`image.repository=${image.slice(0, digest)}`, `image.digest=${image.slice(digest + 1)}`];
  const colon = image.lastIndexOf(':');
  const hasTag = colon > image.lastIndexOf('/');
  return [`image.repository=${hasTag ? image.slice(0, colon) : image}`, `image.tag=${hasTag ? image.slice(colon + 1) : 'latest'}`];
}

export interface ReleaseOptions {
  release: string;
  namespace: string;
  image: string;
  valuesFiles?: string[];
  set?: string[];
}

/** helm upgrade --install --wait (a release left by a kept cluster is taken over): returns once the operator Deployment is available. */
export async function installRelease(options: ReleaseOptions, env: NodeJS.ProcessEnv = process.env): Promise<string> {
  const args = ['upgrade', '--install', options.release, CHART_DIR, '--namespace', options.namespace, '--create-namespace', '--wait', '--timeout', '5m'];
  for (const file of options.valuesFiles ?? []) args.push('--values', file);
  for (const value of [...imageValues(options.image), 'image.pullPolicy=IfNotPresent', ...(options.set ?? [])]) args.push('--set', value);
  return helm(args, env);
}

export async function uninstallRelease(release: string, namespace: string, env: NodeJS.ProcessEnv = process.env): Promise<void> {
  await helm(['uninstall', release, '--namespace', namespace, '--wait', '--ignore-not-found'], env);
}

/** The release every suite shares: cluster mode in VMTA_CLUSTER_OPERATOR_NAMESPACE. */
export async function installChart(env: NodeJS.ProcessEnv): Promise<void> {
  const out = await installRelease({ release: RELEASE, namespace: String(env.VMTA_CLUSTER_OPERATOR_NAMESPACE), image: String(env.VMTA_CLUSTER_IMAGE) }, env);
  console.log(out.split('\n').slice(0, 6).join('\n'));
}

export async function uninstallChart(env: NodeJS.ProcessEnv): Promise<void> {
  await uninstallRelease(RELEASE, String(env.VMTA_CLUSTER_OPERATOR_NAMESPACE), env);
}
