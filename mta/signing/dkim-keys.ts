// DKIM private keys: reading a key's PEM file, checking it fits its declared algorithm (the key
// type, and at least 2048 bits for rsa-sha256), and the public key record that must be published
// at <selector>._domainkey.<domain> (RFC 6376 §3.6.1; RFC 8463 §4 for ed25519, whose p= is the
// raw 32-byte key). Shared by the relay (signing), the operator (checking DNS) and the tests
// (serving the records).
import { createPrivateKey, createPublicKey, type KeyObject } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import type { DkimAlgorithm, DkimKeyConfig } from '../config/schema.ts';

export const MIN_RSA_BITS = 2048;
/** DER prefix of an Ed25519 SubjectPublicKeyInfo; the raw key follows it. */
const ED25519_SPKI_PREFIX_LENGTH = 12;

export class DkimKeyError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DkimKeyError';
  }
}

/** Why `key` cannot sign `algorithm` (wrong type, RSA under 2048 bits), or undefined when it can. */
export function dkimKeyProblem(key: { type: string | undefined; bits: number }, algorithm: DkimAlgorithm): string | undefined {
  const wanted = algorithm === 'rsa-sha256' ? 'rsa' : 'ed25519';
  if (key.type !== wanted) return `a ${key.type ?? 'unknown'} key cannot sign ${algorithm} (it needs an ${wanted} key)`;
  if (wanted === 'rsa' && key.bits < MIN_RSA_BITS) return `RSA key of ${key.bits} bits is too short; rsa-sha256 needs at least ${MIN_RSA_BITS} bits`;
  return undefined;
}

/** The private key in `pem`, checked against the algorithm; throws DkimKeyError naming what is wrong. */
export function parseDkimPrivateKey(pem: Buffer | string, algorithm: DkimAlgorithm, label: string): KeyObject {
  let key: KeyObject;
  try {
    key = createPrivateKey({ key: pem, format: 'pem' });
  } catch (error) {
    throw new DkimKeyError(`${label}: not a PEM private key (${(error as Error).message})`);
  }
  const problem = dkimKeyProblem({ type: key.asymmetricKeyType, bits: key.asymmetricKeyDetails?.modulusLength ?? 0 }, algorithm);
  if (problem) throw new DkimKeyError(`${label}: ${problem}`);
  return key;
}

/** What the operator keeps of a private key it finds in a Secret: type, size and public key, never the key itself. */
export interface PublicKeySummary {
  type: string | undefined;
  bits: number;
  /** The p= value a DKIM record of this key carries. */
  publicKey: string;
}

/** The summary of a PEM private key, or undefined when the bytes are not one. */
export function summarizePrivateKey(pem: Buffer): PublicKeySummary | undefined {
  if (!pem.includes('PRIVATE KEY-----')) return undefined;
  try {
    const key = createPrivateKey({ key: pem, format: 'pem' });
    return { type: key.asymmetricKeyType, bits: key.asymmetricKeyDetails?.modulusLength ?? 0, publicKey: dkimPublicKeyData(key) };
  } catch {
    return undefined;
  }
}

/** The p= value: base64 SubjectPublicKeyInfo for RSA, the raw public key for Ed25519. */
export function dkimPublicKeyData(key: KeyObject): string {
  const publicKey = key.type === 'public' ? key : createPublicKey(key);
  const der = publicKey.export({ type: 'spki', format: 'der' });
  return (publicKey.asymmetricKeyType === 'ed25519' ? der.subarray(ED25519_SPKI_PREFIX_LENGTH) : der).toString('base64');
}

/** The TXT record to publish for a key. */
export function dkimPublicKeyRecord(key: KeyObject): string {
  const type = key.asymmetricKeyType === 'ed25519' ? 'ed25519' : 'rsa';
  return `v=DKIM1; k=${type}; p=${dkimPublicKeyData(key)}`;
}

/** Tag list of a DKIM key record ("v=DKIM1; k=rsa; p=..."), tag names lower-cased, whitespace removed from values. */
export function parseDkimRecord(text: string): Map<string, string> {
  const tags = new Map<string, string>();
  for (const part of text.split(';')) {
    const equals = part.indexOf('=');
    if (equals < 0) continue;
    tags.set(part.slice(0, equals).trim().toLowerCase(), part.slice(equals + 1).replace(/\s+/g, ''));
  }
  return tags;
}

/** The DNS name a key's record lives at. */
export function dkimRecordName(selector: string, domain: string): string {
  return `${selector}._domainkey.${domain}`;
}

export interface LoadedDkimKey {
  config: DkimKeyConfig;
  privateKey: KeyObject;
}

/** Reads and checks one configured key; `label` names it in errors (e.g. `pool.dkim.keys[0]`). */
export async function loadDkimKey(config: DkimKeyConfig, label: string): Promise<LoadedDkimKey> {
  let pem: Buffer;
  try {
    pem = await readFile(config.keyFile);
  } catch (error) {
    throw new DkimKeyError(`${label}.keyFile: cannot read ${config.keyFile}: ${(error as Error).message}`);
  }
  return { config, privateKey: parseDkimPrivateKey(pem, config.algorithm, `${label}.keyFile (${config.keyFile}, ${config.domain} selector ${config.selector})`) };
}
