// promtool and the Prometheus server from Debian's `prometheus` package, for the alert and
// dashboard tests. Installed by scripts/install-prometheus.sh when missing: without them the
// tests fail, they do not skip.
import { execFileSync, spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { REPO_ROOT } from './helm.ts';

function onPath(command: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${command}`], { encoding: 'utf8' }).status === 0;
}

/** Makes sure promtool and prometheus are installed; throws with the installer's message when they cannot be. */
export function ensurePrometheus(): void {
  if (onPath('promtool') && onPath('prometheus')) return;
  execFileSync('sh', [join(REPO_ROOT, 'scripts', 'install-prometheus.sh')], { stdio: 'inherit', timeout: 300_000 });
  if (!onPath('promtool') || !onPath('prometheus')) throw new Error('promtool/prometheus are still missing after scripts/install-prometheus.sh');
}

export interface ToolResult {
  status: number | null;
  stdout: string;
  stderr: string;
}

export function promtool(args: string[], options: { input?: string; cwd?: string } = {}): ToolResult {
  ensurePrometheus();
  const result = spawnSync('promtool', args, { encoding: 'utf8', input: options.input, cwd: options.cwd ?? REPO_ROOT, timeout: 120_000 });
  if (result.error) throw result.error;
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}
