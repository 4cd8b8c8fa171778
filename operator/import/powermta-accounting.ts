// PowerMTA `<acct-file PATH>` -> spec.accounting of the pool: the file is CSV as PowerMTA writes
// it (so format csv, on the spool volume instead of PATH), `records` decides receipts (r),
// `move-interval` / `max-size` the rotation, `delete-after` the retention by age. The fixed field
// set of docs/accounting.md replaces `record-fields`; what has no equivalent is reported.
import type { z } from 'zod';
import type { AccountingSpec } from '../api/virtual-mta-pool.ts';
import type { PmtaNode } from './powermta-config.ts';
import type { ImportReport } from './powermta-report.ts';
import { pmtaDuration } from './powermta-values.ts';

type AccountingInput = z.input<typeof AccountingSpec>;

/** The accounting spec of one acct-file node (block or one-line directive), reported child by child. */
export function importAcctFile(node: PmtaNode, report: ImportReport): AccountingInput {
  const spec: AccountingInput = { format: 'csv' };
  const rotate: NonNullable<AccountingInput['rotate']> = {};
  for (const child of node.children ?? []) {
    try {
      switch (child.name) {
        case 'records': {
          const types = child.value.split(/[\s,]+/).filter(Boolean).map((type) => type.toLowerCase());
          spec.receipts = types.some((type) => type === 'r' || type === 'receipt');
          const unknown = types.filter((type) => !KNOWN_RECORDS.has(type));
          if (unknown.length > 0) report.approximated(child, `records ${unknown.join(', ')} are not written; accounting has r, d, b and t records (spec.accounting.receipts: ${spec.receipts})`);
          else report.mapped(child, `spec.accounting.receipts: ${spec.receipts} (d, b and t records are always written)`);
          break;
        }
        case 'move-interval':
          rotate.interval = pmtaDuration(child.value);
          report.mapped(child, `spec.accounting.rotate.interval: ${rotate.interval}`);
          break;
        case 'max-size':
          rotate.size = pmtaSize(child.value);
          report.mapped(child, `spec.accounting.rotate.size: ${rotate.size}`);
          break;
        case 'delete-after':
          spec.retain = { maxAge: pmtaDuration(child.value) };
          report.mapped(child, `spec.accounting.retain.maxAge: ${spec.retain.maxAge}`);
          break;
        case 'record-fields':
          report.approximated(child, 'the records carry the fixed field set of docs/accounting.md (PowerMTA names in CSV)');
          break;
        default:
          report.refused(child, 'no equivalent in spec.accounting');
      }
    } catch (error) {
      report.refused(child, (error as Error).message);
    }
  }
  if (rotate.interval !== undefined || rotate.size !== undefined) spec.rotate = rotate;
  report.approximated(node, `spec.accounting.format: csv, written to accounting/acct.csv on each pod's spool volume instead of ${node.args[0] ?? node.value}`);
  return spec;
}

const KNOWN_RECORDS: ReadonlySet<string> = new Set(['r', 'receipt', 'd', 'delivery', 'b', 'bounce', 't', 'transient']);

/** "50M", "1G", "500K", "1048576" (bytes) -> a Kubernetes quantity in binary units. */
function pmtaSize(value: string): string {
  const match = /^(\d+)([KMG]?)B?$/i.exec(value.trim());
  if (!match) throw new Error(`"${value}" is not a size such as 500K, 50M or 1G`);
  const unit = match[2]!.toUpperCase();
  return unit === '' ? match[1]! : `${match[1]}${unit === 'K' ? 'Ki' : unit === 'M' ? 'Mi' : 'Gi'}`;
}
