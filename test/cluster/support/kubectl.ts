// kubectl for cluster suites, asynchronous so the host-side servers a test runs (sinks, DNS)
// keep serving while it waits. Every failure carries kubectl's own message.
import { execFile } from 'node:child_process';
import { stringify } from 'yaml';

export interface KubectlOptions {
  /** Standard input (e.g. YAML for `apply -f -`). */
  input?: string;
  timeoutMs?: number;
}

export function kubectl(args: string[], options: KubectlOptions = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = execFile('kubectl', args, { encoding: 'utf8', timeout: options.timeoutMs ?? 120_000, maxBuffer: 64 * 1024 * 1024 }, (error, stdout, stderr) => {
      if (error) reject(new Error(`kubectl ${args.join(' ')} failed: ${stderr.trim() || error.message}`));
      else resolve(stdout);
    });
    child.stdin?.end(options.input ?? '');
  });
}

/** kubectl's exit code and output, for commands whose failure is an answer (`auth can-i` says "no" with exit 1). */
export function kubectlResult(args: string[], input = ''): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = execFile('kubectl', args, { encoding: 'utf8', timeout: 120_000, maxBuffer: 64 * 1024 * 1024 }, (error, stdout, stderr) => resolve({ code: error ? Number((error as { code?: number }).code ?? 1) : 0, stdout, stderr }));
    child.stdin?.end(input);
  });
}

export async function getJson<T = Record<string, any>>(args: string[]): Promise<T> {
  return JSON.parse(await kubectl([...args, '-o', 'json'])) as T;
}

/** Server-side apply of objects or YAML text, as the given field manager. */
export async function apply(objects: object[] | string, options: { namespace?: string; fieldManager?: string } = {}): Promise<string> {
  const input = typeof objects === 'string' ? objects : objects.map((object) => stringify(object)).join('---\n');
  const args = ['apply', '--server-side', '--force-conflicts', `--field-manager=${options.fieldManager ?? 'vmta-cluster-test'}`, '-f', '-'];
  if (options.namespace) args.push('-n', options.namespace);
  return kubectl(args, { input });
}

/** Polls `check` until it returns a value other than undefined/false; the timeout error says what was awaited and what was seen last. */
export async function waitFor<T>(description: string, check: () => Promise<T | undefined | false>, timeoutMs = 120_000, intervalMs = 1000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value !== undefined && value !== false) return value;
      last = value;
    } catch (error) {
      last = error instanceof Error ? error.message : error;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs / 1000}s waiting for ${description}; last: ${String(last)}`);
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}

export interface Condition {
  type: string;
  status: string;
  reason?: string;
  message?: string;
  observedGeneration?: number;
}

export function condition(object: { status?: { conditions?: Condition[] } }, type: string): Condition | undefined {
  return object.status?.conditions?.find((entry) => entry.type === type);
}

export async function createNamespace(name: string): Promise<void> {
  await kubectl(['create', 'namespace', name]);
}

/** Deletes a suite's namespace and waits until it is gone (its claims are released for the next suite). */
export async function deleteNamespace(name: string): Promise<void> {
  await kubectl(['delete', 'namespace', name, '--ignore-not-found', '--wait=true', '--timeout=180s'], { timeoutMs: 200_000 });
}
