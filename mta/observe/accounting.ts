// Accounting records, PowerMTA `acct` style: one JSON line per delivery attempt and recipient,
// written to a file (appended) and/or stdout, for billing, deliverability analysis and audits.
import { createWriteStream, type WriteStream } from 'node:fs';
import type { PortFallback } from '../delivery/smarthost-memory.ts';

export interface AccountingRecord {
  /** ISO time the attempt finished. */
  time: string;
  queueId: string;
  virtualMta: string;
  sourceAddress: string | null;
  sender: string;
  recipient: string;
  domain: string;
  mxHost: string | null;
  mxIp: string | null;
  result: 'delivered' | 'deferred' | 'bounced';
  /** RFC 3463 status. */
  dsnStatus: string;
  diagnostic: string;
  bounceCategory: string | null;
  /** 1 for the first attempt of this recipient. */
  attempt: number;
  tlsVersion: string | null;
  tlsCipher: string | null;
  durationMs: number;
  /** Smarthost routes only, when the port used was not the first of the list: each port passed over and why (mta/delivery/smarthost-memory.ts). */
  portFallbacks?: PortFallback[];
}

export class AccountingLog {
  private readonly file: WriteStream | undefined;
  private readonly stdout: boolean;

  /** `onError` hears about a file that cannot be opened or written; writing goes on to stdout if enabled. */
  constructor(options: { file?: string; stdout?: boolean }, onError: (error: Error) => void = () => {}) {
    this.file = options.file ? createWriteStream(options.file, { flags: 'a' }) : undefined;
    this.file?.on('error', onError);
    this.stdout = options.stdout ?? false;
  }

  write(record: AccountingRecord): void {
    if (!this.file && !this.stdout) return;
    const line = `${JSON.stringify(record)}\n`;
    this.file?.write(line);
    if (this.stdout) process.stdout.write(line);
  }

  async close(): Promise<void> {
    const file = this.file;
    if (file && !file.destroyed) await new Promise<void>((resolve) => file.end(() => resolve()));
  }
}
