// TLS-RPT in the relay process: the counts on the spool volume (<spool>/state/tls-rpt.json), the
// recorder the delivery engine calls, the reporter and its timer, mailed reports handed to the
// relay's own message acceptor (so they are spooled, routed and DKIM-signed like accepted mail),
// and the admin endpoints: GET /api/v1/tls-reports lists the counts held, POST
// /api/v1/tls-reports/send (admin token) ends the current period and sends what is due.
import { readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { AdminRoute } from '../admin/routes.ts';
import { RelayPolicy, type RuntimeConfig } from '../config/schema.ts';
import { systemClock } from '../delivery/clock.ts';
import { MxResolver } from '../delivery/mx-resolver.ts';
import type { MessageAcceptor } from '../inbound/transaction.ts';
import type { Logger } from '../observe/log.ts';
import { TlsReporter } from './tls-rpt-reporter.ts';
import { TlsSessionRecorder } from './tls-rpt-sessions.ts';
import { TlsRptStore } from './tls-rpt-store.ts';

export const TLS_REPORTS_PATH = '/api/v1/tls-reports';

export interface TlsReportingOptions {
  config: RuntimeConfig;
  /** The spool volume's state/ folder. */
  stateDir: string;
  logger: Logger;
  /** This pod's name (default: the host name, which is the pod name in Kubernetes). */
  instance?: string;
}

function readCa(config: RuntimeConfig): Buffer | undefined {
  const file = config.tlsReporting.https.trustedCaFile;
  if (!file) return undefined;
  try {
    return readFileSync(file);
  } catch (error) {
    throw new Error(`tlsReporting.https.trustedCaFile: cannot read ${file}: ${(error as Error).message}`);
  }
}

export class TlsReporting {
  readonly recorder: TlsSessionRecorder;
  readonly #store: TlsRptStore;
  readonly #reporter: TlsReporter;
  #config: RuntimeConfig;
  #ca: Buffer | undefined;
  #resolver: MxResolver;
  #accept: MessageAcceptor | undefined;

  constructor(options: TlsReportingOptions) {
    const { config, logger } = options;
    this.#config = config;
    this.#ca = readCa(config);
    this.#resolver = new MxResolver({ servers: config.delivery.resolvers, clock: systemClock });
    this.#store = new TlsRptStore({ file: path.join(options.stateDir, 'tls-rpt.json'), intervalMs: config.tlsReporting.interval, logger });
    const now = () => systemClock.now();
    this.recorder = new TlsSessionRecorder(this.#store, now, () => this.#config.tlsReporting.enabled);
    this.#reporter = new TlsReporter({
      store: this.#store,
      settings: () => this.#config.tlsReporting,
      instance: (options.instance ?? os.hostname()).toLowerCase().replace(/[^a-z0-9.-]/g, '-'),
      resolveTxt: (name) => this.#resolver.resolveTxt(name),
      resolveHost: (host) => this.#resolver.resolveHost(host),
      submitMail: (from, to, message) => this.#submit(from, to, message),
      trustedCa: () => this.#ca,
      now,
      logger,
    });
    this.#reporter.start();
  }

  /** Mailed reports go through this acceptor (set once the relay has one). */
  useAcceptor(accept: MessageAcceptor): void {
    this.#accept = accept;
  }

  /** Take a new config; throws (refusing it) when the CA file cannot be read. */
  reload(config: RuntimeConfig): void {
    const ca = readCa(config);
    if (JSON.stringify(config.delivery.resolvers) !== JSON.stringify(this.#config.delivery.resolvers)) this.#resolver = new MxResolver({ servers: config.delivery.resolvers, clock: systemClock });
    this.#ca = ca;
    const intervalChanged = config.tlsReporting.interval !== this.#config.tlsReporting.interval;
    this.#config = config;
    this.#store.intervalMs = config.tlsReporting.interval;
    if (intervalChanged) this.#reporter.start();
  }

  async stop(): Promise<void> {
    await this.#reporter.stop();
    this.#store.flush();
  }

  /** GET the counts held (read token), POST to end the period and send what is due (full admin token). */
  adminRoutes(): AdminRoute[] {
    return [
      {
        method: 'GET',
        path: TLS_REPORTS_PATH,
        access: 'read',
        handle: async () => {
          const periods = this.#store.periods().map((period) => ({ begin: new Date(period.begin).toISOString(), end: new Date(period.end).toISOString(), dropped: period.dropped, domains: period.domains }));
          return { status: 200, body: { enabled: this.#config.tlsReporting.enabled, periods } };
        },
      },
      {
        method: 'POST',
        path: `${TLS_REPORTS_PATH}/send`,
        access: 'write',
        handle: async () => {
          if (!this.#config.tlsReporting.enabled) return { status: 409, body: { error: 'TLS reporting is off (tlsReporting.enabled)' } };
          return { status: 200, body: { reports: await this.#reporter.run(true) } };
        },
      },
    ];
  }

  async #submit(from: string, to: string, message: Buffer): Promise<void> {
    if (!this.#accept) throw new Error('the relay is not accepting mail yet');
    const config = this.#config;
    const virtualMta = config.tlsReporting.virtualMta;
    await this.#accept(
      {
        listener: 'tls-reporting',
        clientAddress: '127.0.0.1',
        heloName: config.hostname,
        protocol: 'ESMTP',
        mailFrom: from,
        recipients: [{ address: to, domain: to.slice(to.lastIndexOf('@') + 1).toLowerCase() }],
        eightBitMime: false,
        smtpUtf8: false,
        policy: RelayPolicy.parse({ name: 'tls-reporting', routing: virtualMta ? { defaultVirtualMta: virtualMta } : {} }),
      },
      message,
    );
  }
}
