// Edits of an accepted message's header section, done on the raw bytes without copying the body:
// finds the header fields (with their folded continuation lines) up to the blank line that ends
// the header section, takes out every X-Virtual-MTA field (always, honoured or not, so the
// routing hint never leaks to the next hop) and every job header field (X-Job by default: the
// job id goes to accounting, not to the recipient), and puts a new trace header in front. The result is
// a list of slices of the original message, for a vectored write.
// Input has CRLF line ends (inbound rejects bare CR and LF before the message gets here).
const SPACE = 0x20;
const TAB = 0x09;
const COLON = 0x3a;
const CRLF = Buffer.from('\r\n');

export const VIRTUAL_MTA_HEADER = 'x-virtual-mta';

export interface HeaderEdit {
  /** The edited message: the prepended header, then slices of the original message. */
  chunks: Buffer[];
  /** Unfolded, trimmed values of the X-Virtual-MTA fields that were removed, top first. */
  virtualMtaHeaders: string[];
  /** Unfolded, trimmed values of the job header fields that were removed, top first. */
  jobHeaders: string[];
  /** Offset in the original message where the header section ends (start of the blank line, or of the body). */
  headerEnd: number;
  /** The original message's header fields that were kept (all but X-Virtual-MTA and the job header), top first. */
  keptFields: HeaderField[];
}

export interface HeaderField {
  start: number;
  end: number;
  nameEnd: number;
}

/** Field name of a line starting at `start` (printable ASCII up to ":", obsolete spaces before the colon allowed), or -1 when it is not a header field. */
function fieldNameEnd(message: Buffer, start: number, lineEnd: number): number {
  let position = start;
  while (position < lineEnd && message[position] !== COLON) {
    const byte = message[position] ?? 0;
    if (byte <= SPACE || byte > 0x7e) break;
    position++;
  }
  const nameEnd = position;
  if (nameEnd === start) return -1;
  while (position < lineEnd && (message[position] === SPACE || message[position] === TAB)) position++;
  return message[position] === COLON ? nameEnd : -1;
}

/** The header fields of the message and where its header section ends. */
export function parseHeaderFields(message: Buffer): { fields: HeaderField[]; headerEnd: number } {
  const fields: HeaderField[] = [];
  let position = 0;
  let current: HeaderField | undefined;
  while (position < message.length) {
    const newline = message.indexOf(CRLF, position);
    const lineEnd = newline < 0 ? message.length : newline + 2;
    if (newline === position) break; // the blank line
    const first = message[position];
    if (first === SPACE || first === TAB) {
      if (!current) break; // a continuation with no field before it: not a header section
      current.end = lineEnd;
    } else {
      const nameEnd = fieldNameEnd(message, position, lineEnd);
      if (nameEnd < 0) break; // body text without a blank line before it
      current = { start: position, end: lineEnd, nameEnd };
      fields.push(current);
    }
    position = lineEnd;
  }
  return { fields, headerEnd: position };
}

export function unfoldedValue(message: Buffer, field: HeaderField): string {
  const colon = message.indexOf(COLON, field.nameEnd);
  return message
    .toString('utf8', colon + 1, field.end)
    .replace(/\r\n/g, '')
    .trim();
}

/** `jobHeader`: name of the job id field (any case); omitted = none is taken out. */
export function editHeaders(message: Buffer, prepend: Buffer, jobHeader?: string): HeaderEdit {
  const { fields, headerEnd } = parseHeaderFields(message);
  const chunks: Buffer[] = [prepend];
  const virtualMtaHeaders: string[] = [];
  const jobHeaders: string[] = [];
  const keptFields: HeaderField[] = [];
  const jobField = jobHeader?.toLowerCase();
  let copiedUpTo = 0;
  for (const field of fields) {
    const fieldName = message.toString('latin1', field.start, field.nameEnd).toLowerCase();
    const removedInto = fieldName === VIRTUAL_MTA_HEADER ? virtualMtaHeaders : fieldName === jobField ? jobHeaders : undefined;
    if (!removedInto) {
      keptFields.push(field);
      continue;
    }
    removedInto.push(unfoldedValue(message, field));
    if (field.start > copiedUpTo) chunks.push(message.subarray(copiedUpTo, field.start));
    copiedUpTo = field.end;
  }
  if (copiedUpTo < message.length) chunks.push(message.subarray(copiedUpTo));
  return { chunks, virtualMtaHeaders, jobHeaders, headerEnd, keptFields };
}
