// Reading a PowerMTA configuration file into a tree: one node per directive (`name value...`) or
// block (`<name args>` ... `</name>`), with the file and line it came from, `include` resolved
// (relative to the including file, `*` and `?` wildcards in the last path part, loops refused).
// Syntax only: what the directives mean is powermta-import.ts's concern.
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';

export interface PmtaNode {
  /** Directive or block name, lower-case ("smtp-source-host", "virtual-mta"). */
  name: string;
  /** The words after the name (a block's words are those inside `<...>`). */
  args: string[];
  /** The rest of the line after the name, as written (for values with spaces, like regexes). */
  value: string;
  /** Children of a block; undefined for a plain directive. */
  children?: PmtaNode[];
  file: string;
  line: number;
}

export class PmtaSyntaxError extends Error {
  constructor(file: string, line: number, message: string, excerpt?: string) {
    super(`${file}:${line}: ${message}${excerpt === undefined ? '' : `\n  ${line} | ${excerpt}`}`);
    this.name = 'PmtaSyntaxError';
  }
}

interface OpenBlock {
  node: PmtaNode;
  excerpt: string;
}

/** Reads FILE and every file it includes. Throws PmtaSyntaxError naming file and line. */
export function readPowerMtaConfig(file: string): PmtaNode[] {
  return readFileNodes(path.resolve(file), []);
}

/** Parses configuration text; `include` lines are resolved against `file`'s folder. */
export function parsePowerMtaConfig(text: string, file: string, includeStack: string[] = []): PmtaNode[] {
  const root: PmtaNode[] = [];
  const open: OpenBlock[] = [];
  const lines = text.split(/\r?\n/);
  lines.forEach((raw, index) => {
    const lineNumber = index + 1;
    const line = stripComment(raw).trim();
    if (line === '') return;
    const target = open.at(-1)?.node.children ?? root;
    const closing = /^<\/\s*([A-Za-z0-9-]+)\s*>$/.exec(line);
    if (closing) {
      const name = closing[1]!.toLowerCase();
      const block = open.pop();
      if (!block) throw new PmtaSyntaxError(file, lineNumber, `</${name}> closes no open block`, raw);
      if (block.node.name !== name) throw new PmtaSyntaxError(file, lineNumber, `</${name}> closes <${block.node.name}> opened at line ${block.node.line}`, raw);
      return;
    }
    if (line.startsWith('<')) {
      const opening = /^<\s*([A-Za-z0-9-]+)\s*([^>]*)>$/.exec(line);
      if (!opening) throw new PmtaSyntaxError(file, lineNumber, 'a block opens as <name argument>', raw);
      const value = opening[2]!.trim();
      const node: PmtaNode = { name: opening[1]!.toLowerCase(), args: words(value), value, children: [], file, line: lineNumber };
      target.push(node);
      open.push({ node, excerpt: raw });
      return;
    }
    const directive = /^([A-Za-z0-9-]+)(?:\s+(.*))?$/.exec(line);
    if (!directive) throw new PmtaSyntaxError(file, lineNumber, 'a directive is a name followed by its value', raw);
    const name = directive[1]!.toLowerCase();
    const value = (directive[2] ?? '').trim();
    if (name === 'include') {
      if (value === '') throw new PmtaSyntaxError(file, lineNumber, 'include needs a file name', raw);
      for (const included of expandInclude(path.resolve(path.dirname(file), value), file, lineNumber)) {
        target.push(...readFileNodes(included, [...includeStack, file]));
      }
      return;
    }
    target.push({ name, args: words(value), value, file, line: lineNumber });
  });
  const unclosed = open.pop();
  if (unclosed) throw new PmtaSyntaxError(file, unclosed.node.line, `<${unclosed.node.name}> is never closed (</${unclosed.node.name}> missing)`, unclosed.excerpt);
  return root;
}

function readFileNodes(file: string, includeStack: string[]): PmtaNode[] {
  if (includeStack.includes(file)) throw new PmtaSyntaxError(includeStack.at(-1) ?? file, 0, `include loop: ${[...includeStack, file].join(' -> ')}`);
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    throw new PmtaSyntaxError(includeStack.at(-1) ?? file, 0, `cannot read ${file}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
  }
  return parsePowerMtaConfig(text, file, includeStack);
}

/** `# comment` to the end of the line, where `#` starts a word (a regex like /a#b/ keeps it). */
function stripComment(line: string): string {
  const match = /(^|\s)#/.exec(line);
  return match ? line.slice(0, match.index) : line;
}

function words(value: string): string[] {
  return value === '' ? [] : value.split(/\s+/);
}

function expandInclude(pattern: string, file: string, line: number): string[] {
  const base = path.basename(pattern);
  if (!/[*?]/.test(base)) return [pattern];
  const folder = path.dirname(pattern);
  const matcher = new RegExp(`^${base.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.')}$`);
  let names: string[];
  try {
    names = readdirSync(folder);
  } catch (error) {
    throw new PmtaSyntaxError(file, line, `cannot list ${folder} for include ${pattern}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
  }
  // PowerMTA reads wildcard includes in name order; an empty match includes nothing.
  return names.filter((name) => matcher.test(name)).sort().map((name) => path.join(folder, name));
}
