// Accounting records, PowerMTA `acct` style: one record per recipient for each accepted message
// (`r`, when receipts are on) and for each delivery attempt (`d`, `b`, `t`), written as JSON
// lines and/or PowerMTA CSV to files (batched and fdatasync'ed, rotated and retained by
// accounting-file.ts) and/or stdout. The fields are defined in accounting-record.ts.
import type { AccountingConfig } from '../config/schema.ts';
import { AccountingFile } from './accounting-file.ts';
import { CSV_HEADER, csvRow, jsonLine, type AccountingRecord } from './accounting-record.ts';

export type { AccountingRecord } from './accounting-record.ts';

/** One file output: its path and format. */
export interface AccountingOutput {
  path: string;
  format: 'json' | 'csv';
}

type AccountingOptions = Partial<Pick<AccountingConfig, 'file' | 'csvFile' | 'stdout' | 'rotate' | 'retain' | 'syncInterval'>>;

const DEFAULT_SYNC_INTERVAL_MS = 200;

export class AccountingLog {
  readonly #files: { file: AccountingFile; kind: AccountingOutput['format']; format: (record: AccountingRecord) => string }[] = [];
  readonly #stdout: boolean;

  /**
   * `onError` hears about a file that cannot be opened or written (writing goes on to the other
   * outputs); `onSynced` about each batch made durable, with the file and its line count.
   */
  constructor(options: AccountingOptions, onError: (error: Error) => void = () => {}, onSynced?: (file: string, lines: number) => void) {
    const common = {
      ...(options.rotate?.maxBytes !== undefined ? { maxBytes: options.rotate.maxBytes } : {}),
      ...(options.rotate?.interval !== undefined ? { intervalMs: options.rotate.interval } : {}),
      ...(options.retain?.maxFiles !== undefined ? { maxFiles: options.retain.maxFiles } : {}),
      ...(options.retain?.maxAge !== undefined ? { maxAgeMs: options.retain.maxAge } : {}),
      syncIntervalMs: options.syncInterval ?? DEFAULT_SYNC_INTERVAL_MS,
      onError,
    };
    const add = (path: string | undefined, kind: AccountingOutput['format'], format: (record: AccountingRecord) => string, header?: string): void => {
      if (path === undefined) return;
      const file = new AccountingFile(path, { ...common, ...(header ? { header } : {}), ...(onSynced ? { onSynced: (lines: number) => onSynced(path, lines) } : {}) });
      this.#files.push({ file, kind, format });
    };
    add(options.file, 'json', jsonLine);
    add(options.csvFile, 'csv', csvRow, CSV_HEADER);
    this.#stdout = options.stdout ?? false;
  }

  write(record: AccountingRecord): void {
    for (const { file, format } of this.#files) file.append(format(record));
    if (this.#stdout) process.stdout.write(jsonLine(record));
  }

  /** The files written (stdout is not one: it keeps nothing). */
  outputs(): AccountingOutput[] {
    return this.#files.map(({ file, kind }) => ({ path: file.path, format: kind }));
  }

  /** A record for one file only (one that lost it in a crash: accounting-recovery.ts). */
  writeTo(path: string, record: AccountingRecord): void {
    for (const { file, format } of this.#files) if (file.path === path) file.append(format(record));
  }

  /** Resolves once every record written so far is durable, in the batches they are in (none is written early). */
  async synced(): Promise<void> {
    await Promise.all(this.#files.map(({ file }) => file.synced()));
  }

  /** Resolves once every record written so far is synced (or its failure reported). */
  async flush(): Promise<void> {
    await Promise.all(this.#files.map(({ file }) => file.flush()));
  }

  async close(): Promise<void> {
    await Promise.all(this.#files.map(({ file }) => file.close()));
  }
}
