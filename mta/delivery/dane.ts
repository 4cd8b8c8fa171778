// DANE for SMTP (RFC 7672 over RFC 6698): which MX hosts of a domain have DNSSEC-validated TLSA
// records, and whether a server's certificate chain matches them.
//   - The MX RRset must be validated (AD) for its host names to be trusted as reference
//     identities; an insecure MX RRset means no DANE for the domain (RFC 7672 §2.2.1).
//   - TLSA at _PORT._tcp.<mx host>: validated records -> DANE for that host; validated denial or
//     an insecure answer -> no DANE for that host; a bogus answer (the resolver's SERVFAIL) or a
//     failed lookup -> that host is not used at all (never a fall back to plain text, §2.2).
//   - Usable records: DANE-TA(2) and DANE-EE(3), selector 0 (certificate) or 1 (SPKI), matching
//     0 (exact), 1 (SHA-256) or 2 (SHA-512). DANE-EE ignores names and dates (§3.1.1); DANE-TA
//     needs a chain from the leaf to the matching certificate and the MX host name in the leaf
//     (§3.1.2, the reference identity). PKIX-TA(0)/PKIX-EE(1) are unusable in SMTP (§3.1.3): a host
//     whose records are all unusable still gets mandatory, unauthenticated TLS.
import { createHash, X509Certificate } from 'node:crypto';
import type { DnssecLookup } from './dnssec-lookup.ts';

export interface TlsaRecord {
  usage: number;
  selector: number;
  matchingType: number;
  data: Buffer;
}

/** What DANE says about one MX host. */
export type HostDane =
  | { kind: 'tlsa'; records: TlsaRecord[] }
  | { kind: 'none'; reason: 'insecure' | 'no-tlsa' }
  | { kind: 'unusable'; reason: 'dnssec-invalid' | 'lookup-failed'; message: string };

/** What DANE says about a domain. */
export type DomainDane = { kind: 'insecure-mx'; reason: string } | { kind: 'bogus-mx'; message: string } | { kind: 'secure-mx' };

export const DANE_TA = 2;
export const DANE_EE = 3;

export function isUsable(record: TlsaRecord): boolean {
  return (record.usage === DANE_TA || record.usage === DANE_EE) && (record.selector === 0 || record.selector === 1) && [0, 1, 2].includes(record.matchingType);
}

/** Whether the MX RRset of a domain is validated. */
export async function domainDane(lookup: DnssecLookup, domain: string): Promise<DomainDane> {
  if (!lookup.configured) return { kind: 'insecure-mx', reason: 'no validating resolver is configured (delivery.dnssecResolvers)' };
  try {
    const answer = await lookup.query(domain, 'MX');
    if (answer.rcode === 'SERVFAIL') return { kind: 'bogus-mx', message: `MX of ${domain}: the validating resolver answered SERVFAIL (DNSSEC validation failed or the zone is unreachable)` };
    if (!answer.authenticated) return { kind: 'insecure-mx', reason: `the MX records of ${domain} are not DNSSEC-validated` };
    return { kind: 'secure-mx' };
  } catch (error) {
    return { kind: 'bogus-mx', message: (error as Error).message };
  }
}

/** TLSA records of one MX host and port. */
export async function hostDane(lookup: DnssecLookup, host: string, port: number): Promise<HostDane> {
  const name = `_${port}._tcp.${host.replace(/\.$/, '')}`;
  try {
    const answer = await lookup.query(name, 'TLSA');
    if (answer.rcode === 'SERVFAIL') return { kind: 'unusable', reason: 'dnssec-invalid', message: `TLSA ${name}: the validating resolver answered SERVFAIL (a bogus DNSSEC signature)` };
    if (!answer.authenticated) return { kind: 'none', reason: 'insecure' };
    if (answer.rcode !== 'NOERROR' && answer.rcode !== 'NXDOMAIN') return { kind: 'unusable', reason: 'lookup-failed', message: `TLSA ${name}: ${answer.rcode}` };
    const records = answer.records.flatMap((record) => {
      const data = (record as { data?: unknown }).data as { usage?: number; selector?: number; matchingType?: number; certificate?: Buffer };
      return data.certificate ? [{ usage: data.usage ?? -1, selector: data.selector ?? -1, matchingType: data.matchingType ?? -1, data: data.certificate }] : [];
    });
    return records.length > 0 ? { kind: 'tlsa', records } : { kind: 'none', reason: 'no-tlsa' };
  } catch (error) {
    return { kind: 'unusable', reason: 'lookup-failed', message: (error as Error).message };
  }
}

function selected(certificate: X509Certificate, selector: number): Buffer {
  return selector === 0 ? certificate.raw : certificate.publicKey.export({ type: 'spki', format: 'der' });
}

function matches(certificate: X509Certificate, record: TlsaRecord): boolean {
  const content = selected(certificate, record.selector);
  const digest = record.matchingType === 0 ? content : createHash(record.matchingType === 1 ? 'sha256' : 'sha512').update(content).digest();
  return digest.equals(record.data);
}

export type DaneVerdict = { ok: true; usage: 'dane-ee' | 'dane-ta' | 'unauthenticated' } | { ok: false; reason: string };

/**
 * Does the chain the server presented (leaf first) match the host's TLSA records?
 * `referenceNames` are the names a DANE-TA leaf may carry (the MX host name).
 */
export function verifyDane(chain: readonly X509Certificate[], records: readonly TlsaRecord[], referenceNames: readonly string[]): DaneVerdict {
  const usable = records.filter(isUsable);
  if (usable.length === 0) return { ok: true, usage: 'unauthenticated' };
  const [leaf] = chain;
  if (!leaf) return { ok: false, reason: 'the server presented no certificate' };
  if (usable.some((record) => record.usage === DANE_EE && matches(leaf, record))) return { ok: true, usage: 'dane-ee' };
  for (const record of usable.filter((candidate) => candidate.usage === DANE_TA)) {
    const anchorIndex = chain.findIndex((certificate) => matches(certificate, record));
    if (anchorIndex < 0) continue;
    if (!chainsTo(chain, anchorIndex)) continue;
    if (!referenceNames.some((name) => leaf.checkHost(name.replace(/\.$/, ''), { subject: 'default' }) !== undefined)) {
      return { ok: false, reason: `the certificate chains to the DANE-TA anchor but names none of ${referenceNames.join(', ')}` };
    }
    const now = Date.now();
    if (Date.parse(leaf.validTo) < now || Date.parse(leaf.validFrom) > now) return { ok: false, reason: `the certificate is outside its validity (${leaf.validFrom} - ${leaf.validTo})` };
    return { ok: true, usage: 'dane-ta' };
  }
  return { ok: false, reason: `no TLSA record (${usable.map((record) => `${record.usage} ${record.selector} ${record.matchingType}`).join(', ')}) matches the certificate chain` };
}

/** Each certificate from the leaf up to the anchor is issued and signed by the next. */
function chainsTo(chain: readonly X509Certificate[], anchorIndex: number): boolean {
  for (let index = 0; index < anchorIndex; index += 1) {
    const child = chain[index]!;
    const issuer = chain[index + 1]!;
    if (!child.checkIssued(issuer) || !child.verify(issuer.publicKey)) return false;
  }
  return true;
}
