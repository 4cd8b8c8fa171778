// PowerMTA DKIM directives -> the VirtualMtaPool's DKIM fields (docs/dkim.md):
//   domain-key SELECTOR,DOMAIN,KEYFILE   top level: a key of spec.dkim.keys; inside <virtual-mta>:
//                                        one of that VirtualMTA's dkimKeys. The PEM goes into a
//                                        Secret of its own (key "private.pem"), read from KEYFILE
//                                        when the importer can read it (relative to the file that
//                                        names it), its algorithm taken from the key itself.
//   dkim-sign yes|no                     the relay signs every message whose From domain has a key,
//                                        whatever its destination: `yes` is that; `no` cannot be
//                                        said per destination and is approximated.
//   dkim-identity                        refused: no i= tag is written.
import { createPrivateKey } from 'node:crypto';
import path from 'node:path';
import { DEFAULT_DKIM_SECRET_KEY } from '../api/dkim.ts';
import { hostname } from '../api/fields.ts';
import type { PmtaNode } from './powermta-config.ts';
import type { ImportReport } from './powermta-report.ts';
import { pmtaBoolean } from './powermta-values.ts';

/** Reads a key file named by the configuration; undefined when it cannot be read here. */
export type ReadKeyFile = (file: string) => string | undefined;

export interface ImportedDkimKey {
  key: { domain: string; selector: string; algorithm: 'rsa-sha256' | 'ed25519-sha256'; secretName: string };
  /** The Secret holding the key: its PEM, or '' to be filled from the key file. */
  secret: { name: string; pem: string };
}

const SELECTOR = /^[A-Za-z0-9_]([-A-Za-z0-9_]{0,61}[A-Za-z0-9_])?(\.[A-Za-z0-9_]([-A-Za-z0-9_]{0,61}[A-Za-z0-9_])?)*$/;

/** Where keys go ("spec.dkim.keys", "dkimKeys of VirtualMTA mta1"), and the (domain, selector) pairs it has. */
export interface DkimScope {
  name: string;
  /** Put before the domain in Secret names: the pool's name, plus the VirtualMTA's for its own keys. */
  secretPrefix: string;
  seen: Set<string>;
}

/** One `domain-key`; reports it and returns the key, or undefined when it is refused. */
export function convertDomainKey(node: PmtaNode, scope: DkimScope, readKeyFile: ReadKeyFile | undefined, report: ImportReport): ImportedDkimKey | undefined {
  const parts = node.value.split(',').map((part) => part.trim());
  if (parts.length !== 3 || parts.some((part) => part === '')) {
    report.refused(node, 'domain-key takes SELECTOR,DOMAIN,KEYFILE');
    return undefined;
  }
  const [selector, domain, keyFile] = parts as [string, string, string];
  if (!hostname.safeParse(domain).success) {
    report.refused(node, `"${domain}" is not a signing domain: a key signs for one domain (d=), so "*" and patterns have no equivalent`);
    return undefined;
  }
  if (!SELECTOR.test(selector)) {
    report.refused(node, `"${selector}" is not a DKIM selector (letters, digits, "-" and "_" in dot-separated labels)`);
    return undefined;
  }
  const id = `${domain.toLowerCase()} ${selector}`;
  if (scope.seen.has(id)) {
    report.refused(node, `a second key for d=${domain.toLowerCase()}, s=${selector} in ${scope.name}; the first one is kept`);
    return undefined;
  }
  scope.seen.add(id);
  const secretName = `${scope.secretPrefix}-${domain}-${selector}`.toLowerCase().replace(/[^a-z0-9.-]/g, '-').slice(0, 253).replace(/[-.]+$/, '');
  const file = path.resolve(path.dirname(node.file), keyFile);
  const pem = readKeyFile?.(file);
  const where = `${scope.name} (d=${domain.toLowerCase()}, s=${selector})`;
  if (pem === undefined) {
    report.approximated(node, `${where}, algorithm rsa-sha256, key in Secret ${secretName}: ${keyFile} could not be read here, so fill it: kubectl create secret generic ${secretName} --from-file=${DEFAULT_DKIM_SECRET_KEY}=${keyFile} (set algorithm: ed25519-sha256 for an Ed25519 key)`);
    return { key: { domain: domain.toLowerCase(), selector, algorithm: 'rsa-sha256', secretName }, secret: { name: secretName, pem: '' } };
  }
  let algorithm: ImportedDkimKey['key']['algorithm'];
  try {
    const type = createPrivateKey(pem).asymmetricKeyType;
    if (type === 'rsa') algorithm = 'rsa-sha256';
    else if (type === 'ed25519') algorithm = 'ed25519-sha256';
    else {
      report.refused(node, `${keyFile} holds a ${type} key; DKIM signs with RSA (rsa-sha256) or Ed25519 (ed25519-sha256) keys`);
      return undefined;
    }
  } catch (error) {
    report.refused(node, `${keyFile} is not a PEM private key (${(error as Error).message})`);
    return undefined;
  }
  report.mapped(node, `${where}, algorithm ${algorithm} (from the key), key in Secret ${secretName}`);
  return { key: { domain: domain.toLowerCase(), selector, algorithm, secretName }, secret: { name: secretName, pem } };
}

/** `dkim-sign` at the top level, in a <virtual-mta> or a <domain> block. */
export function reportDkimSign(node: PmtaNode, report: ImportReport): void {
  if (pmtaBoolean(node.value)) {
    report.mapped(node, 'the relay signs every message whose From domain has a key (spec.dkim.keys or the VirtualMTA\'s dkimKeys)');
  } else {
    report.approximated(node, 'signing is not switched off per destination or VirtualMTA: a message whose From domain has a key is signed; leave the key out to stop signing for that domain');
  }
}
