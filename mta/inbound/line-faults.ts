// The byte-level rules of the SMTP wire that smtp-server does not enforce, shared by command
// lines and the DATA section: every line ends in CRLF (no bare CR, no bare LF), no NUL byte,
// and (message content) no line longer than RFC 5322's 998 octets. smtp-server splits command
// lines at /\r?\n/ and drops the terminator, so a bare LF cannot be told from CRLF once a line is
// split; BareLineFeedMarker therefore puts a NUL in front of every bare LF before the parser
// sees the bytes. A NUL is refused wherever it appears, so the mark makes the line refused in
// both modes without changing where lines or the data end: `\n.\n` becomes `\0\n.\0\n`, which
// still holds no <CRLF>.<CRLF>.
const CR = 0x0d;
const LF = 0x0a;
const NUL = 0x00;

/** RFC 5322 §2.1.1: a line is at most 998 octets, not counting its CRLF. */
export const MAX_LINE_OCTETS = 998;

/** Puts a NUL before every LF not preceded by CR; carries a chunk's last CR to the next chunk. */
export class BareLineFeedMarker {
  private previousWasCr = false;

  mark(chunk: Buffer): Buffer {
    if (chunk.length === 0) return chunk;
    let marked: Buffer[] | undefined;
    let start = 0;
    for (let index = chunk.indexOf(LF); index !== -1; index = chunk.indexOf(LF, index + 1)) {
      const before = index === 0 ? (this.previousWasCr ? CR : -1) : chunk[index - 1];
      if (before === CR) continue;
      (marked ??= []).push(chunk.subarray(start, index), Buffer.of(NUL));
      start = index;
    }
    this.previousWasCr = chunk[chunk.length - 1] === CR;
    if (!marked) return chunk;
    marked.push(chunk.subarray(start));
    return Buffer.concat(marked);
  }
}

export type CommandLineFault = 'bare-line-feed' | 'nul' | 'bare-carriage-return';

/**
 * Why a command line (as smtp-server hands it over, terminator removed) must be refused, or
 * null. A line ending in NUL is what BareLineFeedMarker makes of a line ended by a bare LF.
 */
export function commandLineFault(line: Buffer): CommandLineFault | null {
  const nul = line.indexOf(NUL);
  if (nul === line.length - 1 && nul !== -1) return 'bare-line-feed';
  if (nul !== -1) return 'nul';
  if (line.indexOf(CR) !== -1) return 'bare-carriage-return';
  return null;
}

export type ContentFault = 'bare-line-ending' | 'nul' | 'line-too-long';

/**
 * Scans a message's DATA section chunk by chunk (as the data stream delivers it, dot-stuffing
 * already removed) and keeps the first fault of each kind. A bare line ending outranks the
 * others in `fault()`, as it is the material of smuggling.
 */
export class ContentScanner {
  private previousWasCr = false;
  /** Octets of the current line so far, a trailing CR included. */
  private lineLength = 0;
  private bareLineEnding = false;
  private nul = false;
  private lineTooLong = false;

  scan(chunk: Buffer): void {
    if (chunk.length === 0) return;
    if (this.previousWasCr && chunk[0] !== LF) this.bareLineEnding = true;
    let lineStart = 0;
    for (let index = chunk.indexOf(LF); index !== -1; index = chunk.indexOf(LF, index + 1)) {
      const before = index === 0 ? (this.previousWasCr ? CR : -1) : chunk[index - 1];
      if (before !== CR) this.bareLineEnding = true;
      const octets = this.lineLength + (index - lineStart) - (before === CR ? 1 : 0);
      if (octets > MAX_LINE_OCTETS) this.lineTooLong = true;
      this.lineLength = 0;
      lineStart = index + 1;
    }
    this.lineLength += chunk.length - lineStart;
    const last = chunk[chunk.length - 1];
    // A line still open may yet end in CRLF: its CR is not content.
    if (this.lineLength - (last === CR ? 1 : 0) > MAX_LINE_OCTETS) this.lineTooLong = true;
    for (let index = chunk.indexOf(CR); index !== -1 && index < chunk.length - 1; index = chunk.indexOf(CR, index + 1)) {
      if (chunk[index + 1] !== LF) this.bareLineEnding = true;
    }
    if (chunk.indexOf(NUL) !== -1) this.nul = true;
    this.previousWasCr = last === CR;
  }

  /** The fault of the whole section; call once it has ended (it ends with the CRLF before the dot). */
  fault(): ContentFault | null {
    if (this.bareLineEnding || this.previousWasCr) return 'bare-line-ending';
    if (this.nul) return 'nul';
    if (this.lineTooLong) return 'line-too-long';
    return null;
  }
}
