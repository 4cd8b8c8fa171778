// One log line per delivery attempt outcome and recipient, saying why: "delivered", "deferred"
// (with the next retry) or "bounced", each with the queue id, VirtualMTA, recipient, the MX
// tried and the remote reply or the local reason (NXDOMAIN, null MX, connection refused, TLS
// failure...) under `reply`, which local mode's formatter shows. Written from the same record as
// the accounting line, through an EventLog: a queue-wide deferral of a large queue costs at most a
// burst of lines per outcome kind and window, then a summary with the count left out.
import type { AccountingRecord } from './accounting.ts';
import { EventLog } from './event-log.ts';
import type { Logger } from './log.ts';

export class DeliveryLog {
  readonly #events: EventLog;

  constructor(logger: Logger) {
    this.#events = new EventLog(logger);
  }

  /** `retryAt` (epoch ms) is when a deferred recipient is tried again. */
  write(record: AccountingRecord, retryAt?: number): void {
    const fields = {
      queueId: record.queueId,
      virtualMta: record.virtualMta,
      domain: record.domain,
      recipient: record.recipient,
      mailFrom: record.sender === '' ? '<>' : record.sender,
      attempt: record.attempt,
      ...(record.mxHost ? { mxHost: record.mxHost, mxIp: record.mxIp } : {}),
      ...(record.tlsVersion ? { tls: record.tlsVersion } : {}),
      dsnStatus: record.dsnStatus,
      ...(record.bounceCategory ? { reason: record.bounceCategory } : {}),
      reply: record.diagnostic,
    };
    if (record.result === 'deferred') {
      this.#events.write('delivery deferred', 'info', { ...fields, ...(retryAt ? { retryAt: new Date(retryAt).toISOString() } : {}) }, 'deferred');
    } else if (record.result === 'bounced') {
      this.#events.write('delivery bounced', 'warn', fields, record.sender === '' ? 'bounced (a DSN: none is sent for it)' : 'bounced');
    } else {
      this.#events.write('delivery delivered', 'info', fields, 'delivered');
    }
  }
}
