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
import { sha256 } from '../../mta/config/loader.ts';
import { RUNTIME_CONFIG_FILE } from '../../mta/config/schema.ts';
import type { ResolvedListener } from '../api/smtp-listener.ts';
import { renderNamespace, type PoolRender } from '../render/pool.ts';
import { describePool, senderWarnings } from './local-banner.ts';
import { ensureLocalAdminToken } from './local-admin-token.ts';
import { localizeConfig, localPoolDir } from './local-config.ts';
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
  /** sha256 of the local relay.yaml: what the relay's /config reports. */
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
  /** False until the first apply has started every pool: a relay that dies then fails the start. */
  #started = false;
  #lastWarnings = '';

  private constructor(options: LocalModeOptions) {
    this.#options = options;
  }

  /** Loads, renders and starts every pool; throws LocalModeError when the files have errors. */
  static async start(options: LocalModeOptions): Promise<LocalMode> {
    const local = new LocalMode(options);
    try {
      await local.#apply(true);
      local.#started = true;
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

    const warnings = senderWarnings(loaded.resources);
    if (warnings.join('\n') !== this.#lastWarnings) for (const warning of warnings) log(`warning: ${warning}`);
    this.#lastWarnings = warnings.join('\n');
    for (const note of await writeLocalSecrets(workDir, loaded.resources.secrets)) log(note);
    const localAddresses = new Set(Object.values(networkInterfaces()).flatMap((entries) => (entries ?? []).map((entry) => entry.address)));
    const poolNames = [...rendered.pools.keys()].sort();
    for (const [index, poolName] of poolNames.entries()) {
      const render = rendered.pools.get(poolName) as PoolRender;
      const { config, notes } = localizeConfig(render.runtime.config, { workDir, poolName, portShift: this.#options.portShift, poolIndex: index, localAddresses });
      if (initial) for (const note of notes) log(note);
      const poolDir = localPoolDir(workDir, poolName);
      await mkdir(poolDir, { recursive: true });
      // A pod without spec.admin.tokenSecretName refuses queue control; locally there is always a token.
      if (config.admin && !config.admin.tokenFile) config.admin.tokenFile = await ensureLocalAdminToken(workDir, poolName);
      // Exactly what the operator puts in the ConfigMap, for reference; the relay runs config/.
      await writeAtomically(path.join(poolDir, 'configmap', RUNTIME_CONFIG_FILE), render.runtime.text);
      const localText = `# Local copy of configmap/${RUNTIME_CONFIG_FILE} with local paths, addresses and ports.\n${stringify(config, { lineWidth: 0 })}`;
      const configHash = sha256(localText);
      await writeAtomically(path.join(poolDir, 'config', RUNTIME_CONFIG_FILE), localText);
      await mkdir(path.join(poolDir, 'spool'), { recursive: true });
      const endpoints = render.runtime.listeners.map((plan, listenerIndex): LocalEndpoint => {
        const port = config.listeners[listenerIndex]?.port ?? plan.relayPort;
        return { pool: poolName, listener: plan.listener.metadata.name, url: `${plan.resolved.tlsMode === 'implicit' ? 'smtps' : 'smtp'}://127.0.0.1:${port}`, port, clusterPort: plan.resolved.port, resolved: plan.resolved };
      });
      const adminPort = config.admin?.port ?? 0;
      const running = this.#pools.get(poolName);
      if (running && running.process.running && running.podTemplateHash === render.podTemplateHash && running.adminPort === adminPort) {
        if (running.configHash !== configHash) log(`pool "${poolName}": hot change, the relay reloads its config (configHash ${configHash}, as its /config will report)`);
        running.configHash = configHash;
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
        onExit: (code, signal, reason) => {
          if (this.#started) log(`pool "${poolName}": relay exited (${signal ?? `code ${code}`})${reason ? `: ${reason}` : ''}; saving a file in ${resourceDir} starts it again`);
        },
      });
      log(`pool "${poolName}": relay started (pid ${relay.pid})`);
      this.#pools.set(poolName, { podTemplateHash: render.podTemplateHash, configHash, adminPort, process: relay, endpoints });
      await relay.waitReady(configHash);
      log(describePool({ poolName, adminPort, configHash, renderedConfigHash: render.configHash, tokenFile: config.admin?.tokenFile, endpoints, workDir, resources: loaded.resources }));
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
