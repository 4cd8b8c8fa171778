// DKIM canonicalization and the DKIM-Signature field (RFC 6376 §3.4, §3.5, §3.7; RFC 8463 for
// ed25519-sha256), on the raw bytes of a message with CRLF line ends. Header fields, and bodies
// that relaxed canonicalization must rewrite, are worked on as latin1 strings so every byte
// (8-bit content included) maps to one character and back unchanged; native `includes` scans
// let every other body be hashed as the bytes it is.
import { createHash, sign as signCallback, type KeyObject } from 'node:crypto';
import { promisify } from 'node:util';
import type { DkimAlgorithm } from '../config/schema.ts';

const signAsync = promisify(signCallback);

export type BodyCanonicalization = 'simple' | 'relaxed';
export type HeaderCanonicalization = 'simple' | 'relaxed';

/** A header field as it is in the message: name and the whole field with its folded lines and final CRLF. */
export interface RawHeaderField {
  name: string;
  /** latin1 bytes of the field, ending with CRLF. */
  raw: string;
}

const CRLF = Buffer.from('\r\n');

/** Whether relaxed body canonicalization changes anything: a tab, two spaces, or a space before a line end. */
function needsRelaxing(body: Buffer): boolean {
  return body.includes(0x09) || body.includes('  ') || body.includes(' \r\n') || body[body.length - 1] === 0x20;
}

/**
 * The canonical body (§3.4.3 simple, §3.4.4 relaxed) as slices to hash: the body itself when
 * it needs no rewriting (most do not), without its trailing empty lines, then one CRLF.
 */
export function canonicalBody(body: Buffer, mode: BodyCanonicalization): Buffer[] {
  let bytes = body;
  if (mode === 'relaxed' && needsRelaxing(bytes)) {
    const relaxed = bytes.toString('latin1').replace(/[ \t]+\r\n/g, '\r\n').replace(/[ \t]+/g, ' ');
    bytes = Buffer.from(relaxed.endsWith(' ') ? relaxed.slice(0, -1) : relaxed, 'latin1');
  }
  let end = bytes.length;
  while (end >= 2 && bytes[end - 1] === 0x0a && bytes[end - 2] === 0x0d) end -= 2;
  if (end === 0) return mode === 'simple' ? [CRLF] : [];
  return [bytes.subarray(0, end), CRLF];
}

export function bodyHash(body: Buffer, mode: BodyCanonicalization): string {
  const hash = createHash('sha256');
  for (const part of canonicalBody(body, mode)) hash.update(part);
  return hash.digest('base64');
}

/** One field canonicalized (§3.4.1 simple: as is; §3.4.2 relaxed: lower-case name, unfolded, single spaces). */
export function canonicalHeader(field: RawHeaderField, mode: HeaderCanonicalization): string {
  if (mode === 'simple') return field.raw;
  const colon = field.raw.indexOf(':');
  const value = field.raw
    .slice(colon + 1)
    .replace(/\r\n/g, '')
    .replace(/[ \t]+/g, ' ')
    .replace(/^ | $/g, '');
  return `${field.raw.slice(0, colon).replace(/[ \t]+$/, '').toLowerCase()}:${value}\r\n`;
}

/**
 * The h= list and the fields it selects, in order: every present instance of each listed name
 * (bottom-up, as §5.4.2 has verifiers pick them), plus one more entry for each oversigned name
 * so a field of that name cannot be added without breaking the signature.
 */
export function selectHeaders(fields: readonly RawHeaderField[], names: readonly string[], oversign: readonly string[]): { h: string[]; selected: RawHeaderField[] } {
  const h: string[] = [];
  const selected: RawHeaderField[] = [];
  const extra = new Set(oversign.map((name) => name.toLowerCase()));
  const seen = new Set<string>();
  for (const name of names) {
    const lower = name.toLowerCase();
    if (seen.has(lower)) continue;
    seen.add(lower);
    for (let index = fields.length - 1; index >= 0; index--) {
      const field = fields[index]!;
      if (field.name.toLowerCase() !== lower) continue;
      h.push(name);
      selected.push(field);
    }
    if (extra.has(lower)) h.push(name);
  }
  return { h, selected };
}

export interface SignatureRequest {
  algorithm: DkimAlgorithm;
  header: HeaderCanonicalization;
  body: BodyCanonicalization;
  domain: string;
  selector: string;
  privateKey: KeyObject;
  /** Unix seconds. */
  timestamp: number;
  expiration?: number;
  headerNames: readonly string[];
  oversign: readonly string[];
  /** Base64 body hash for `body` canonicalization (shared by signatures with the same canonicalization). */
  bodyHash: string;
}

/** Folds a tag list into lines of at most ~78 characters with CRLF TAB, never inside a tag value. */
function foldTags(prefix: string, tags: string[]): string {
  let out = prefix;
  let lineLength = prefix.length;
  tags.forEach((tag, index) => {
    const piece = index === tags.length - 1 ? tag : `${tag};`;
    if (lineLength + 1 + piece.length > 78 && lineLength > 0) {
      out += '\r\n\t';
      lineLength = 1;
    } else {
      out += ' ';
      lineLength += 1;
    }
    out += piece;
    lineLength += piece.length;
  });
  return out;
}

/** The whole DKIM-Signature field (with its CRLF), signed over the selected header fields. */
export async function signatureField(fields: readonly RawHeaderField[], request: SignatureRequest): Promise<string> {
  const { h, selected } = selectHeaders(fields, request.headerNames, request.oversign);
  const tags = [
    'v=1',
    `a=${request.algorithm}`,
    `c=${request.header}/${request.body}`,
    `d=${request.domain}`,
    `s=${request.selector}`,
    `t=${request.timestamp}`,
    ...(request.expiration !== undefined ? [`x=${request.expiration}`] : []),
    `h=${h.join(':')}`,
    `bh=${request.bodyHash}`,
    'b=',
  ];
  // Everything up to "b=" is exactly what goes into the message, so simple header
  // canonicalization hashes the same bytes the verifier sees (with b= emptied, §3.7).
  const unsigned = foldTags('DKIM-Signature:', tags);
  const canonicalSelf = canonicalHeader({ name: 'DKIM-Signature', raw: unsigned }, request.header);
  const data = Buffer.from(selected.map((field) => canonicalHeader(field, request.header)).join('') + (request.header === 'relaxed' ? canonicalSelf.replace(/\r\n$/, '') : unsigned), 'latin1');
  const signature =
    request.algorithm === 'rsa-sha256'
      ? await signAsync('sha256', data, request.privateKey)
      : // RFC 8463 §3: Ed25519 signs the SHA-256 hash of the canonicalized data.
        await signAsync(null, createHash('sha256').update(data).digest(), request.privateKey);
  return `${unsigned}${foldValue(signature.toString('base64'))}\r\n`;
}

/** The b= value in chunks of 72 on continuation lines (whitespace inside b= is ignored by verifiers, §3.5). */
function foldValue(value: string): string {
  const chunks: string[] = [];
  for (let offset = 0; offset < value.length; offset += 72) chunks.push(value.slice(offset, offset + 72));
  return chunks.join('\r\n\t');
}
