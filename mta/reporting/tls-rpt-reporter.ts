// Sends the TLS reports: once a reporting period has ended (and on an admin request, which ends
// the current period early), for each policy domain with counts it looks up _smtp._tls.<domain>,
// builds the RFC 8460 report and sends it to every rua: mailto: through the relay's own spool,
// https: by POST. A domain without a TLSRPT record gets no report and its counts are dropped; a
// DNS failure or a report some destination did not take is tried again RETRY_AFTER_MS later (at
// most the interval; an admin request tries at once), until the period is MAX_RETRY_MS old.
// Runs never overlap.
import type { Logger } from 'pino';
import type { TlsReportingConfig } from '../config/schema.ts';
import { postReport } from './tls-rpt-https.ts';
import { composeReportMail } from './tls-rpt-mail.ts';
import { parseTlsRptRecords, reportRecordName, type ReportDestination } from './tls-rpt-record.ts';
import { buildReport } from './tls-rpt-report.ts';
import type { ReportPeriod, TlsRptStore } from './tls-rpt-store.ts';

const MAX_RETRY_MS = 3 * 86_400_000;
const RETRY_AFTER_MS = 30 * 60_000;
const MIN_CHECK_MS = 1_000;
const MAX_CHECK_MS = 5 * 60_000;

export interface TlsReporterOptions {
  store: TlsRptStore;
  /** The settings in force (hot reload swaps them). */
  settings: () => TlsReportingConfig;
  /** This pod's name, part of every report-id. */
  instance: string;
  resolveTxt(name: string): Promise<string[]>;
  resolveHost(host: string): Promise<string[]>;
  /** Queue a message into the relay's own spool (signed as accepted mail is). */
  submitMail(from: string, to: string, message: Buffer): Promise<void>;
  /** CA bundle of tlsReporting.https.trustedCaFile, read by the caller. */
  trustedCa?: () => Buffer | undefined;
  now: () => number;
  logger: Logger;
}

export interface DestinationResult {
  uri: string;
  ok: boolean;
  error?: string;
}

export interface ReportRun {
  domain: string;
  begin: string;
  end: string;
  reportId?: string;
  fileName?: string;
  /** Why no report was sent (no TLSRPT record, DNS failure). */
  skipped?: string;
  destinations: DestinationResult[];
}

function describe(destination: ReportDestination): string {
  return destination.kind === 'mailto' ? `mailto:${destination.address}` : destination.url.href;
}

export class TlsReporter {
  readonly #options: TlsReporterOptions;
  #timer: NodeJS.Timeout | undefined;
  #running: Promise<ReportRun[]> | undefined;
  /** Destinations that took a report already, so a retry sends only to the others. */
  readonly #delivered = new Set<string>();
  /** When a domain's report of a period that failed may be tried again ("begin\0domain"). */
  readonly #retryAt = new Map<string, number>();

  constructor(options: TlsReporterOptions) {
    this.#options = options;
  }

  /** Check for ended periods every so often (a quarter of the interval, 1 s to 5 min); again after the interval changed. */
  start(): void {
    clearInterval(this.#timer);
    const every = Math.min(MAX_CHECK_MS, Math.max(MIN_CHECK_MS, Math.floor(this.#options.settings().interval / 4)));
    this.#timer = setInterval(() => {
      if (this.#options.settings().enabled) void this.run(false).catch((error: Error) => this.#options.logger.error({ err: error }, 'TLS-RPT run failed'));
    }, every);
    this.#timer.unref();
  }

  async stop(): Promise<void> {
    clearInterval(this.#timer);
    await this.#running?.catch(() => undefined);
  }

  /** Send what is due; `closeOpen` ends the current period now and reports it too. */
  run(closeOpen: boolean): Promise<ReportRun[]> {
    const previous = this.#running ?? Promise.resolve([]);
    const next = previous.catch(() => []).then(() => this.#run(closeOpen));
    this.#running = next;
    return next;
  }

  async #run(closeOpen: boolean): Promise<ReportRun[]> {
    const { store, now } = this.#options;
    const runs: ReportRun[] = [];
    for (const period of store.ended(now(), closeOpen)) {
      for (const domain of Object.keys(period.domains)) {
        const key = `${period.begin}\u0000${domain}`;
        if (!closeOpen && (this.#retryAt.get(key) ?? 0) > now()) continue;
        const run = await this.#report(period, domain);
        if (period.domains[domain]) this.#retryAt.set(key, now() + Math.min(RETRY_AFTER_MS, this.#options.settings().interval));
        else this.#retryAt.delete(key);
        runs.push(run);
      }
    }
    store.flush();
    return runs;
  }

  async #report(period: ReportPeriod, domain: string): Promise<ReportRun> {
    const { store, now, logger } = this.#options;
    const settings = this.#options.settings();
    const run: ReportRun = { domain, begin: new Date(period.begin).toISOString(), end: new Date(period.end).toISOString(), destinations: [] };
    const giveUp = now() - period.end > MAX_RETRY_MS;
    let records: string[];
    try {
      records = await this.#options.resolveTxt(reportRecordName(domain));
    } catch (error) {
      run.skipped = `TLSRPT record lookup failed: ${(error as Error).message}`;
      if (giveUp) store.done(period, domain, now());
      return run;
    }
    const record = parseTlsRptRecords(records);
    if (!record.ok) {
      run.skipped = `${reportRecordName(domain)}: ${record.reason}`;
      store.done(period, domain, now());
      return run;
    }
    const report = buildReport(period, domain, period.domains[domain] ?? [], { submitter: settings.submitter!, contactInfo: settings.contactInfo!, instance: this.#options.instance });
    Object.assign(run, { reportId: report.reportId, fileName: report.fileName });
    for (const destination of record.destinations) {
      const uri = describe(destination);
      const key = `${report.reportId}\u0000${uri}`;
      if (this.#delivered.has(key)) {
        run.destinations.push({ uri, ok: true });
        continue;
      }
      try {
        await this.#send(destination, domain, report, settings);
        this.#delivered.add(key);
        run.destinations.push({ uri, ok: true });
      } catch (error) {
        run.destinations.push({ uri, ok: false, error: (error as Error).message });
      }
    }
    const sent = run.destinations.filter((destination) => destination.ok).length;
    logger.info({ domain, reportId: report.reportId, sent, failed: run.destinations.length - sent, destinations: run.destinations }, 'TLS report sent');
    if (sent === run.destinations.length || giveUp) {
      store.done(period, domain, now());
      for (const key of [...this.#delivered]) if (key.startsWith(`${report.reportId}\u0000`)) this.#delivered.delete(key);
    }
    return run;
  }

  async #send(destination: ReportDestination, domain: string, report: ReturnType<typeof buildReport>, settings: TlsReportingConfig): Promise<void> {
    if (destination.kind === 'https') {
      const ca = this.#options.trustedCa?.();
      await postReport(destination.url, report, {
        resolveHost: this.#options.resolveHost,
        allowPrivateAddresses: settings.https.allowPrivateAddresses,
        timeoutMs: settings.https.timeout,
        ...(ca ? { ca } : {}),
      });
      return;
    }
    const from = settings.from ?? `noreply-tlsrpt@${settings.submitter}`;
    const message = composeReportMail({ from, to: destination.address, policyDomain: domain, submitter: settings.submitter!, report, date: new Date(this.#options.now()) });
    await this.#options.submitMail(from, destination.address, message);
  }
}
