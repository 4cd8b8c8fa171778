// The import report: one entry per PowerMTA directive or block read, saying whether it was mapped
// onto the resources exactly, approximated (with what differs), or refused (with why), so that
// nothing of the original configuration is dropped without a word.
import path from 'node:path';
import type { PmtaNode } from './powermta-config.ts';

export type Coverage = 'mapped' | 'approximated' | 'refused';

/** Directives whose value is a password. */
const SECRET_DIRECTIVES = new Set(['password', 'auth-password']);

export interface ImportNote {
  file: string;
  line: number;
  directive: string;
  coverage: Coverage;
  message: string;
}

export class ImportReport {
  readonly notes: ImportNote[] = [];
  /** Findings about the result as a whole (a VirtualMTA nothing routes to). */
  readonly warnings: string[] = [];

  mapped(node: PmtaNode, message: string): void {
    this.#add(node, 'mapped', message);
  }

  approximated(node: PmtaNode, message: string): void {
    this.#add(node, 'approximated', message);
  }

  refused(node: PmtaNode, message: string): void {
    this.#add(node, 'refused', message);
  }

  count(coverage: Coverage): number {
    return this.notes.filter((note) => note.coverage === coverage).length;
  }

  #add(node: PmtaNode, coverage: Coverage, message: string): void {
    // The report goes to a terminal and CI logs: a password's value is never part of it.
    const value = SECRET_DIRECTIVES.has(node.name) && node.value !== '' ? '(value not shown)' : node.value;
    const directive = node.children === undefined ? `${node.name} ${value}`.trim() : `<${node.name}${value === '' ? '' : ` ${value}`}>`;
    this.notes.push({ file: node.file, line: node.line, directive, coverage, message });
  }
}

/** The report as text: a summary line, then approximated and refused entries by file and line. */
export function formatReport(report: ImportReport, relativeTo: string): string {
  const order: Coverage[] = ['refused', 'approximated', 'mapped'];
  const sorted = [...report.notes].sort((a, b) => order.indexOf(a.coverage) - order.indexOf(b.coverage) || a.file.localeCompare(b.file) || a.line - b.line);
  const lines = sorted.map((note) => `  ${note.coverage.padEnd(12)} ${path.relative(relativeTo, note.file) || note.file}:${note.line}  ${note.directive}: ${note.message}`);
  const summary = `import: ${report.notes.length} directives and blocks: ${report.count('mapped')} mapped, ${report.count('approximated')} approximated, ${report.count('refused')} refused`;
  return [summary, ...report.warnings.map((warning) => `  warning      ${warning}`), ...lines].join('\n');
}
