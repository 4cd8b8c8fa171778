// `vmta local DIR`: resources from files -> the operator's render -> one local relay process per
// pool, kept in step with the files. A change the relay takes live (policies, domains, routing,
// users, certificates) is written into its config directory and hot-reloaded, as a mounted
// ConfigMap would be; a cold change (ports, source binding, image, resources, storage: the
// pod-template hash) restarts that pool's process, as a rolling update would. Invalid files are
// reported and the running relays keep their last good configuration.
import { watch, type FSWatcher } from 'node:fs';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { networkInterfaces } from 'node:os';
import path from 'node:path';
import { stringify } from 'yaml';
import { RUNTIME_CONFIG_FILE } from '../../mta/config/schema.ts';
import type { ResolvedListener } from '../api/smtp-listener.ts';
import { renderNamespace, type PoolRender } from '../render/pool.ts';
import { localizeConfig, localPoolDir, localSecretDir } from './local-config.ts';
import { writeLocalSecrets } from './local-secrets.ts';
import { RelayProcess } from './relay-process.ts';
import { loadResourceDir, secretSummaries, type ResourceSet } from './resource-files.ts';

export interface LocalModeOptions {
  resourceDir: string;
  workDir: string;
  /** Added to every local port, to run several copies side by side. */
  portShift: number;
  /** Re-render and reload when a file of resourceDir changes. */
  watch: boolean;
  log: (line: string) => void;
}

/** Where a user connects to one listener. */
export interface LocalEndpoint {
  pool: string;
  listener: string;
  url: string;
  port: number;
  /** Port the listener has in a cluster. */
  clusterPort: number;
  resolved: ResolvedListener;
}

interface RunningPool {
  podTemplateHash: string;
  configHash: string;
  adminPort: number;
  process: RelayProcess;
  endpoints: LocalEndpoint[];
}

export class LocalModeError extends Error {
  readonly problems: string[];
  constructor(problems: string[]) {
    super(`the resources cannot run:\n  ${problems.join('\n  ')}`);
    this.name = 'LocalModeError';
    this.problems = problems;
  }
}

const LOCAL_IMAGE = 'local';

export class LocalMode {
  readonly #options: LocalModeOptions;
  readonly #pools = new Map<string, RunningPool>();
  #watcher: FSWatcher | undefined;
  #reloadTimer: NodeJS.Timeout | undefined;
  #reloading: Promise<void> = Promise.resolve();
  #stopped = false;

  private constructor(options: LocalModeOptions) {
    this.#options = options;
  }

  /** Loads, renders and starts every pool; throws LocalModeError when the files have errors. */
  static async start(options: LocalModeOptions): Promise<LocalMode> {
    const local = new LocalMode(options);
    try {
      await local.#apply(true);
    } catch (error) {
      await local.stop();
      throw error;
    }
    if (options.watch) local.#watch();
    return local;
  }

  endpoints(): LocalEndpoint[] {
    return [...this.#pools.values()].flatMap((pool) => pool.endpoints);
  }

  adminUrls(): Map<string, string> {
    return new Map([...this.#pools].map(([name, pool]) => [name, `http://127.0.0.1:${pool.adminPort}`]));
  }

  /** Re-reads the files and applies them; errors are logged and the running relays kept. */
  reload(): Promise<void> {
    this.#reloading = this.#reloading.then(() =>
      this.#apply(false).catch((error: unknown) => {
        const problems = error instanceof LocalModeError ? error.problems : [(error as Error).message];
        this.#options.log(`not applied, the relays keep their last good configuration:\n  ${problems.join('\n  ')}`);
      }),
    );
    return this.#reloading;
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    this.#watcher?.close();
    clearTimeout(this.#reloadTimer);
    await this.#reloading;
    await Promise.all([...this.#pools.values()].map((pool) => pool.process.stop()));
    this.#pools.clear();
  }

  #watch(): void {
    this.#watcher = watch(this.#options.resourceDir, () => {
      clearTimeout(this.#reloadTimer);
      // Editors write a file in several steps; apply once they are done.
      this.#reloadTimer = setTimeout(() => {
        this.#options.log(`change in ${this.#options.resourceDir}: reloading`);
        void this.reload();
      }, 300);
    });
  }

  async #apply(initial: boolean): Promise<void> {
    const { resourceDir, workDir, log } = this.#options;
    const loaded = await loadResourceDir(resourceDir);
    if (loaded.errors.length > 0) throw new LocalModeError(loaded.errors);
    const rendered = renderNamespace({ ...withoutSecretValues(loaded.resources), image: LOCAL_IMAGE });
    const problems = [...rendered.problems, ...[...rendered.pools.values()].flatMap((pool) => pool.problems)].map((problem) => `${problem.reason}: ${problem.message}`);
    if (problems.length > 0) throw new LocalModeError(problems);
    if (rendered.pools.size === 0) throw new LocalModeError([`no VirtualMtaPool in ${resourceDir}`]);

    for (const note of await writeLocalSecrets(workDir, loaded.resources.secrets)) log(note);
    const localAddresses = new Set(Object.values(networkInterfaces()).flatMap((entries) => (entries ?? []).map((entry) => entry.address)));
    const poolNames = [...rendered.pools.keys()].sort();
    for (const [index, poolName] of poolNames.entries()) {
      const render = rendered.pools.get(poolName) as PoolRender;
      const { config, notes } = localizeConfig(render.runtime.config, { workDir, poolName, portShift: this.#options.portShift, poolIndex: index, localAddresses });
      if (initial) for (const note of notes) log(note);
      const poolDir = localPoolDir(workDir, poolName);
      // Exactly what the operator puts in the ConfigMap, for reference; the relay runs config/.
      await writeAtomically(path.join(poolDir, 'configmap', RUNTIME_CONFIG_FILE), render.runtime.text);
      await writeAtomically(path.join(poolDir, 'config', RUNTIME_CONFIG_FILE), `# Local copy of configmap/${RUNTIME_CONFIG_FILE} with local paths, addresses and ports.\n${stringify(config, { lineWidth: 0 })}`);
      await mkdir(path.join(poolDir, 'spool'), { recursive: true });
      const endpoints = render.runtime.listeners.map((plan, listenerIndex): LocalEndpoint => {
        const port = config.listeners[listenerIndex]?.port ?? plan.relayPort;
        return { pool: poolName, listener: plan.listener.metadata.name, url: `${plan.resolved.tlsMode === 'implicit' ? 'smtps' : 'smtp'}://127.0.0.1:${port}`, port, clusterPort: plan.resolved.port, resolved: plan.resolved };
      });
      const adminPort = config.admin?.port ?? 0;
      const running = this.#pools.get(poolName);
      if (running && running.process.running && running.podTemplateHash === render.podTemplateHash && running.adminPort === adminPort) {
        if (running.configHash !== render.configHash) log(`pool "${poolName}": hot change, the relay reloads its config (configHash ${render.configHash.slice(0, 12)})`);
        running.configHash = render.configHash;
        running.endpoints = endpoints;
        continue;
      }
      if (running) {
        log(`pool "${poolName}": ${running.process.running ? 'cold change (pod template), restarting its relay' : 'relay not running, starting it again'}`);
        await running.process.stop();
      }
      if (this.#stopped) return;
      const relay = new RelayProcess({
        poolName,
        configDir: path.join(poolDir, 'config'),
        adminPort,
        log,
        onExit: (code, signal) => log(`pool "${poolName}": relay exited (${signal ?? `code ${code}`}); fix the resources and save to start it again`),
      });
      log(`pool "${poolName}": relay started (pid ${relay.pid})`);
      this.#pools.set(poolName, { podTemplateHash: render.podTemplateHash, configHash: render.configHash, adminPort, process: relay, endpoints });
      await relay.waitReady();
      log(describePool(poolName, adminPort, endpoints, workDir, loaded.resources));
    }
    for (const [poolName, running] of this.#pools) {
      if (rendered.pools.has(poolName)) continue;
      log(`pool "${poolName}" was removed: stopping its relay`);
      await running.process.stop();
      this.#pools.delete(poolName);
    }
  }
}

function withoutSecretValues(resources: ResourceSet) {
  return { pools: resources.pools, listeners: resources.listeners, policies: resources.policies, secrets: secretSummaries(resources.secrets) };
}

async function writeAtomically(file: string, text: string): Promise<void> {
  await mkdir(path.dirname(file), { recursive: true });
  if ((await readFile(file, 'utf8').catch(() => undefined)) === text) return;
  const temporary = `${file}.tmp`;
  await writeFile(temporary, text);
  await rename(temporary, file);
}

function describeListener(resolved: ResolvedListener): string {
  const tls = resolved.tlsMode === 'implicit' ? 'implicit TLS' : resolved.tlsMode === 'none' ? 'no TLS' : resolved.tlsRequired ? 'STARTTLS required' : 'STARTTLS offered';
  const auth = resolved.authMechanisms.length === 0 ? 'no AUTH' : `AUTH ${resolved.authMechanisms.join(' ')}${resolved.authRequired ? ' required' : ''}`;
  return `${resolved.role}: ${tls}, ${auth}`;
}

function describePool(poolName: string, adminPort: number, endpoints: LocalEndpoint[], workDir: string, resources: ResourceSet): string {
  const width = Math.max(...endpoints.map((endpoint) => endpoint.listener.length), 8);
  const lines = endpoints.map((endpoint) => {
    const clusterNote = endpoint.clusterPort !== endpoint.port ? ` (port ${endpoint.clusterPort} in a cluster)` : '';
    return `  ${endpoint.listener.padEnd(width)}  ${endpoint.url.padEnd(26)} ${describeListener(endpoint.resolved)}${clusterNote}`;
  });
  const tlsSecrets = new Set(resources.listeners.filter((listener) => listener.spec.poolRef.name === poolName).flatMap((listener) => listener.spec.tls?.secretName ?? []));
  const userSecrets = resources.policies.flatMap((policy) => (policy.spec.users ? [policy.spec.users.secretName] : []));
  const users = resources.secrets.filter((secret) => userSecrets.includes(secret.name)).flatMap((secret) => [...secret.data.keys()].map((user) => `${user} (Secret ${secret.name}, ${path.basename(secret.file)})`));
  const submission = endpoints.find((endpoint) => endpoint.resolved.role === 'submission') ?? endpoints.find((endpoint) => endpoint.resolved.tlsMode === 'starttls' && endpoint.resolved.authRequired);
  const firstUser = users.length > 0 ? resources.secrets.find((secret) => userSecrets.includes(secret.name))?.data.keys().next().value : undefined;
  const firstMessage = submission && firstUser
    ? [`  first message: python3 -c "import smtplib, ssl; s = smtplib.SMTP('127.0.0.1', ${submission.port}); s.starttls(context=ssl._create_unverified_context()); s.login('${firstUser}', 'PASSWORD'); s.sendmail('${firstUser}@example.com', ['someone@example.net'], 'Subject: hello\\r\\n\\r\\nfirst message')"`]
    : [];
  return [
    `pool "${poolName}" is ready; admin and metrics at http://127.0.0.1:${adminPort}`,
    ...lines,
    ...(users.length > 0 ? [`  users: ${users.join(', ')}`] : []),
    ...[...tlsSecrets].map((secret) => `  certificate: ${path.join(localSecretDir(workDir, secret), 'tls.crt')} (trust it, or skip verification for a self-signed one)`),
    ...firstMessage,
  ].join('\n');
}
