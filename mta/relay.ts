// The relay process: loads the runtime config, starts the admin server, indexes the spool, opens
// the SMTP listeners and then queues the spooled messages for delivery behind them, keeps the config
// current (hot reload), and shuts down in order on request: not ready, stop accepting, let open
// sessions finish within a bound, stop delivery, close the spool. A drain (mta/drain/, before a
// pod goes away) closes the listeners and hands the queue to peers; peers take hand-overs here.
import path from 'node:path';
import { loadConfigDirectory, recordConfigLoaded, ConfigWatcher, type LoadedConfig } from './config/loader.ts';
import type { RuntimeConfig } from './config/schema.ts';
import { queueRoutes } from './admin/queue-api.ts';
import { whileRecovering } from './admin/recovery-api.ts';
import { saveQueueSnapshot, takeQueueSnapshot, type QueueSnapshot } from './admin/queue-snapshot.ts';
import { QueuePauseFile } from './admin/queue-pauses.ts';
import type { AdminRoute } from './admin/routes.ts';
import { AdminServer, readAdminTokens, type Readiness } from './admin/server.ts';
import { egressProxyRoutes } from './admin/egress-proxy-api.ts';
import { warmupRoutes } from './admin/warmup-api.ts';
import { DeliveryEngine } from './delivery/delivery-engine.ts';
import type { Classification } from './delivery/reply-classification.ts';
import { drainRoutes } from './drain/drain-api.ts';
import { HANDOVER_PATH } from './drain/handover-format.ts';
import { HandoverLedger } from './drain/handover-ledger.ts';
import { createHandoverReceiver } from './drain/handover-receiver.ts';
import { QueueDrain } from './drain/queue-drain.ts';
import { AuthFailureLimiter } from './inbound/auth-failures.ts';
import { InboundServer } from './inbound/inbound-server.ts';
import { createLogger, type Logger } from './observe/log.ts';
import { RelayMetrics } from './observe/metrics.ts';
import { createMessageAcceptor } from './routing/acceptance.ts';
import { sessionProcessCount, SessionWorkers } from './sessions/session-workers.ts';
import { cpuAllowance } from './cpu-allowance.ts';
import { exposedGarbageCollector, IdleMemoryRelease } from './idle-memory-release.ts';
import { TlsReporting } from './reporting/tls-reporting.ts';
import { DkimSigner } from './signing/dkim-signer.ts';
import { RecoveryProgress } from './spool/recovery-progress.ts';
import { FileSpool } from './spool/spool.ts';
import type { SpooledMessage } from './spool/types.ts';
import { PoolSuppression } from './suppression/pool-suppression.ts';
import { suppressionRoutes } from './suppression/suppression-api.ts';
import { bounceSuppressedRecipients } from './suppression/suppression-bounce.ts';

export interface RelayOptions {
  /** Directory holding relay.yaml (a mounted ConfigMap in pods). */
  configDir: string;
  /** How long open SMTP sessions may take to finish after a shutdown request. */
  shutdownTimeoutMs: number;
  /** Fallback poll of the config directory (file watching reacts faster). */
  configPollIntervalMs?: number;
  logger?: Logger;
}

export class Relay {
  readonly metrics: RelayMetrics;
  readonly logger: Logger;
  readonly #options: RelayOptions;
  #watcher: ConfigWatcher | undefined;
  #spool: FileSpool | undefined;
  #delivery: DeliveryEngine | undefined;
  #inbound: InboundServer | undefined;
  #admin: AdminServer | undefined;
  #dkim: DkimSigner | undefined;
  #tlsReporting: TlsReporting | undefined;
  #ledger: HandoverLedger | undefined;
  #drain: QueueDrain | undefined;
  #suppression: PoolSuppression | undefined;
  #sessions: SessionWorkers | undefined;
  /** While the session processes start (a start that fails before it awaits them still closes them). */
  #sessionsStarting: Promise<SessionWorkers | undefined> | undefined;
  /** Failed AUTH per client for every listener and process: a failure in a session served here is told to the session processes. */
  readonly #authFailures = new AuthFailureLimiter((client, maxFailures, windowMs, at) => this.#sessions?.shareAuthFailure(client, maxFailures, windowMs, at));
  /** One memory-reducing collection after a burst of connections or deliveries (idle-memory-release.ts). */
  readonly #memoryRelease = new IdleMemoryRelease(exposedGarbageCollector());
  #adminToken: string | undefined;
  #recovery: RecoveryProgress;
  #listening = false;
  #shutdown: Promise<void> | undefined;

  private constructor(options: RelayOptions, logger: Logger) {
    this.#options = options;
    this.logger = logger;
    this.metrics = new RelayMetrics();
    this.#recovery = new RecoveryProgress(this.metrics);
  }

  /**
   * Load the config (throws ConfigError naming field and value when it is invalid) and start
   * everything. On a failure after the config loaded, whatever started is closed again.
   */
  static async start(options: RelayOptions): Promise<Relay> {
    const loaded = await loadConfigDirectory(options.configDir);
    const relay = new Relay(options, options.logger ?? createLogger('relay'));
    try {
      await relay.#start(loaded);
    } catch (error) {
      await relay.#closeAll();
      throw error;
    }
    return relay;
  }

  get config(): RuntimeConfig {
    if (!this.#watcher) throw new Error('relay not started');
    return this.#watcher.current.config;
  }

  /** The admin API's route table (method, path, who may call) this relay serves. */
  adminRoutes(): readonly AdminRoute[] {
    return this.#admin?.routes() ?? [];
  }

  readiness(): Readiness {
    if (this.#shutdown) return { ready: false, reason: 'shutting down' };
    if (this.#drain?.active) return { ready: false, reason: 'draining' };
    // Ready once listening: the listeners open when the spool is indexed, while its messages are still being queued.
    if (!this.#listening) return { ready: false, reason: this.#recovery.status().recovering ? this.#recovery.describe() : 'listeners not bound' };
    return { ready: true };
  }

  async #start(loaded: LoadedConfig): Promise<void> {
    const { metrics, logger } = this;
    const { config } = loaded;
    this.#dkim = await DkimSigner.load(config, metrics);
    recordConfigLoaded(metrics, loaded);
    logger.info({ hash: loaded.hash, file: loaded.file }, 'runtime config loaded');
    this.#watcher = new ConfigWatcher({
      directory: this.#options.configDir,
      initial: loaded,
      apply: (next) => this.#apply(next),
      metrics,
      logger,
      pollIntervalMs: this.#options.configPollIntervalMs,
    });
    const tokens = await readAdminTokens(config.admin);
    this.#adminToken = tokens.token;
    // The admin server comes first so /healthz answers while the spool is being recovered.
    this.#admin = await AdminServer.start({
      address: config.admin.address,
      port: config.admin.port,
      metrics,
      logger,
      ...tokens,
      readiness: () => this.readiness(),
      configStatus: () => this.#watcher!.status(),
      metricsText: () => this.#sessions?.metrics(metrics.registry),
    });
    logger.info({ address: config.admin.address, port: this.#admin.address().port }, 'admin server listening');
    // Forked now, so they start while the spool is indexed; they take sessions once the listeners open.
    this.#sessionsStarting = this.#startSessionProcesses(config);
    this.#sessionsStarting.catch(() => undefined); // awaited below; a failure before that is handled by #closeAll
    const spool = FileSpool.unopened(config.spool.path, { metrics, logger, space: config.spool, recovery: this.#recovery });
    this.#spool = spool;
    const stateDir = path.join(config.spool.path, 'state');
    this.#tlsReporting = new TlsReporting({ config, stateDir, logger });
    const pauseFile = new QueuePauseFile(stateDir, logger, (write) => spool.withReserve(write));
    const deliveryOptions = {
      config, spool, metrics, logger, stateDir, recover: false,
      tlsSessions: this.#tlsReporting.recorder,
      onRecipientBounced: (address: string, classification: Classification) => void this.#suppression?.recordBounce(address, classification),
      onMessageAttempted: () => this.#memoryRelease.noteWork(),
    };
    const delivery = DeliveryEngine.create(deliveryOptions);
    this.#delivery = delivery;
    // Mounted before anything is awaited: until every message found is queued the queue API
    // answers 503 with the progress, never 404.
    // Read before the spool is opened (which changes its files); the queue list waits for it.
    let snapshot = takeQueueSnapshot(config.spool.path, logger);
    this.#admin.mount([...whileRecovering(this.#recovery, queueRoutes(delivery, (pauses) => pauseFile.save(pauses)), () => snapshot), ...this.#tlsReporting.adminRoutes(), ...egressProxyRoutes(delivery), ...warmupRoutes(delivery)]);
    await snapshot.catch(() => undefined);
    const suppression = await PoolSuppression.open({ stateDir, registry: metrics.registry, logger, hostname: config.hostname, config: config.suppression, token: () => this.#adminToken });
    this.#suppression = suppression;
    this.#admin.mount(suppressionRoutes(suppression));
    // Pauses saved before a restart hold before the first recovered message could be sent.
    await delivery.startDelivering({ ...deliveryOptions, pauses: await pauseFile.load() });
    await spool.recover();
    const saved = await snapshot.catch(() => undefined);
    if (saved && saved.messages !== this.#recovery.status().found) {
      logger.warn({ snapshot: saved.messages, found: this.#recovery.status().found }, 'queue snapshot of the last stop does not match the spool; the queue list waits for the recovery');
      snapshot = Promise.resolve(undefined);
    }
    // What the index holds now, before the listeners open: queued below while new mail is taken,
    // and none is queued twice (new mail is not in this scan; the engine ignores an id it holds).
    const recovered = spool.scan();
    await this.#mountDrain(spool, delivery);
    const accept = createMessageAcceptor({ spool, getConfig: () => this.config, getSigner: () => this.#dkim, logger, onAccepted: (message) => this.#queueAccepted(message) });
    this.#tlsReporting.useAcceptor(accept);
    this.#sessions = await this.#sessionsStarting;
    this.#inbound = await InboundServer.start(config, {
      accept, metrics, logger, spoolHasRoom: () => spool.hasRoomForMail(), suppression, authFailures: this.#authFailures, memoryRelease: this.#memoryRelease, ...(this.#sessions ? { sessionWorkers: this.#sessions } : {}),
    });
    this.#listening = true;
    const listeners = this.#inbound.boundAddresses();
    logger.info({ listeners }, `listening: ${listeners.map((bound) => `${bound.listener} ${bound.address}:${bound.port}`).join(', ') || 'no listeners'}`);
    await this.#watcher.start();
    // Each recovered message is work: once recovery goes quiet its scan's garbage is given back (idle-memory-release.ts).
    await delivery.queueRecovered(recovered, () => {
      this.#recovery.queuedOne();
      this.#memoryRelease.noteWork();
    });
    this.#recovery.finish();
    logger.info({ messages: this.#recovery.status().queued, seconds: this.#recovery.status().elapsedSeconds }, 'spool recovered');
  }

  /** A stored message (from a session here or in a session process): receipts, suppressed recipients bounced, then queued. */
  #queueAccepted(message: SpooledMessage): void {
    const { logger } = this;
    const spool = this.#spool!;
    const delivery = this.#delivery!;
    delivery.recordReceipts(message);
    bounceSuppressedRecipients(message, { spool, suppression: this.#suppression!, reportingMta: this.config.hostname, logger })
      .then((dsn) => dsn && delivery.enqueue(dsn))
      .catch((error: unknown) => logger.error({ queueId: message.id, err: error }, 'bouncing suppressed recipients failed; delivery decides for them'))
      .finally(() => delivery.enqueue(message));
  }

  /** Session processes per `sessionProcesses` (none: undefined); a process that cannot start stops the relay's start. */
  async #startSessionProcesses(config: RuntimeConfig): Promise<SessionWorkers | undefined> {
    const processes = sessionProcessCount(config.sessionProcesses, (await cpuAllowance()).cpus);
    if (processes === 0) return undefined;
    const workers = await SessionWorkers.start({
      processes,
      logger: this.logger,
      store: async (envelope, chunks, queueId) => {
        const stored = await this.#spool!.store(envelope, chunks, queueId);
        this.#queueAccepted(stored);
        return stored.id;
      },
      refusal: (address) => this.#suppression?.refusal(address),
      spoolHasRoom: () => this.#spool?.hasRoomForMail() ?? false,
      authFailures: this.#authFailures,
    });
    this.logger.info({ processes }, 'session processes started');
    return workers;
  }

  async #mountDrain(spool: FileSpool, delivery: DeliveryEngine): Promise<void> {
    const { logger } = this;
    this.#ledger = await HandoverLedger.open(spool.directory);
    const drain = new QueueDrain({
      engine: delivery,
      spool,
      stopAccepting: async (timeoutMs) => {
        this.#listening = false;
        // No listener at all: open sessions go on (the server keeps them), nothing new connects.
        await this.#inbound!.reload(this.#listenerless(this.config));
        await this.#inbound!.drain(timeoutMs);
      },
      resumeAccepting: async () => {
        await this.#inbound!.reload(this.config);
        this.#listening = true;
      },
      token: () => this.#adminToken,
      logger,
    });
    this.#drain = drain;
    const receiveHandover = createHandoverReceiver({
      spool,
      isQueued: (id) => delivery.showMessage(id) !== undefined,
      enqueue: (message) => delivery.enqueue(message),
      ledger: this.#ledger,
      getConfig: () => this.config,
      refusal: () => (this.#shutdown ? 'shutting down' : drain.active ? 'this relay is draining' : undefined),
      logger,
    });
    // Not while the spool's messages are still being queued: a drain would hand over only part of them.
    this.#admin!.mount(whileRecovering(this.#recovery, [...drainRoutes(drain), { method: 'POST', path: HANDOVER_PATH, access: 'write', stream: receiveHandover }]));
  }

  #listenerless(config: RuntimeConfig): RuntimeConfig {
    return { ...config, listeners: [] };
  }

  /** Put a reloaded config into service; any throw refuses the whole version and keeps the old one. */
  async #apply(next: LoadedConfig): Promise<void> {
    const previous = this.config;
    const tokens = await readAdminTokens(next.config.admin);
    // Keys are read and checked before anything changes: a bad key refuses the whole version.
    const dkim = await DkimSigner.load(next.config, this.metrics);
    this.#tlsReporting!.reload(next.config);
    // A draining relay keeps its listeners closed whatever the new config says.
    await this.#inbound!.reload(this.#drain?.active ? this.#listenerless(next.config) : next.config);
    await this.#delivery!.reload(next.config);
    this.#spool!.setSpaceLimits(next.config.spool);
    this.#suppression!.reload(next.config.suppression);
    this.#admin!.setTokens(tokens);
    this.#adminToken = tokens.token;
    this.#dkim = dkim;
    const cold: string[] = [];
    if (next.config.spool.path !== previous.spool.path) cold.push('spool.path');
    if (next.config.sessionProcesses !== previous.sessionProcesses) cold.push('sessionProcesses');
    if (next.config.admin.address !== previous.admin.address || next.config.admin.port !== previous.admin.port) cold.push('admin.address/port');
    if (cold.length > 0) this.logger.warn({ fields: cold }, `changes to ${cold.join(', ')} take effect only after a restart`);
  }

  /** Idempotent: the first call starts the shutdown, later calls wait for the same one. */
  shutdown(reason: string): Promise<void> {
    this.#shutdown ??= this.#shutDown(reason);
    return this.#shutdown;
  }

  async #shutDown(reason: string): Promise<void> {
    const { logger } = this;
    logger.info({ reason }, 'shutting down: not ready');
    this.#watcher?.stop();
    if (this.#inbound) {
      await this.#inbound.stopAccepting();
      logger.info({ timeoutMs: this.#options.shutdownTimeoutMs }, 'listeners closed; waiting for open sessions to finish');
      // Sessions still open at the bound are closed; a message whose DATA had not ended was never acknowledged.
      await this.#inbound.drain(this.#options.shutdownTimeoutMs);
    }
    await this.#closeAll();
    logger.info('relay stopped');
  }

  /** After delivery has stopped: the queue list for the next start to show at once (queue-snapshot.ts); none before the recovery is done. */
  #queueSnapshot(): QueueSnapshot | undefined {
    const delivery = this.#delivery;
    if (!delivery || !this.#spool || this.#recovery.status().recovering) return undefined;
    return { savedAt: new Date().toISOString(), messages: delivery.queuedMessages, queues: delivery.listQueues() };
  }

  async #closeAll(): Promise<void> {
    this.#watcher?.stop();
    await this.#inbound?.close();
    this.#inbound = undefined;
    await (this.#sessions ?? (await this.#sessionsStarting?.catch(() => undefined)))?.close();
    this.#sessions = undefined;
    this.#sessionsStarting = undefined;
    this.#listening = false;
    await this.#drain?.abandon();
    this.#drain = undefined;
    await this.#delivery?.stop();
    const snapshot = this.#queueSnapshot();
    this.#delivery = undefined;
    await this.#tlsReporting?.stop();
    this.#tlsReporting = undefined;
    await this.#ledger?.close();
    this.#ledger = undefined;
    await this.#suppression?.close();
    this.#suppression = undefined;
    await this.#spool?.close();
    this.#spool = undefined;
    if (snapshot) {
      await saveQueueSnapshot(this.config.spool.path, snapshot).catch((error: unknown) => this.logger.warn({ err: error }, 'saving the queue snapshot failed; the next start lists the queue once it is recovered'));
    }
    await this.#admin?.close();
    this.#admin = undefined;
    this.#memoryRelease.stop();
  }
}
