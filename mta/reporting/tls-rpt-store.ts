// The TLS-RPT counts (RFC 8460): every delivery session's TLS outcome, aggregated per reporting
// period (a UTC day by default), per recipient policy domain and per applied policy, with the
// failures broken down by result type, sending IP and receiving MX. Kept in one JSON file on the
// spool volume (<spool>/state/tls-rpt.json) so a restart loses nothing that was saved: written
// atomically at most once per SAVE_DELAY_MS and on stop. Bounded: at most MAX_PERIODS periods,
// MAX_POLICIES policies per period (sessions of further policies are dropped and counted) and
// MAX_DETAILS failure rows per policy (further failures count in the summary only).
import { readFileSync } from 'node:fs';
import type { Logger } from 'pino';
import { z } from 'zod';
import { writeStateFileSync } from '../spool/state-file.ts';

/** The result types of RFC 8460 §4.3 (negotiation, DANE and MTA-STS failures). */
export const RESULT_TYPES = [
  'starttls-not-supported',
  'certificate-host-mismatch',
  'certificate-expired',
  'certificate-not-trusted',
  'validation-failure',
  'tlsa-invalid',
  'dnssec-invalid',
  'dane-required',
  'sts-policy-fetch-error',
  'sts-policy-invalid',
  'sts-webpki-invalid',
] as const;
export type ResultType = (typeof RESULT_TYPES)[number];
export const POLICY_TYPES = ['sts', 'tlsa', 'no-policy-found'] as const;

export const MAX_PERIODS = 8;
export const MAX_POLICIES = 2_000;
export const MAX_DETAILS = 100;
const SAVE_DELAY_MS = 1_000;

const ip = z.string().max(45);
const host = z.string().max(255);
const FailureDetail = z.object({
  result: z.enum(RESULT_TYPES),
  sendingIp: ip.optional(),
  mxHost: host.optional(),
  mxIp: ip.optional(),
  reasonCode: z.string().max(200).optional(),
});
const PolicyCounts = z.object({
  type: z.enum(POLICY_TYPES),
  strings: z.array(z.string().max(65_536)).max(1_000),
  mxHost: z.array(host).max(100),
  success: z.number().int().min(0),
  failure: z.number().int().min(0),
  details: z.array(FailureDetail.extend({ count: z.number().int().min(1) })).max(MAX_DETAILS),
});
const Period = z.object({
  begin: z.number().int(),
  end: z.number().int(),
  domains: z.record(host, z.array(PolicyCounts).max(MAX_POLICIES)),
  dropped: z.number().int().min(0).default(0),
});
const StoreFile = z.object({ version: z.literal(1), periods: z.array(Period).max(MAX_PERIODS), closedUntil: z.number().int().default(0) });

export type FailureDetail = z.infer<typeof FailureDetail>;
export type PolicyCounts = z.infer<typeof PolicyCounts>;
export type ReportPeriod = z.infer<typeof Period>;
/** Which policy a session was under: its type, the policy text lines or TLSA records, and the MX names it covers. */
export type PolicyKey = Pick<PolicyCounts, 'type' | 'strings' | 'mxHost'>;
export type SessionOutcome = { ok: true } | ({ ok: false } & FailureDetail);

function sameKey(a: PolicyKey, b: PolicyKey): boolean {
  return a.type === b.type && a.strings.join('\n') === b.strings.join('\n') && a.mxHost.join(',') === b.mxHost.join(',');
}

function sameDetail(a: FailureDetail, b: FailureDetail): boolean {
  return a.result === b.result && a.sendingIp === b.sendingIp && a.mxHost === b.mxHost && a.mxIp === b.mxIp && a.reasonCode === b.reasonCode;
}

export interface TlsRptStoreOptions {
  /** The state file; none keeps the counts in memory only. */
  file?: string;
  /** Length of a reporting period; periods are aligned to the epoch (24 h: UTC days). */
  intervalMs: number;
  logger?: Logger;
}

export class TlsRptStore {
  readonly file: string | undefined;
  #intervalMs: number;
  readonly #logger: Logger | undefined;
  #periods: ReportPeriod[];
  /** Where the last period ended early: no later period may begin before it. */
  #closedUntil = 0;
  #timer: NodeJS.Timeout | undefined;
  #dirty = false;

  constructor(options: TlsRptStoreOptions) {
    this.file = options.file;
    this.#intervalMs = options.intervalMs;
    this.#logger = options.logger;
    this.#periods = this.#load();
  }

  set intervalMs(value: number) {
    this.#intervalMs = value;
  }

  /** Count one session (or policy failure) of `domain` at time `at`. */
  record(domain: string, policy: PolicyKey, outcome: SessionOutcome, at: number): void {
    const period = this.#periodAt(at);
    const policies = (period.domains[domain] ??= []);
    let counts = policies.find((candidate) => sameKey(candidate, policy));
    if (!counts) {
      const total = Object.values(period.domains).reduce((sum, list) => sum + list.length, 0);
      if (total >= MAX_POLICIES) {
        if (policies.length === 0) delete period.domains[domain];
        period.dropped += 1;
        this.#changed();
        return;
      }
      counts = { type: policy.type, strings: [...policy.strings], mxHost: [...policy.mxHost], success: 0, failure: 0, details: [] };
      policies.push(counts);
    }
    if (outcome.ok) {
      counts.success += 1;
    } else {
      counts.failure += 1;
      const { ok: _ok, ...detail } = outcome;
      const row = counts.details.find((candidate) => sameDetail(candidate, detail));
      if (row) row.count += 1;
      else if (counts.details.length < MAX_DETAILS) counts.details.push({ ...detail, count: 1 });
    }
    this.#changed();
  }

  /**
   * Periods that have ended by `now`, oldest first. `closeOpen` ends the current period at `now`
   * (an early report): later sessions start a new period, so no session is reported twice.
   */
  ended(now: number, closeOpen = false): ReportPeriod[] {
    if (closeOpen) {
      const open = this.#periods.find((period) => period.begin <= now && now < period.end);
      if (open) {
        open.end = now;
        this.#closedUntil = now;
        this.#changed();
      }
    }
    return this.#periods.filter((period) => period.end <= now && Object.keys(period.domains).length > 0);
  }

  /** The domain's counts of that period are reported (or need no report): forget them. */
  done(period: ReportPeriod, domain: string, now: number): void {
    delete period.domains[domain];
    this.#periods = this.#periods.filter((candidate) => Object.keys(candidate.domains).length > 0 || candidate.end > now);
    this.#changed();
  }

  /** Every period held, for the admin API. */
  periods(): readonly ReportPeriod[] {
    return this.#periods;
  }

  /** Write pending changes now (on stop). */
  flush(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    if (!this.#dirty || !this.file) return;
    this.#dirty = false;
    try {
      writeStateFileSync(this.file, JSON.stringify({ version: 1, periods: this.#periods, closedUntil: this.#closedUntil }));
    } catch (error) {
      // A full disk or a read-only volume costs the report, never a delivery.
      this.#logger?.warn({ file: this.file, err: error }, 'TLS-RPT counts not saved');
    }
  }

  #periodAt(at: number): ReportPeriod {
    const found = this.#periods.find((period) => period.begin <= at && at < period.end);
    if (found) return found;
    const start = Math.floor(at / this.#intervalMs) * this.#intervalMs;
    // A period ended early (closeOpen) or a shorter interval: never overlap what was already counted.
    const begin = Math.max(start, this.#closedUntil <= at ? this.#closedUntil : start, ...this.#periods.filter((period) => period.end <= at).map((period) => period.end));
    const later = this.#periods.filter((period) => period.begin > at).map((period) => period.begin);
    const period: ReportPeriod = { begin, end: Math.min(start + this.#intervalMs, ...later), domains: {}, dropped: 0 };
    this.#periods.push(period);
    this.#periods.sort((a, b) => a.begin - b.begin);
    while (this.#periods.length > MAX_PERIODS) {
      const oldest = this.#periods.shift()!;
      this.#logger?.warn({ begin: new Date(oldest.begin).toISOString(), domains: Object.keys(oldest.domains).length }, 'TLS-RPT period dropped unreported: too many periods held');
    }
    return period;
  }

  #changed(): void {
    this.#dirty = true;
    if (!this.file) return;
    this.#timer ??= setTimeout(() => this.flush(), SAVE_DELAY_MS);
    this.#timer.unref();
  }

  #load(): ReportPeriod[] {
    if (!this.file) return [];
    let text: string;
    try {
      text = readFileSync(this.file, 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') this.#logger?.warn({ file: this.file, err: error }, 'TLS-RPT counts unreadable; starting empty');
      return [];
    }
    let raw: unknown;
    try {
      raw = JSON.parse(text);
    } catch (error) {
      this.#logger?.warn({ file: this.file, err: error }, 'TLS-RPT counts are not JSON; starting empty');
      return [];
    }
    const parsed = StoreFile.safeParse(raw);
    if (!parsed.success) {
      this.#logger?.warn({ file: this.file, problem: parsed.error.issues[0]?.message, path: parsed.error.issues[0]?.path.join('.') }, 'TLS-RPT counts have bad fields; starting empty');
      return [];
    }
    this.#closedUntil = parsed.data.closedUntil;
    return parsed.data.periods.sort((a, b) => a.begin - b.begin);
  }
}
