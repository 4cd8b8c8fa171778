// The accounting record: the one place that defines its fields, as a JSON line (the record
// itself, keys as below) and as a CSV row the way PowerMTA's acct-file writes it (RFC 4180,
// a header line of PowerMTA field names, the record type first). A new field is one property of
// AccountingRecord and one row of CSV_COLUMNS.
import type { PortFallback } from '../delivery/smarthost-memory.ts';
import type { Envelope, QueueId, RelayGrant } from '../spool/types.ts';

/** PowerMTA record types: r received (one per recipient of an accepted message), d delivered, b bounced, t transient (deferred). */
export type AccountingRecordType = 'r' | 'd' | 'b' | 't';


export interface AccountingRecord {
  type: AccountingRecordType;
  /** ISO time the record was made: the attempt finished, or the message was accepted. */
  time: string;
  /** ISO time the message was accepted (written to the spool). */
  timeQueued: string;
  queueId: string;
  virtualMta: string;
  pool: string;
  /** The pool's namespace, when the operator rendered it. */
  tenant: string | null;
  /** AUTH user name of the session that submitted the message. */
  user: string | null;
  relayGrant: RelayGrant | null;
  /** Job or campaign id from the job header (X-Job by default). */
  jobId: string | null;
  /** ENVID of MAIL FROM (RFC 3461). */
  envId: string | null;
  listener: string;
  clientAddress: string;
  /** EHLO/HELO name the submitting client gave. */
  heloName: string | null;
  sourceAddress: string | null;
  sender: string;
  recipient: string;
  /** ORCPT of RCPT TO (RFC 3461). */
  orcpt: string | null;
  domain: string;
  mxHost: string | null;
  mxIp: string | null;
  result: 'received' | 'delivered' | 'deferred' | 'bounced';
  /** RFC 3464 Action of the recipient; null for a receipt. */
  dsnAction: 'relayed' | 'delayed' | 'failed' | null;
  /** RFC 3463 status. */
  dsnStatus: string;
  diagnostic: string;
  bounceCategory: string | null;
  /** Attempts made for this recipient, this one included (0 in a receipt). */
  attempt: number;
  /** Bytes of the stored message. */
  size: number;
  tlsVersion: string | null;
  tlsCipher: string | null;
  durationMs: number;
  /** Smarthost routes only, when the port used was not the first of the list: each port passed over and why (mta/delivery/smarthost-memory.ts). */
  portFallbacks?: PortFallback[];
}

export const RECORD_TYPE_OF_RESULT: Readonly<Record<AccountingRecord['result'], AccountingRecordType>> = { received: 'r', delivered: 'd', bounced: 'b', deferred: 't' };

type CsvColumn = readonly [name: string, value: (record: AccountingRecord) => string | number | null];
const field = (key: Exclude<keyof AccountingRecord, 'portFallbacks'>) => (record: AccountingRecord) => record[key];

/**
 * CSV columns in order: PowerMTA's names for what it also records (users' billing scripts index
 * by these), then this relay's own fields under their JSON names.
 */
const CSV_COLUMNS: readonly CsvColumn[] = [
  ['type', field('type')],
  ['timeLogged', (record) => powerMtaTime(record.time)],
  ['timeQueued', (record) => powerMtaTime(record.timeQueued)],
  ['orig', field('sender')],
  ['rcpt', field('recipient')],
  ['orcpt', field('orcpt')],
  ['dsnAction', field('dsnAction')],
  ['dsnStatus', field('dsnStatus')],
  ['dsnDiag', field('diagnostic')],
  ['dsnMta', field('mxHost')],
  ['bounceCat', field('bounceCategory')],
  ['srcType', () => 'smtp'],
  ['srcMta', field('heloName')],
  ['dlvType', (record) => (record.type === 'r' ? null : 'smtp')],
  ['dlvSourceIp', field('sourceAddress')],
  ['dlvDestinationIp', field('mxIp')],
  ['dlvSize', field('size')],
  ['vmta', field('virtualMta')],
  ['jobId', field('jobId')],
  ['envId', field('envId')],
  ['queue', (record) => `${record.domain}/${record.virtualMta}`],
  ['vmtaPool', field('pool')],
  ['rcvSmtpUser', field('user')],
  ['dlvTlsProtocol', field('tlsVersion')],
  ['dlvTlsCipher', field('tlsCipher')],
  ['tenant', field('tenant')],
  ['relayGrant', field('relayGrant')],
  ['queueId', field('queueId')],
  ['listener', field('listener')],
  ['clientAddress', field('clientAddress')],
  ['attempt', field('attempt')],
  ['durationMs', field('durationMs')],
  ['dlvPortFallbacks', (record) => record.portFallbacks?.map((fallback) => `${fallback.host}:${fallback.port} ${fallback.reason}`).join('; ') ?? null],
];

/** Where a record is made: the pool and its tenant. */
export interface AccountingScope {
  pool: string;
  tenant?: string | undefined;
}

type MessageFields = Pick<AccountingRecord, 'timeQueued' | 'queueId' | 'pool' | 'tenant' | 'user' | 'relayGrant' | 'jobId' | 'envId' | 'listener' | 'clientAddress' | 'heloName' | 'sender' | 'recipient' | 'orcpt' | 'domain' | 'size'>;

/** The fields every record of one recipient of a message carries, from its envelope. */
export function messageFields(id: QueueId, envelope: Envelope, recipientIndex: number, scope: AccountingScope): MessageFields {
  const recipient = envelope.recipients[recipientIndex]!;
  return {
    timeQueued: new Date(envelope.receivedAt).toISOString(),
    queueId: id,
    pool: scope.pool,
    tenant: scope.tenant ?? null,
    user: envelope.user ?? null,
    relayGrant: envelope.relayGrant ?? null,
    jobId: envelope.jobId ?? null,
    envId: envelope.dsn?.envid ?? null,
    listener: envelope.listener,
    clientAddress: envelope.clientAddress,
    heloName: envelope.heloName ?? null,
    sender: envelope.mailFrom,
    recipient: recipient.address,
    orcpt: recipient.orcpt ?? null,
    domain: recipient.domain,
    size: envelope.size,
  };
}

/** The `r` records of an accepted message: one per recipient. */
export function receiptRecords(id: QueueId, envelope: Envelope, scope: AccountingScope): AccountingRecord[] {
  return envelope.recipients.map((_, index) => ({
    type: 'r',
    time: new Date(envelope.receivedAt).toISOString(),
    ...messageFields(id, envelope, index, scope),
    virtualMta: envelope.virtualMta,
    sourceAddress: null,
    mxHost: null,
    mxIp: null,
    result: 'received',
    dsnAction: null,
    dsnStatus: '',
    diagnostic: '',
    bounceCategory: null,
    attempt: 0,
    tlsVersion: null,
    tlsCipher: null,
    durationMs: 0,
  }));
}

export const CSV_COLUMN_NAMES: readonly string[] = CSV_COLUMNS.map(([name]) => name);

/** The CSV header line (CRLF-terminated, as every row). */
export const CSV_HEADER = `${CSV_COLUMN_NAMES.join(',')}\r\n`;

export function jsonLine(record: AccountingRecord): string {
  return `${JSON.stringify(record)}\n`;
}

export function csvRow(record: AccountingRecord): string {
  return `${CSV_COLUMNS.map(([, value]) => csvField(value(record))).join(',')}\r\n`;
}

/** RFC 4180: quoted when it holds a comma, a double quote, CR or LF; quotes inside doubled. */
function csvField(value: string | number | null): string {
  if (value === null) return '';
  const text = String(value);
  return /[",\r\n]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
}

/** PowerMTA's default time format, "2026-01-15 14:23:11+0000" (UTC). */
function powerMtaTime(iso: string): string {
  return `${iso.slice(0, 10)} ${iso.slice(11, 19)}+0000`;
}
