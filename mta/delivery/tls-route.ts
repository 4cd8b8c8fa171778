// Which MX hosts a delivery may use and with which TLS session policy each, from the domain's
// settings: the configured tlsPolicy, its MTA-STS policy (RFC 8461) and DANE (RFC 7672). DANE
// takes precedence over MTA-STS where both exist (RFC 8461 §2): a host with validated TLSA
// records is authenticated by them; the other hosts follow MTA-STS when the domain enforces it,
// else `dane` falls back to opportunistic TLS and `dane-only` does not use them. A DNSSEC failure
// (bogus MX or TLSA) is a deferral, never a fall back to plain text.
// Each routed host carries the policy that governs it and each refusal its RFC 8460 result type,
// for the TLS-RPT counts (mta/reporting/).
import { domainDane, hostDane, type HostDane, type TlsaRecord } from './dane.ts';
import type { DnssecLookup } from './dnssec-lookup.ts';
import type { ResolvedDomainSettings, TlsPolicy } from './domain-settings.ts';
import { mxMatchesPolicy, type MtaStsResolver, type StsFetchFailure, type StsPolicy } from './mta-sts.ts';
import type { MxTarget } from './outbound-connection.ts';

/** The policy of one session: what a connection can do (the DANE policies become these per host). */
export type SessionTlsPolicy = Exclude<TlsPolicy, 'dane' | 'dane-only'>;

/** The policy that governs a host, as TLS-RPT reports it (RFC 8460 §4.2). */
export type AppliedTlsPolicy = { type: 'sts'; text: string; mx: string[] } | { type: 'tlsa'; records: TlsaRecord[] } | { type: 'no-policy-found' };

/**
 * A policy failure before any connection, with its RFC 8460 result type: a host (none: the
 * domain's MX RRset) refused by DANE, or an MTA-STS policy that could not be fetched.
 */
export interface PolicyRefusal {
  host?: string;
  result: 'dnssec-invalid' | 'dane-required' | 'sts-policy-fetch-error' | 'sts-policy-invalid' | 'sts-webpki-invalid';
  policy: AppliedTlsPolicy;
  reason?: string;
}

const STS_FAILURE_RESULTS: Record<StsFetchFailure['kind'], PolicyRefusal['result']> = { fetch: 'sts-policy-fetch-error', invalid: 'sts-policy-invalid', webpki: 'sts-webpki-invalid' };
const NO_TLSA: AppliedTlsPolicy = { type: 'tlsa', records: [] };

export interface RoutedTarget extends MxTarget {
  tlsPolicy: SessionTlsPolicy;
  /** TLSA records the certificate must match (DANE); the session then requires TLS. */
  dane?: TlsaRecord[];
  /** The policy of the recipient domain that applies to this host; none for a smarthost route. */
  policy?: AppliedTlsPolicy;
}

export type DaneResult = 'tlsa' | 'no_tlsa' | 'insecure' | 'dnssec_invalid';

export interface TlsRouteEvents {
  /** MX hosts outside an MTA-STS policy (enforce: not used; testing: reported). */
  stsMismatch(policy: StsPolicy): void;
  /** One DANE finding per host looked up. */
  dane(result: DaneResult, host: string, detail?: string): void;
}

export type TlsRoute = ({ ok: true; targets: RoutedTarget[] } | { ok: false; message: string }) & { refusals: PolicyRefusal[] };

export interface TlsRouteInputs {
  domain: string;
  settings: ResolvedDomainSettings;
  targets: readonly MxTarget[];
  mtaSts: MtaStsResolver;
  dnssec: DnssecLookup;
  events: TlsRouteEvents;
}

export function isDanePolicy(policy: TlsPolicy): policy is 'dane' | 'dane-only' {
  return policy === 'dane' || policy === 'dane-only';
}

export async function routeTls(inputs: TlsRouteInputs): Promise<TlsRoute> {
  const { domain, settings, targets, events } = inputs;
  let sts: StsPolicy | undefined;
  let reported: AppliedTlsPolicy | undefined = settings.smtpHost ? undefined : { type: 'no-policy-found' };
  const refusals: PolicyRefusal[] = [];
  if (settings.mtaSts && !settings.smtpHost) {
    const applied = await inputs.mtaSts.appliedFor(domain);
    sts = applied?.policy;
    if (applied && applied.policy.mode !== 'none') reported = { type: 'sts', text: applied.text, mx: applied.policy.mx };
    if (sts && sts.mode !== 'none' && targets.some((target) => !mxMatchesPolicy(target.name, sts!.mx))) events.stsMismatch(sts);
    const failure = applied ? undefined : inputs.mtaSts.fetchFailure(domain);
    if (failure) {
      // The domain announced a policy the relay could not get: that is the failure to report, not the sessions that follow.
      refusals.push({ result: STS_FAILURE_RESULTS[failure.kind], policy: { type: 'sts', text: '', mx: [] }, reason: failure.message });
      reported = undefined;
    }
  }
  const enforced = sts?.mode === 'enforce' ? sts : undefined;
  const withPolicy = (target: MxTarget, tlsPolicy: SessionTlsPolicy): RoutedTarget => ({ ...target, tlsPolicy, ...(reported ? { policy: reported } : {}) });
  /** A host without DANE: MTA-STS when enforced (only its hosts, verified), else the fallback. */
  const withoutDane = (target: MxTarget, fallback: SessionTlsPolicy): RoutedTarget | undefined => {
    if (!enforced) return withPolicy(target, fallback);
    return mxMatchesPolicy(target.name, enforced.mx) ? withPolicy(target, 'verify') : undefined;
  };
  const noneLeft = (why: string): TlsRoute => ({ ok: false, refusals, message: enforced ? `MTA-STS policy of ${domain} (enforce) matches none of its usable MX hosts (allowed: ${enforced.mx.join(', ')}); ${why}` : why });

  const policy = settings.tlsPolicy;
  if (!isDanePolicy(policy) || settings.smtpHost) {
    const session: SessionTlsPolicy = isDanePolicy(policy) ? 'required' : policy;
    const routed = targets.flatMap((target) => withoutDane(target, session) ?? []);
    return routed.length > 0 ? { ok: true, targets: routed, refusals } : noneLeft(`no MX host of ${domain} is usable`);
  }

  const domainState = await domainDane(inputs.dnssec, domain);
  if (domainState.kind === 'bogus-mx') {
    events.dane('dnssec_invalid', domain, domainState.message);
    return { ok: false, message: `DANE: ${domainState.message}`, refusals: [...refusals, { result: 'dnssec-invalid', policy: NO_TLSA }] };
  }
  if (domainState.kind === 'insecure-mx') {
    events.dane('insecure', domain, domainState.reason);
    if (policy === 'dane-only') return { ok: false, message: `dane-only: ${domainState.reason}, so no MX host can be authenticated`, refusals: [...refusals, { result: 'dane-required', policy: NO_TLSA }] };
    const routed = targets.flatMap((target) => withoutDane(target, 'opportunistic') ?? []);
    return routed.length > 0 ? { ok: true, targets: routed, refusals } : noneLeft(`no MX host of ${domain} is usable`);
  }

  const byHost = new Map<string, Promise<HostDane>>();
  const routed: RoutedTarget[] = [];
  const refused: string[] = [];
  for (const target of targets) {
    let lookup = byHost.get(target.name);
    if (!lookup) {
      lookup = hostDane(inputs.dnssec, target.name, target.port);
      byHost.set(target.name, lookup);
      void lookup.then((state) => {
        if (state.kind === 'tlsa') events.dane('tlsa', target.name);
        else if (state.kind === 'none') events.dane(state.reason === 'no-tlsa' ? 'no_tlsa' : 'insecure', target.name);
        else events.dane('dnssec_invalid', target.name, state.message);
      });
    }
    const state = await lookup;
    if (state.kind === 'tlsa') {
      routed.push({ ...target, tlsPolicy: 'required', dane: state.records, policy: { type: 'tlsa', records: state.records } });
    } else if (state.kind === 'unusable') {
      refused.push(`${target.name}: ${state.message}`);
      if (state.reason === 'dnssec-invalid') refusals.push({ host: target.name, result: 'dnssec-invalid', policy: NO_TLSA });
    } else if (policy === 'dane-only') {
      refusals.push({ host: target.name, result: 'dane-required', policy: NO_TLSA });
      refused.push(`${target.name}: no validated TLSA records (${state.reason === 'no-tlsa' ? 'none published' : 'insecure answer'}) and the policy is dane-only`);
    } else {
      const fallback = withoutDane(target, 'opportunistic');
      if (fallback) routed.push(fallback);
      else refused.push(`${target.name}: outside the MTA-STS policy`);
    }
  }
  if (routed.length > 0) return { ok: true, targets: routed, refusals };
  return { ok: false, refusals, message: `DANE: no usable MX host for ${domain}: ${[...new Set(refused)].join('; ')}` };
}
