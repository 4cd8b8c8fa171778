// Loading the runtime config from its directory (the shape of a mounted ConfigMap) and keeping
// it current: a watcher that notices edits, the Kubernetes `..data` symlink swap and rotated
// certificate, key, user, token and DKIM key files, and hands each new version to the relay to apply.
// A version that fails to parse or to apply is refused: the previous one keeps serving, and a
// metric and an error log say so.
//
// Relative paths inside the config (spool, certificates, user secret directories, smarthost logins, admin token,
// DKIM keys, accounting file) are resolved against the config directory, so an example directory can be
// run from anywhere; in pods every path is absolute and nothing changes.
import { createHash } from 'node:crypto';
import { watch, type FSWatcher } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import type { RelayMetrics } from '../observe/metrics.ts';
import type { Logger } from '../observe/log.ts';
import { ConfigError, parseRuntimeConfig } from './parse.ts';
import { RUNTIME_CONFIG_FILE, type DomainSettingsConfig, type RuntimeConfig } from './schema.ts';

export interface LoadedConfig {
  /** The validated config with every path made absolute. */
  config: RuntimeConfig;
  /** sha256 (hex) of the relay.yaml bytes: the same hash the operator computes when rendering. */
  hash: string;
  /** Absolute path of relay.yaml as mounted (through the `..data` symlink in pods). */
  file: string;
  loadedAt: Date;
}

export interface ConfigStatus {
  hash: string;
  loadedAt: string;
  /** Present when the latest attempt to load a new version was refused. */
  lastError?: { message: string; at: string };
}

export function configFilePath(directory: string): string {
  return path.resolve(directory, RUNTIME_CONFIG_FILE);
}

export function sha256(bytes: Buffer | string): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/** Read and validate relay.yaml of a config directory; throws ConfigError naming field and value. */
export async function loadConfigDirectory(directory: string): Promise<LoadedConfig> {
  const file = configFilePath(directory);
  let bytes: Buffer;
  try {
    bytes = await readFile(file);
  } catch (error) {
    throw new ConfigError(file, [`cannot read the file: ${(error as Error).message}`]);
  }
  const config = resolveConfigPaths(parseRuntimeConfig(bytes.toString('utf8'), file), path.resolve(directory));
  return { config, hash: sha256(bytes), file, loadedAt: new Date() };
}

/** A copy of the config with every file path made absolute against `baseDirectory`. */
export function resolveConfigPaths(config: RuntimeConfig, baseDirectory: string): RuntimeConfig {
  const at = (file: string): string => path.resolve(baseDirectory, file);
  const optional = (file: string | undefined): string | undefined => (file === undefined ? undefined : at(file));
  const dkimKeys = (keys: RuntimeConfig['pool']['dkim']['keys']) => keys.map((key) => ({ ...key, keyFile: at(key.keyFile) }));
  const domains = (blocks: DomainSettingsConfig[]) =>
    blocks.map((block) => {
      const smarthost = block.smarthost;
      if (!smarthost) return block;
      return { ...block, smarthost: { ...smarthost, caFile: optional(smarthost.caFile), ...(smarthost.auth ? { auth: { ...smarthost.auth, secretPath: at(smarthost.auth.secretPath) } } : {}) } };
    });
  return {
    ...config,
    pool: {
      ...config.pool,
      dkim: { ...config.pool.dkim, keys: dkimKeys(config.pool.dkim.keys) },
      domainDefaults: domains(config.pool.domainDefaults),
      virtualMtas: config.pool.virtualMtas.map((vmta) => ({ ...vmta, domains: domains(vmta.domains), dkimKeys: dkimKeys(vmta.dkimKeys) })),
    },
    spool: { ...config.spool, path: at(config.spool.path) },
    admin: { ...config.admin, tokenFile: optional(config.admin.tokenFile), readTokenFile: optional(config.admin.readTokenFile) },
    delivery: { ...config.delivery, accounting: { ...config.delivery.accounting, file: optional(config.delivery.accounting.file), csvFile: optional(config.delivery.accounting.csvFile) } },
    ...(config.fleet ? { fleet: { ...config.fleet, membershipFile: at(config.fleet.membershipFile) } } : {}),
    listeners: config.listeners.map((listener) => ({
      ...listener,
      tls: {
        ...listener.tls,
        certFile: optional(listener.tls.certFile),
        keyFile: optional(listener.tls.keyFile),
        sni: listener.tls.sni.map((entry) => ({ ...entry, certFile: at(entry.certFile), keyFile: at(entry.keyFile) })),
      },
    })),
    relayPolicies: config.relayPolicies.map((policy) =>
      policy.users ? { ...policy, users: { ...policy.users, secretPath: at(policy.users.secretPath) } } : policy,
    ),
  };
}

/** Files and directories whose content the relay reads at (re)load: a change to any of them triggers a reload. */
export function referencedPaths(config: RuntimeConfig): { files: string[]; directories: string[] } {
  const files = new Set<string>();
  for (const listener of config.listeners) {
    if (listener.tls.certFile) files.add(listener.tls.certFile);
    if (listener.tls.keyFile) files.add(listener.tls.keyFile);
    for (const entry of listener.tls.sni) files.add(entry.certFile).add(entry.keyFile);
  }
  for (const token of [config.admin.tokenFile, config.admin.readTokenFile]) if (token) files.add(token);
  if (config.fleet) files.add(config.fleet.membershipFile);
  for (const key of [...config.pool.dkim.keys, ...config.pool.virtualMtas.flatMap((vmta) => vmta.dkimKeys)]) files.add(key.keyFile);
  const directories = new Set(config.relayPolicies.flatMap((policy) => (policy.users ? [policy.users.secretPath] : [])));
  return { files: [...files], directories: [...directories] };
}

/**
 * Content fingerprint of the config file plus every file it references. Mounted Secret
 * directories hold `..data`-style entries next to the keys; names starting with "." are skipped.
 */
async function fingerprint(configFile: string, config: RuntimeConfig | undefined): Promise<string> {
  const hash = createHash('sha256');
  const add = async (file: string): Promise<void> => {
    hash.update(`\0${file}\0`);
    try {
      hash.update(await readFile(file));
    } catch (error) {
      hash.update(`unreadable:${(error as NodeJS.ErrnoException).code ?? 'error'}`);
    }
  };
  await add(configFile);
  if (config) {
    const { files, directories } = referencedPaths(config);
    for (const file of files) await add(file);
    for (const directory of directories) {
      let names: string[] = [];
      try {
        names = (await readdir(directory)).filter((entry) => !entry.startsWith('.')).sort();
      } catch {
        hash.update(`\0${directory}\0missing`);
      }
      for (const name of names) await add(path.join(directory, name));
    }
  }
  return hash.digest('hex');
}

export interface ConfigWatcherOptions {
  directory: string;
  /** The config the relay started with (already applied). */
  initial: LoadedConfig;
  /** Put a new version into service; throw to refuse it (e.g. a certificate that does not load). */
  apply: (next: LoadedConfig) => Promise<void>;
  metrics: RelayMetrics;
  logger: Logger;
  /** Quiet time after a file event before reloading (a ConfigMap update is several events). */
  debounceMs?: number;
  /** Fallback content check for file systems where watching misses events. */
  pollIntervalMs?: number;
  /** Use fs.watch (default); false leaves only polling, for file systems without inotify. */
  watchFiles?: boolean;
}

export type ReloadOutcome = 'applied' | 'unchanged' | 'refused';

/** Record a successful load (initial or reload) in the config metrics. */
export function recordConfigLoaded(metrics: RelayMetrics, loaded: LoadedConfig): void {
  metrics.configReloads.inc({ result: 'success' });
  metrics.configLastReloadSuccessful.set(1);
  metrics.configLastReloadSuccessTimestamp.set(loaded.loadedAt.getTime() / 1000);
  metrics.configInfo.reset();
  metrics.configInfo.set({ hash: loaded.hash }, 1);
}

export class ConfigWatcher {
  readonly #options: Required<ConfigWatcherOptions>;
  readonly #configFile: string;
  #current: LoadedConfig;
  #lastError: { message: string; at: Date } | undefined;
  /** Fingerprint of the last version tried, applied or refused, so a refused version is not retried until something changes. */
  #lastAttempted = '';
  #watchers = new Map<string, FSWatcher>();
  #debounce: NodeJS.Timeout | undefined;
  #poll: NodeJS.Timeout | undefined;
  #running: Promise<ReloadOutcome> | undefined;
  #rerun = false;
  #stopped = false;

  constructor(options: ConfigWatcherOptions) {
    this.#options = { ...options, debounceMs: options.debounceMs ?? 200, pollIntervalMs: options.pollIntervalMs ?? 5000, watchFiles: options.watchFiles ?? true };
    this.#configFile = configFilePath(options.directory);
    this.#current = options.initial;
  }

  get current(): LoadedConfig {
    return this.#current;
  }

  status(): ConfigStatus {
    const status: ConfigStatus = { hash: this.#current.hash, loadedAt: this.#current.loadedAt.toISOString() };
    if (this.#lastError) status.lastError = { message: this.#lastError.message, at: this.#lastError.at.toISOString() };
    return status;
  }

  async start(): Promise<void> {
    this.#lastAttempted = await fingerprint(this.#configFile, this.#current.config);
    this.#rewatch();
    this.#poll = setInterval(() => void this.check(), this.#options.pollIntervalMs);
    this.#poll.unref();
  }

  stop(): void {
    this.#stopped = true;
    clearTimeout(this.#debounce);
    clearInterval(this.#poll);
    for (const watcher of this.#watchers.values()) watcher.close();
    this.#watchers.clear();
  }

  /** Reload now if the config or a file it references changed; serialised with other checks. */
  check(): Promise<ReloadOutcome> {
    if (this.#running) {
      this.#rerun = true;
      return this.#running;
    }
    this.#running = this.#reloadIfChanged().finally(() => {
      this.#running = undefined;
      if (this.#rerun && !this.#stopped) {
        this.#rerun = false;
        void this.check();
      }
    });
    return this.#running;
  }

  async #reloadIfChanged(): Promise<ReloadOutcome> {
    if (this.#stopped) return 'unchanged';
    // The fingerprint over the current config's files is what has changed since the last attempt;
    // a new config may reference other files, which the next check then covers.
    const seen = await fingerprint(this.#configFile, this.#current.config);
    if (seen === this.#lastAttempted) return 'unchanged';
    this.#lastAttempted = seen;
    const { metrics, logger } = this.#options;
    try {
      const next = await loadConfigDirectory(this.#options.directory);
      // Taken before applying, so a file that changes while the relay reads it is seen as a change next time.
      const applied = await fingerprint(this.#configFile, next.config);
      await this.#options.apply(next);
      this.#current = next;
      this.#lastError = undefined;
      this.#lastAttempted = applied;
      recordConfigLoaded(metrics, next);
      logger.info({ hash: next.hash, file: next.file }, 'runtime config reloaded');
      this.#rewatch();
      return 'applied';
    } catch (error) {
      const message = (error as Error).message;
      this.#lastError = { message, at: new Date() };
      metrics.configReloads.inc({ result: 'failure' });
      metrics.configLastReloadSuccessful.set(0);
      logger.error({ err: error, file: this.#configFile, hashInUse: this.#current.hash }, `runtime config refused, previous version keeps serving: ${message}`);
      return 'refused';
    }
  }

  /** Watch the config directory and the directories of every referenced file (a Secret mount swaps `..data` there too). */
  #rewatch(): void {
    if (this.#stopped || !this.#options.watchFiles) return;
    const { files, directories } = referencedPaths(this.#current.config);
    const wanted = new Set([path.resolve(this.#options.directory), ...files.map((file) => path.dirname(file)), ...directories]);
    for (const [directory, watcher] of this.#watchers) {
      if (!wanted.has(directory)) {
        watcher.close();
        this.#watchers.delete(directory);
      }
    }
    for (const directory of wanted) {
      if (this.#watchers.has(directory)) continue;
      try {
        const watcher = watch(directory, { persistent: false }, () => this.#schedule());
        // A watched directory that disappears ends its watcher; the poll still covers it.
        watcher.on('error', () => {
          watcher.close();
          this.#watchers.delete(directory);
        });
        this.#watchers.set(directory, watcher);
      } catch {
        // Missing directory: polling notices when it appears and the next reload watches it.
      }
    }
  }

  #schedule(): void {
    if (this.#stopped) return;
    clearTimeout(this.#debounce);
    this.#debounce = setTimeout(() => void this.check(), this.#options.debounceMs);
  }
}

