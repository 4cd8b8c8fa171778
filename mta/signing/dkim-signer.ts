// Which DKIM keys sign an accepted message, and the DKIM-Signature fields to put on top of it.
// The key is chosen by the domain of the header From (RFC 5322.From, the identity DMARC aligns
// with): the VirtualMTA's own keys for that domain, else the pool's; failing both, the keys of
// the domain's organizational domain (public suffix list) when `organizationalDomain` is on.
// Every key found signs (an rsa-sha256 and an ed25519-sha256 key of one domain give the dual
// signatures RFC 8463 suggests). A message with no key, or no usable From, goes unsigned and is
// counted by reason. Keys are read and checked when a config is loaded: a bad key refuses the
// whole config version, so the previous keys keep signing. An authenticated user's message is
// signed only when its From domain is one the user may send from.
import { domainToASCII } from 'node:url';
import addressparser from 'nodemailer/lib/addressparser';
import { getDomain } from 'tldts';
import type { DkimCanonicalization, RuntimeConfig } from '../config/schema.ts';
import { domainMatchesAny } from '../inbound/relay-policy.ts';
import type { RelayMetrics } from '../observe/metrics.ts';
import type { HeaderEdit } from '../routing/message-headers.ts';
import { unfoldedValue } from '../routing/message-headers.ts';
import { bodyHash, signatureField, type BodyCanonicalization, type HeaderCanonicalization, type RawHeaderField } from './dkim-canonical.ts';
import { loadDkimKey, type LoadedDkimKey } from './dkim-keys.ts';

export type DkimMatch = 'direct' | 'organizational';
export type UnsignedReason = 'no_key' | 'no_from_domain' | 'from_not_allowed' | 'signing_failed';

export type SignOutcome =
  | { kind: 'signed'; fields: Buffer; match: DkimMatch; domain: string; signatures: number }
  | { kind: 'unsigned'; reason: UnsignedReason; error?: Error };

type KeysByDomain = Map<string, LoadedDkimKey[]>;

function byDomain(keys: LoadedDkimKey[]): KeysByDomain {
  const map: KeysByDomain = new Map();
  for (const key of keys) map.set(key.config.domain, [...(map.get(key.config.domain) ?? []), key]);
  return map;
}

/** The domain of the single From address, in A-label lower case; undefined when there is none or more than one. */
export function fromDomain(message: Buffer, edit: HeaderEdit): string | undefined {
  const fromFields = edit.keptFields.filter((field) => message.toString('latin1', field.start, field.nameEnd).toLowerCase() === 'from');
  if (fromFields.length !== 1) return undefined;
  const addresses = addressparser(unfoldedValue(message, fromFields[0]!), { flatten: true });
  if (addresses.length !== 1) return undefined;
  const address = addresses[0]?.address ?? '';
  const at = address.lastIndexOf('@');
  if (at < 1) return undefined;
  const domain = domainToASCII(address.slice(at + 1).replace(/\.$/, '').toLowerCase());
  return domain === '' ? undefined : domain;
}

export class DkimSigner {
  readonly #settings: RuntimeConfig['pool']['dkim'];
  readonly #poolKeys: KeysByDomain;
  readonly #vmtaKeys: Map<string, KeysByDomain>;
  readonly #metrics: RelayMetrics | undefined;
  readonly #now: () => Date;
  readonly #hasKeys: boolean;

  private constructor(config: RuntimeConfig, poolKeys: KeysByDomain, vmtaKeys: Map<string, KeysByDomain>, metrics: RelayMetrics | undefined, now: () => Date) {
    this.#settings = config.pool.dkim;
    this.#poolKeys = poolKeys;
    this.#vmtaKeys = vmtaKeys;
    this.#metrics = metrics;
    this.#now = now;
    this.#hasKeys = poolKeys.size > 0 || [...vmtaKeys.values()].some((keys) => keys.size > 0);
  }

  /** Reads every key of the config; throws DkimKeyError naming the field, file and problem. */
  static async load(config: RuntimeConfig, metrics?: RelayMetrics, now: () => Date = () => new Date()): Promise<DkimSigner> {
    const poolKeys = await Promise.all(config.pool.dkim.keys.map((key, index) => loadDkimKey(key, `pool.dkim.keys[${index}]`)));
    const vmtaKeys = new Map<string, KeysByDomain>();
    for (const [vmtaIndex, vmta] of config.pool.virtualMtas.entries()) {
      const keys = await Promise.all(vmta.dkimKeys.map((key, index) => loadDkimKey(key, `pool.virtualMtas[${vmtaIndex}].dkimKeys[${index}]`)));
      vmtaKeys.set(vmta.name, byDomain(keys));
    }
    return new DkimSigner(config, byDomain(poolKeys), vmtaKeys, metrics, now);
  }

  #keysFor(domain: string, virtualMta: string): LoadedDkimKey[] | undefined {
    const own = this.#vmtaKeys.get(virtualMta)?.get(domain);
    return own && own.length > 0 ? own : this.#poolKeys.get(domain);
  }

  /** The keys that sign mail from `domain` sent through `virtualMta`, and how they matched. */
  choose(domain: string, virtualMta: string): { keys: LoadedDkimKey[]; match: DkimMatch; signingDomain: string } | undefined {
    const direct = this.#keysFor(domain, virtualMta);
    if (direct) return { keys: direct, match: 'direct', signingDomain: domain };
    if (!this.#settings.organizationalDomain) return undefined;
    const organizational = getDomain(domain, { allowPrivateDomains: true });
    if (!organizational || organizational === domain) return undefined;
    const parent = this.#keysFor(organizational, virtualMta);
    return parent ? { keys: parent, match: 'organizational', signingDomain: organizational } : undefined;
  }

  /**
   * The DKIM-Signature fields for `message` after the relay's header edits (the fields kept in
   * `edit` and the unchanged body), or why it stays unsigned. Counts either outcome.
   * `allowedFromDomains` (an authenticated user's sender domains) keeps the relay from signing a
   * From the user may not use: the key of another customer's domain is never lent out.
   */
  async sign(message: Buffer, edit: HeaderEdit, virtualMta: string, allowedFromDomains?: readonly string[]): Promise<SignOutcome> {
    const outcome = await this.#sign(message, edit, virtualMta, allowedFromDomains);
    if (outcome.kind === 'unsigned') this.#metrics?.dkimUnsigned.inc({ reason: outcome.reason });
    return outcome;
  }

  async #sign(message: Buffer, edit: HeaderEdit, virtualMta: string, allowedFromDomains: readonly string[] | undefined): Promise<SignOutcome> {
    // A pool without keys signs nothing: no need to parse the From of every message to say so.
    if (!this.#hasKeys) return { kind: 'unsigned', reason: 'no_key' };
    const domain = fromDomain(message, edit);
    if (!domain) return { kind: 'unsigned', reason: 'no_from_domain' };
    if (allowedFromDomains && !domainMatchesAny(domain, allowedFromDomains)) return { kind: 'unsigned', reason: 'from_not_allowed' };
    const chosen = this.choose(domain, virtualMta);
    if (!chosen) return { kind: 'unsigned', reason: 'no_key' };
    const hasBlankLine = message[edit.headerEnd] === 0x0d && message[edit.headerEnd + 1] === 0x0a;
    const body = message.subarray(hasBlankLine ? edit.headerEnd + 2 : edit.headerEnd);
    const fields: RawHeaderField[] = edit.keptFields.map((field) => ({ name: message.toString('latin1', field.start, field.nameEnd), raw: message.toString('latin1', field.start, field.end) }));
    const settings = this.#settings;
    const timestamp = Math.floor(this.#now().getTime() / 1000);
    const expiration = settings.expireAfter !== undefined ? timestamp + Math.ceil(settings.expireAfter / 1000) : undefined;
    const bodyHashes = new Map<BodyCanonicalization, string>();
    try {
      const signed: string[] = [];
      for (const key of chosen.keys) {
        const [header, bodyMode] = splitCanonicalization(key.config.canonicalization ?? settings.canonicalization);
        let hash = bodyHashes.get(bodyMode);
        if (hash === undefined) bodyHashes.set(bodyMode, (hash = bodyHash(body, bodyMode)));
        signed.push(
          await signatureField(fields, {
            algorithm: key.config.algorithm,
            header,
            body: bodyMode,
            domain: chosen.signingDomain,
            selector: key.config.selector,
            privateKey: key.privateKey,
            timestamp,
            ...(expiration !== undefined ? { expiration } : {}),
            headerNames: settings.headers,
            oversign: settings.oversignHeaders,
            bodyHash: hash,
          }),
        );
      }
      for (const key of chosen.keys) this.#metrics?.dkimSignatures.inc({ match: chosen.match, algorithm: key.config.algorithm });
      return { kind: 'signed', fields: Buffer.from(signed.join(''), 'latin1'), match: chosen.match, domain: chosen.signingDomain, signatures: signed.length };
    } catch (error) {
      return { kind: 'unsigned', reason: 'signing_failed', error: error as Error };
    }
  }
}

function splitCanonicalization(value: DkimCanonicalization): [HeaderCanonicalization, BodyCanonicalization] {
  const [header, body] = value.split('/') as [HeaderCanonicalization, BodyCanonicalization];
  return [header, body];
}
