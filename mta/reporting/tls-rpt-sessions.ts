// What the delivery engine tells TLS-RPT: the TLS outcome of each outbound session (established
// with TLS, sent in clear, or refused by a TLS failure) and each host DANE refused before
// connecting, turned into RFC 8460 result types and counted in the store under the policy that
// applied (tls-route.ts). Connection failures that are not about TLS (refused, timed out) are
// transient and not reported (RFC 8460 §4.3.4); smarthost routes have no policy domain.
import { ConnectionFailure, type MxTarget, type TlsOutcome } from '../delivery/outbound-connection.ts';
import type { AppliedTlsPolicy, RoutedTarget, TlsRoute } from '../delivery/tls-route.ts';
import type { PolicyKey, ResultType, SessionOutcome, TlsRptStore } from './tls-rpt-store.ts';

const REASON_LENGTH = 200;

/** The report's view of a policy: STS text lines and MX patterns, or the TLSA records of one host. */
export function policyKey(policy: AppliedTlsPolicy, host: string | undefined): PolicyKey {
  if (policy.type === 'sts') return { type: 'sts', strings: policy.text.split(/\r?\n/).map((line) => line.trim()).filter(Boolean), mxHost: [...policy.mx] };
  if (policy.type === 'tlsa') return { type: 'tlsa', strings: policy.records.map((record) => `${record.usage} ${record.selector} ${record.matchingType} ${record.data.toString('hex')}`), mxHost: host ? [host] : [] };
  return { type: 'no-policy-found', strings: [], mxHost: [] };
}

/** The RFC 8460 result type of a TLS failure, from the connection's message. */
export function resultTypeOf(message: string): ResultType {
  if (/DANE: no TLSA record/.test(message)) return 'tlsa-invalid';
  if (/names none of|altnames|does not match|host ?name mismatch/i.test(message)) return 'certificate-host-mismatch';
  if (/expired|outside its validity|not yet valid/i.test(message)) return 'certificate-expired';
  if (/self[- ]signed|unable to (get|verify)|local issuer|not trusted|unknown ca/i.test(message)) return 'certificate-not-trusted';
  if (/STARTTLS|not encrypted/i.test(message)) return 'starttls-not-supported';
  return 'validation-failure';
}

export class TlsSessionRecorder {
  readonly #store: TlsRptStore;
  readonly #now: () => number;
  readonly #enabled: () => boolean;

  /** `enabled` false: nothing is counted (reporting is off). */
  constructor(store: TlsRptStore, now: () => number, enabled: () => boolean = () => true) {
    this.#store = store;
    this.#now = now;
    this.#enabled = enabled;
  }

  /** Policy failures before any connection: DANE refusals (bogus DNSSEC, dane-only without TLSA), an MTA-STS policy not had. */
  route(domain: string, sendingIp: string | undefined, route: TlsRoute): void {
    if (!this.#enabled()) return;
    for (const refusal of route.refusals) {
      const outcome: SessionOutcome = {
        ok: false,
        result: refusal.result,
        ...(sendingIp ? { sendingIp } : {}),
        ...(refusal.host ? { mxHost: refusal.host } : {}),
        ...(refusal.reason ? { reasonCode: refusal.reason.slice(0, REASON_LENGTH) } : {}),
      };
      this.#store.record(domain, policyKey(refusal.policy, refusal.host), outcome, this.#now());
    }
  }

  /** One session: the TLS it got once open, or the failure that ended it before mail. */
  session(domain: string, sendingIp: string | undefined, target: RoutedTarget, result: TlsOutcome | ConnectionFailure): void {
    if (!target.policy || target.tlsPolicy === 'none' || !this.#enabled()) return;
    let outcome: SessionOutcome;
    if (result instanceof ConnectionFailure) {
      if (result.kind !== 'tls') return;
      outcome = this.#failure(target, sendingIp, result.message);
    } else {
      outcome = result.kind === 'tls' ? { ok: true } : this.#failure(target, sendingIp, 'STARTTLS not offered: the session went in clear');
    }
    this.#store.record(domain, policyKey(target.policy, target.name), outcome, this.#now());
  }

  #failure(target: MxTarget, sendingIp: string | undefined, message: string): SessionOutcome {
    const reason = message.replace(/^TLS failure with \S+: /, '').slice(0, REASON_LENGTH);
    return { ok: false, result: resultTypeOf(message), ...(sendingIp ? { sendingIp } : {}), mxHost: target.name.replace(/\.$/, ''), mxIp: target.address, reasonCode: reason };
  }
}
