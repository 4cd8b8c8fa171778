// The MessageAcceptor the listeners call once DATA is complete: it names the message (queue id
// from the spool), takes the X-Virtual-MTA and job (X-Job) headers out, keeping the job id in
// the envelope for accounting, and prepends the Received header, routes
// the message to a VirtualMTA, DKIM-signs it (the last change the relay makes to the bytes, so
// the spool holds exactly what every delivery attempt sends), and stores it durably; only then
// does the client get its 250.
// Counting received messages and bytes, and logging the acceptance, is the listener's job (it
// answers the client); store latency and fsyncs are the spool's; the queue depth gauge is the delivery scheduler's (it owns the ready and
// scheduled states), which learns of each new message through `onAccepted`.
import type { RuntimeConfig } from '../config/schema.ts';
import { userSenderDomains } from '../inbound/relay-policy.ts';
import type { AcceptedTransaction, MessageAcceptor } from '../inbound/transaction.ts';
import type { Logger } from '../observe/log.ts';
import type { DkimSigner } from '../signing/dkim-signer.ts';
import type { Spool, SpooledMessage } from '../spool/types.ts';
import { editHeaders } from './message-headers.ts';
import { formatReceivedHeader } from './received-header.ts';
import { chooseVirtualMta, PoolSelector } from './virtual-mta-choice.ts';

/** Longest job id kept; longer values are cut. */
const MAX_JOB_ID_LENGTH = 256;

export interface MessageAcceptorOptions {
  /** Where the message is stored (in a session process: the primary's spool, over IPC). */
  spool: Pick<Spool, 'allocateId' | 'store'>;
  /** The config in force now (hot reload swaps it; each message uses the one current at its end of DATA). */
  getConfig: () => RuntimeConfig;
  logger?: Logger;
  /** Called with each stored message, e.g. to hand it to the delivery scheduler. */
  onAccepted?: (message: SpooledMessage) => void;
  /** The signer of the config in force (swapped with it on reload); none = nothing is signed. */
  getSigner?: () => DkimSigner | undefined;
  /** Clock for the Received date and receivedAt (tests). */
  now?: () => Date;
}

export function createMessageAcceptor(options: MessageAcceptorOptions): MessageAcceptor {
  const { spool, getConfig, logger, onAccepted } = options;
  const now = options.now ?? ((): Date => new Date());
  const selector = new PoolSelector();

  return async (transaction: AcceptedTransaction, message: Buffer) => {
    const config = getConfig();
    const queueId = spool.allocateId();
    const date = now();
    const received = formatReceivedHeader({
      heloName: transaction.heloName,
      clientHostname: transaction.clientHostname,
      clientAddress: transaction.clientAddress,
      hostname: config.hostname,
      protocol: transaction.protocol,
      queueId,
      tls: transaction.tls,
      recipients: transaction.recipients.map((recipient) => recipient.address),
      date,
    });
    const edit = editHeaders(message, received, config.delivery.accounting.jobHeader);
    const decision = chooseVirtualMta(
      {
        routing: transaction.policy.routing,
        pool: config.pool,
        virtualMtaHeader: edit.virtualMtaHeaders[0],
        mailFrom: transaction.mailFrom,
        user: transaction.user,
        recipientDomains: transaction.recipients.map((recipient) => recipient.domain),
      },
      selector,
    );
    const allowedFrom = transaction.user !== undefined ? userSenderDomains(transaction.policy, transaction.user) : undefined;
    const signing = await options.getSigner?.()?.sign(message, edit, decision.virtualMta, allowedFrom);
    if (signing?.kind === 'unsigned' && signing.reason === 'signing_failed') logger?.error({ queueId, err: signing.error }, 'DKIM signing failed; the message is sent unsigned');
    const chunks = signing?.kind === 'signed' ? [signing.fields, ...edit.chunks] : edit.chunks;
    // The top field, as for X-Virtual-MTA; bounded so a huge header cannot bloat every record.
    const jobId = edit.jobHeaders[0]?.slice(0, MAX_JOB_ID_LENGTH);
    const stored = await spool.store(
      {
        mailFrom: transaction.mailFrom,
        recipients: transaction.recipients.map(({ address, domain, notify, orcpt }) => ({ address, domain, status: 'pending', attempts: 0, nextAttemptAt: 0, ...(notify ? { notify } : {}), ...(orcpt ? { orcpt } : {}) })),
        ...(transaction.dsn ? { dsn: transaction.dsn } : {}),
        virtualMta: decision.virtualMta,
        receivedAt: date.getTime(),
        listener: transaction.listener,
        clientAddress: transaction.clientAddress,
        ...(transaction.user !== undefined ? { user: transaction.user } : {}),
        ...(transaction.relayGrant ? { relayGrant: transaction.relayGrant } : {}),
        ...(transaction.heloName ? { heloName: transaction.heloName } : {}),
        ...(jobId ? { jobId } : {}),
        eightBitMime: transaction.eightBitMime,
        smtpUtf8: transaction.smtpUtf8,
      },
      chunks,
      queueId,
    );
    const routed = {
      queueId,
      virtualMta: decision.virtualMta,
      routedBy: decision.reason,
      dkim: signing?.kind === 'signed' ? { domain: signing.domain, match: signing.match, signatures: signing.signatures } : (signing?.reason ?? 'off'),
      ...(decision.ruleIndex !== undefined ? { routingRule: decision.ruleIndex } : {}),
      ...(decision.ignoredHeader ? { virtualMtaHeaderIgnored: decision.ignoredHeader, virtualMtaHeader: edit.virtualMtaHeaders[0] } : {}),
    };
    if (decision.ignoredHeader === 'unknown-virtual-mta') logger?.warn(routed, 'X-Virtual-MTA names no VirtualMTA of this pool; routed by the next rule');
    else logger?.debug(routed, 'message routed');
    onAccepted?.(stored);
    return { queueId };
  };
}
